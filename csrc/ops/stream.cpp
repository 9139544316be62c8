// The streaming ops (see torch_lru/stream.h): composite, so they run on every backend and under
// autograd; written once for the Python and the C++ blocks.
#include "torch_lru/stream.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include "torch_lru/lru.h"

namespace torch_lru {
namespace {

// Up to this many rows a block steps in its own CPU loop (see lru_block_step_composite).
constexpr int64_t kFusedRows = 4;

at::Tensor normalise(const at::Tensor& x, const std::string& norm, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                     const std::optional<at::Tensor>& running_var, double eps) {
  const char* op = "torch_lru::lru_block_step";
  const int64_t H = x.size(-1);
  if (norm == "layer") return at::layer_norm(x, {H}, weight, bias, eps);
  if (norm == "rms") return at::rms_norm(x, {H}, weight, eps);
  TORCH_CHECK(norm == "batch", op, ": norm must be one of {batch, layer, rms}, got \"", norm, "\"");
  TORCH_CHECK(running_mean.has_value() && running_var.has_value(), op,
              ": a batch norm steps with its running mean and variance");
  return at::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, /*momentum=*/0.0, eps,
                        /*cudnn_enabled=*/true);
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_composite(
    const at::Tensor& x_t, c10::string_view norm_kind, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  TORCH_CHECK(x_t.defined() && x_t.dim() == 2, "torch_lru::lru_block_step: x_t must have shape (B, H), got ",
              x_t.defined() ? x_t.sizes() : at::IntArrayRef());
  const std::string norm(norm_kind);
  // Without autograd, on the CPU in float32 and for a few rows, the block's own loop
  // (torch_lru::lru_block_step_cpu, csrc/ops/stream_cpu.cpp) does the same math without dispatching
  // a dozen small ops; more rows are faster as ATen's matrix products.
  if (!at::GradMode::is_enabled() && x_t.device().is_cpu() && x_t.scalar_type() == at::kFloat &&
      lam.scalar_type() == at::kComplexFloat && x_t.sym_size(0) <= kFusedRows) {
    static auto fused = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("torch_lru::lru_block_step_cpu", "")
                            .typed<decltype(lru_block_step_composite)>();
    return fused.call(x_t.contiguous(), norm_kind, norm_weight, norm_bias, running_mean, running_var, eps, prenorm,
                      lam.contiguous(), W_in.contiguous(), W_out.contiguous(), D, glu_weight.contiguous(),
                      glu_bias.contiguous(), state);
  }
  auto normed = [&](const at::Tensor& t) {
    return normalise(t, norm, norm_weight, norm_bias, running_mean, running_var, eps);
  };
  auto [y, new_state] = lru_step_packed(prenorm ? normed(x_t) : x_t, lam, W_in, W_out, D, state);
  auto out = x_t + at::glu(at::linear(at::gelu(y), glu_weight, glu_bias), -1);
  return {prenorm ? out : normed(out), new_state};
}

// A stack of LRU blocks, one token: params holds, per block, norm weight, norm bias, running mean,
// running variance (undefined where the norm has none), lam, W_in, W_out, D, GLU weight, GLU bias.
std::tuple<at::Tensor, std::vector<at::Tensor>> lru_blocks_step_composite(const at::Tensor& x_t, at::TensorList params,
                                                                          at::TensorList states, c10::string_view norm,
                                                                          double eps, bool prenorm) {
  constexpr size_t kPer = 10;
  TORCH_CHECK(params.size() == kPer * states.size(), "torch_lru::lru_blocks_step: expected ", kPer,
              " tensors per block for ", states.size(), " blocks, got ", params.size());
  auto opt = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
  at::Tensor z = x_t;
  std::vector<at::Tensor> next;
  next.reserve(states.size());
  for (size_t b = 0; b < states.size(); ++b) {
    const auto* p = params.data() + kPer * b;
    auto [y, s] = lru_block_step_composite(z, norm, p[0], opt(p[1]), opt(p[2]), opt(p[3]), eps, prenorm, p[4], p[5],
                                           p[6], opt(p[7]), p[8], p[9], opt(states[b]));
    z = y;
    next.push_back(s);
  }
  return {z, next};
}

// Token ids in [0, vocab): a loop over a CPU tensor's few values (no dispatch), aminmax elsewhere.
void check_token_ids(const at::Tensor& ids, int64_t vocab) {
  if (ids.numel() == 0) return;
  int64_t low = 0, high = 0;
  if (ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.is_contiguous()) {
    const int64_t* p = ids.data_ptr<int64_t>();
    low = high = p[0];
    for (int64_t i = 1; i < ids.numel(); ++i) low = std::min(low, p[i]), high = std::max(high, p[i]);
  } else {
    const auto [lo, hi] = ids.aminmax();
    low = lo.item<int64_t>(), high = hi.item<int64_t>();
  }
  TORCH_CHECK_VALUE(low >= 0 && high < vocab, "LRUModel.step: x_t holds token ids in [", low, ", ", high,
                    "], outside [0, vocab_size = ", vocab, ")");
}

std::tuple<at::Tensor, std::vector<at::Tensor>> stream_finish_composite(const at::Tensor& z, at::TensorList state,
                                                                        at::TensorList blocks, c10::string_view how,
                                                                        const std::optional<at::Tensor>& mask_t) {
  const char* op = "torch_lru::stream_finish";
  TORCH_CHECK(state.size() == blocks.size() + 2, op, ": the state holds ", state.size(), " tensors, expected ",
              blocks.size() + 2, " (one per block, the pooled features, the count)");
  const std::string pooling(how);
  TORCH_CHECK(pooling == "mean" || pooling == "last" || pooling == "none", op,
              ": pooling must be one of {mean, last, none}, got \"", pooling, "\"");
  auto pooled = state[blocks.size()], count = state[blocks.size() + 1];
  std::vector<at::Tensor> next(blocks.begin(), blocks.end());
  if (!(mask_t.has_value() && mask_t->defined())) {
    pooled = pooling == "mean" ? pooled + z : z;
    count = count + 1;
  } else {
    const auto& valid = *mask_t;
    TORCH_CHECK(valid.scalar_type() == at::kBool && valid.dim() == 1 && valid.size(0) == z.size(0), op,
                ": mask_t must be bool (B,) = (", z.size(0), ",), got ", valid.scalar_type(), " ", valid.sizes());
    if (pooling == "mean") {
      pooled = pooled + z * valid.unsqueeze(-1).to(z.scalar_type());
    } else if (pooling == "last") {
      pooled = at::where(valid.unsqueeze(-1), z, pooled);
    } else {
      pooled = z;
    }
    count = count + valid.to(count.scalar_type());
    const auto keep = valid.logical_not();  // a padded token leaves its row's state as it was
    for (size_t i = 0; i < next.size(); ++i) {
      std::vector<int64_t> shape(next[i].dim(), 1);
      shape[0] = -1;
      next[i] = at::where(keep.view(shape), state[i], next[i]);
    }
  }
  auto features = pooling == "mean" ? pooled / count.clamp_min(1).unsqueeze(-1) : pooled;
  next.push_back(pooled);
  next.push_back(count);
  return {features, next};
}

// lru_model_step_cpu's case: what lru_block_step_cpu takes (no autograd, the CPU, float32 weights and
// complex64 lam, up to kFusedRows rows) for every block, and float32 encoder and decoder.
bool fused_model_step_applies(const at::Tensor& x_t, const at::Tensor& encoder_weight,
                              const c10::List<std::optional<at::Tensor>>& params, const at::Tensor& decoder_weight) {
  if (at::GradMode::is_enabled() || !x_t.device().is_cpu() || x_t.dim() < 1 || x_t.sym_size(0) > kFusedRows ||
      encoder_weight.scalar_type() != at::kFloat || decoder_weight.scalar_type() != at::kFloat ||
      params.size() % 10 != 0) {
    return false;
  }
  for (size_t i = 0; i < params.size(); i += 10) {
    const std::optional<at::Tensor> lam = params.get(i + 4), W_in = params.get(i + 5);
    if (!lam || lam->scalar_type() != at::kComplexFloat || !W_in || W_in->scalar_type() != at::kFloat) return false;
  }
  return true;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step_fused(
    const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
    int64_t vocab_size, const c10::List<std::optional<at::Tensor>>& params, at::TensorList state, c10::string_view norm,
    double eps, bool prenorm, c10::string_view pooling, const at::Tensor& decoder_weight,
    const at::Tensor& decoder_bias, const std::optional<at::Tensor>& mask_t) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::lru_model_step_cpu", "")
                       .typed<decltype(lru_model_step_fused)>();
  return op.call(x_t, encoder_weight, encoder_bias, vocab_size, params, state, norm, eps, prenorm, pooling,
                 decoder_weight, decoder_bias, mask_t);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step_composite(
    const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
    int64_t vocab_size, at::TensorList params, at::TensorList state, c10::string_view norm, double eps, bool prenorm,
    c10::string_view pooling, const at::Tensor& decoder_weight, const at::Tensor& decoder_bias,
    const std::optional<at::Tensor>& mask_t, bool check_ids) {
  TORCH_CHECK(state.size() >= 2, "torch_lru::lru_model_step: the state holds ", state.size(),
              " tensors; make it with init_state");
  at::Tensor z;
  if (vocab_size > 0) {
    if (check_ids) check_token_ids(x_t, vocab_size);
    z = at::embedding(encoder_weight, x_t);
  } else {
    z = at::linear(x_t, encoder_weight, encoder_bias);
  }
  auto [y, blocks] = lru_blocks_step_composite(z, params, state.slice(0, state.size() - 2), norm, eps, prenorm);
  auto [features, next] = stream_finish_composite(y, state, blocks, pooling, mask_t);
  return {at::linear(features, decoder_weight, decoder_bias), next};
}

}  // namespace

std::tuple<at::Tensor, std::vector<at::Tensor>> stream_finish(const at::Tensor& z, const std::vector<at::Tensor>& state,
                                                              const std::vector<at::Tensor>& blocks,
                                                              const std::string& pooling,
                                                              const std::optional<at::Tensor>& mask_t) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::stream_finish", "")
                       .typed<decltype(stream_finish_composite)>();
  return op.call(z, state, blocks, pooling, mask_t);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step(
    const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
    int64_t vocab_size, const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& state,
    const std::string& norm, double eps, bool prenorm, const std::string& pooling, const at::Tensor& decoder_weight,
    const at::Tensor& decoder_bias, const std::optional<at::Tensor>& mask_t, bool check_ids) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torch_lru::lru_model_step", "")
          .typed<std::tuple<at::Tensor, std::vector<at::Tensor>>(
              const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
              const c10::List<std::optional<at::Tensor>>&, at::TensorList, c10::string_view, double, bool,
              c10::string_view, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, bool)>();
  c10::List<std::optional<at::Tensor>> list;
  list.reserve(params.size());
  for (const auto& p : params) list.push_back(p.defined() ? std::optional<at::Tensor>(p) : std::nullopt);
  return op.call(x_t, encoder_weight, encoder_bias, vocab_size, list, state, norm, eps, prenorm, pooling,
                 decoder_weight, decoder_bias, mask_t, check_ids);
}

std::tuple<at::Tensor, at::Tensor> lru_block_step(
    const at::Tensor& x_t, const std::string& norm, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::lru_block_step", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, c10::string_view, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, double, bool,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(x_t, norm, norm_weight, norm_bias, running_mean, running_var, eps, prenorm, lam, W_in, W_out, D,
                 glu_weight, glu_bias, state);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def(
      "lru_block_step(Tensor x_t, str norm, Tensor norm_weight, Tensor? norm_bias, Tensor? running_mean, "
      "Tensor? running_var, float eps, bool prenorm, Tensor lam, Tensor W_in, Tensor W_out, Tensor? D, "
      "Tensor glu_weight, Tensor glu_bias, Tensor? state=None) -> (Tensor, Tensor)");
  m.def(
      "lru_blocks_step(Tensor x_t, Tensor?[] params, Tensor[] states, str norm, float eps, bool prenorm) "
      "-> (Tensor, Tensor[])");
  m.def(
      "stream_finish(Tensor z, Tensor[] state, Tensor[] blocks, str pooling, Tensor? mask_t=None) "
      "-> (Tensor, Tensor[])");
  m.def(
      "lru_model_step(Tensor x_t, Tensor encoder_weight, Tensor? encoder_bias, int vocab_size, Tensor?[] params, "
      "Tensor[] state, str norm, float eps, bool prenorm, str pooling, Tensor decoder_weight, Tensor decoder_bias, "
      "Tensor? mask_t=None, bool check_ids=True) -> (Tensor, Tensor[])");
}

std::vector<at::Tensor> unwrap(const c10::List<std::optional<at::Tensor>>& params) {
  std::vector<at::Tensor> flat;
  flat.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const std::optional<at::Tensor> p = params.get(i);
    flat.push_back(p.has_value() ? *p : at::Tensor());
  }
  return flat;
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeImplicitAutograd, m) {
  m.impl("stream_finish", &stream_finish_composite);
  m.impl("lru_model_step",
         [](const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
            int64_t vocab_size, const c10::List<std::optional<at::Tensor>>& params, at::TensorList state,
            c10::string_view norm, double eps, bool prenorm, c10::string_view pooling, const at::Tensor& decoder_weight,
            const at::Tensor& decoder_bias, const std::optional<at::Tensor>& mask_t, bool check_ids) {
           if (fused_model_step_applies(x_t, encoder_weight, params, decoder_weight)) {
             // The whole step as one CPU loop (torch_lru::lru_model_step_cpu, csrc/ops/stream_cpu.cpp):
             // no dispatch between the encoder, the blocks, the pooling and the decoder.
             return lru_model_step_fused(x_t, encoder_weight, encoder_bias, vocab_size, params, state, norm, eps,
                                         prenorm, pooling, decoder_weight, decoder_bias, mask_t);
           }
           return lru_model_step_composite(x_t, encoder_weight, encoder_bias, vocab_size, unwrap(params), state, norm,
                                           eps, prenorm, pooling, decoder_weight, decoder_bias, mask_t, check_ids);
         });
  m.impl("lru_block_step", &lru_block_step_composite);
  m.impl("lru_blocks_step", [](const at::Tensor& x_t, const c10::List<std::optional<at::Tensor>>& params,
                               at::TensorList states, c10::string_view norm, double eps, bool prenorm) {
    return lru_blocks_step_composite(x_t, unwrap(params), states, norm, eps, prenorm);
  });
}

}  // namespace torch_lru

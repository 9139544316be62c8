// The LRU block's step for the CPU in one pass over its weights (torch_lru::lru_block_step_cpu,
// called by lru_block_step when it applies: float32, no autograd, a few rows), and a whole model
// of such blocks (torch_lru::lru_model_step_cpu, called by lru_model_step). At one token a
// block is three matrix-vector products and a handful of elementwise ops on vectors of 128-512
// numbers; ATen spends as long dispatching those ops as computing them. Here the norm, the three
// products (four rows at a time, so that four independent sums hide the multiply-add latency),
// the complex recurrence, GELU, GLU and the residual run as plain loops on each row.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace torch_lru {
namespace {

// out[r] = dot(W[r, :], v) for W (R, K) row-major. Inlined into a baseline x86-64 and an AVX2 + FMA
// caller, chosen at run time (as the scan's kernels are), so the loops vectorise for each.
__attribute__((always_inline)) inline void gemv_body(const float* W, const float* v, float* out, int64_t R, int64_t K) {
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const float *w0 = W + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < K; ++k) {
      const float x = v[k];
      a0 += w0[k] * x;
      a1 += w1[k] * x;
      a2 += w2[k] * x;
      a3 += w3[k] * x;
    }
    out[r] = a0, out[r + 1] = a1, out[r + 2] = a2, out[r + 3] = a3;
  }
  for (; r < R; ++r) {
    const float* w = W + r * K;
    float a = 0;
#pragma omp simd reduction(+ : a)
    for (int64_t k = 0; k < K; ++k) a += w[k] * v[k];
    out[r] = a;
  }
}

void gemv_baseline(const float* W, const float* v, float* out, int64_t R, int64_t K) { gemv_body(W, v, out, R, K); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,fma"))) void gemv_avx2(const float* W, const float* v, float* out, int64_t R, int64_t K) {
  gemv_body(W, v, out, R, K);
}
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
const bool kHasAvx2 = false;
void gemv_avx2(const float* W, const float* v, float* out, int64_t R, int64_t K) { gemv_body(W, v, out, R, K); }
#endif

void gemv(const float* W, const float* v, float* out, int64_t R, int64_t K, const float* bias) {
  if (kHasAvx2) {
    gemv_avx2(W, v, out, R, K);
  } else {
    gemv_baseline(W, v, out, R, K);
  }
  if (bias != nullptr) {
    for (int64_t i = 0; i < R; ++i) out[i] += bias[i];
  }
}

enum class Norm { kLayer, kRms, kBatch };

struct Weights {
  Norm norm;
  const float *norm_weight, *norm_bias, *mean, *var;
  float eps;
  bool prenorm;
  const float *lam, *W_in, *W_out, *D, *glu_weight, *glu_bias;
  int64_t H, N;
};

void normalise(const Weights& w, const float* x, float* out) {
  const int64_t H = w.H;
  if (w.norm == Norm::kBatch) {
    for (int64_t i = 0; i < H; ++i) {
      out[i] = (x[i] - w.mean[i]) / std::sqrt(w.var[i] + w.eps) * w.norm_weight[i] + w.norm_bias[i];
    }
    return;
  }
  double mean = 0, sq = 0;
  if (w.norm == Norm::kLayer) {
    for (int64_t i = 0; i < H; ++i) mean += x[i];
    mean /= H;
  }
  for (int64_t i = 0; i < H; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float scale = static_cast<float>(1.0 / std::sqrt(sq / H + w.eps));
  for (int64_t i = 0; i < H; ++i) {
    const float n = (x[i] - static_cast<float>(mean)) * scale * w.norm_weight[i];
    out[i] = w.norm == Norm::kLayer ? n + w.norm_bias[i] : n;
  }
}

// One row: x (H) -> out (H); state (2N) interleaved complex, updated in place.
void block_row(const Weights& w, const float* x, float* out, float* state, float* scratch) {
  const int64_t H = w.H, N = w.N;
  float* z = scratch;     // the LRU's input (H)
  float* bu = z + H;      // B u, interleaved (2N)
  float* y = bu + 2 * N;  // the LRU's output (H)
  float* v = y + H;       // the GLU's product (2H)
  if (w.prenorm) {
    normalise(w, x, z);
  } else {
    std::copy(x, x + H, z);
  }
  gemv(w.W_in, z, bu, 2 * N, H, nullptr);
  for (int64_t n = 0; n < N; ++n) {
    const float lr = w.lam[2 * n], li = w.lam[2 * n + 1], sr = state[2 * n], si = state[2 * n + 1];
    state[2 * n] = lr * sr - li * si + bu[2 * n];
    state[2 * n + 1] = lr * si + li * sr + bu[2 * n + 1];
  }
  gemv(w.W_out, state, y, H, 2 * N, nullptr);
  for (int64_t i = 0; i < H; ++i) {
    const float t = w.D != nullptr ? y[i] + z[i] * w.D[i] : y[i];
    y[i] = 0.5f * t * (1.0f + std::erf(t * static_cast<float>(M_SQRT1_2)));  // exact GELU
  }
  gemv(w.glu_weight, y, v, 2 * H, H, w.glu_bias);
  for (int64_t i = 0; i < H; ++i) out[i] = x[i] + v[i] / (1.0f + std::exp(-v[H + i]));
  if (!w.prenorm) {
    std::copy(out, out + H, z);
    normalise(w, z, out);
  }
}

bool is_f32(const at::Tensor& t) { return t.scalar_type() == at::kFloat && t.is_contiguous(); }
const float* f32_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// One block's weights for block_row, checked: p holds norm weight, norm bias, running mean, running
// variance, lam, W_in, W_out, D, GLU weight, GLU bias (undefined where absent), contiguous.
Weights block_weights(const at::Tensor* p, const std::string& norm, double eps, bool prenorm, int64_t H,
                      const char* op) {
  const at::Tensor &lam = p[4], &W_in = p[5], &W_out = p[6], &glu_weight = p[8], &glu_bias = p[9];
  const int64_t N = lam.numel();
  auto optional_ok = [&](const at::Tensor& t) { return !t.defined() || (is_f32(t) && t.numel() == H); };
  TORCH_CHECK(is_f32(p[0]) && p[0].numel() == H && optional_ok(p[1]) && optional_ok(p[2]) && optional_ok(p[3]) &&
                  optional_ok(p[7]) && is_f32(W_in) && is_f32(W_out) && is_f32(glu_weight) && is_f32(glu_bias) &&
                  lam.scalar_type() == at::kComplexFloat && lam.is_contiguous(),
              op, ": takes contiguous float32 tensors of H = ", H, " numbers for the norm and D (and complex64 lam)");
  TORCH_CHECK(W_in.sizes() == at::IntArrayRef({2 * N, H}) && W_out.sizes() == at::IntArrayRef({H, 2 * N}) &&
                  glu_weight.sizes() == at::IntArrayRef({2 * H, H}) && glu_bias.numel() == 2 * H,
              op, ": weights of the wrong shapes for H = ", H, ", N = ", N, ": W_in ", W_in.sizes(), ", W_out ",
              W_out.sizes(), ", GLU weight ", glu_weight.sizes());
  Weights w{};
  w.norm = norm == "layer" ? Norm::kLayer : norm == "rms" ? Norm::kRms : Norm::kBatch;
  TORCH_CHECK(norm == "layer" || norm == "rms" || (norm == "batch" && p[2].defined() && p[3].defined()), op,
              ": unsupported norm \"", norm, "\" (a batch norm steps with its running mean and variance)");
  w.norm_weight = p[0].data_ptr<float>();
  w.norm_bias = f32_or_null(p[1]);
  w.mean = f32_or_null(p[2]);
  w.var = f32_or_null(p[3]);
  w.eps = static_cast<float>(eps);
  w.prenorm = prenorm;
  w.lam = reinterpret_cast<const float*>(lam.data_ptr<c10::complex<float>>());
  w.W_in = W_in.data_ptr<float>();
  w.W_out = W_out.data_ptr<float>();
  w.D = f32_or_null(p[7]);
  w.glu_weight = glu_weight.data_ptr<float>();
  w.glu_bias = glu_bias.data_ptr<float>();
  w.H = H, w.N = N;
  return w;
}

at::Tensor defined_or_empty(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_cpu(
    const at::Tensor& x_t, c10::string_view norm, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::lru_block_step_cpu";
  TORCH_CHECK(is_f32(x_t) && x_t.dim() == 2, op, ": x_t must be contiguous float32 (B, H), got ", x_t.scalar_type(),
              " ", x_t.sizes());
  const int64_t B = x_t.size(0), H = x_t.size(1), N = lam.numel();
  const at::Tensor p[10] = {norm_weight.contiguous(),
                            defined_or_empty(norm_bias),
                            defined_or_empty(running_mean),
                            defined_or_empty(running_var),
                            lam.contiguous(),
                            W_in.contiguous(),
                            W_out.contiguous(),
                            defined_or_empty(D),
                            glu_weight.contiguous(),
                            glu_bias.contiguous()};
  const Weights w = block_weights(p, std::string(norm), eps, prenorm, H, op);
  auto out = at::empty_like(x_t);
  auto new_state =
      state.has_value() && state->defined() ? state->contiguous().clone() : at::zeros({B, N}, lam.options());
  TORCH_CHECK(new_state.sizes() == at::IntArrayRef({B, N}) && new_state.scalar_type() == at::kComplexFloat, op,
              ": state must be complex64 (B, N) = (", B, ", ", N, "), got ", new_state.scalar_type(), " ",
              new_state.sizes());
  std::vector<float> scratch(static_cast<size_t>(4 * H + 2 * N));
  auto* s = reinterpret_cast<float*>(new_state.data_ptr<c10::complex<float>>());
  for (int64_t b = 0; b < B; ++b) {
    block_row(w, x_t.data_ptr<float>() + b * H, out.data_ptr<float>() + b * H, s + b * 2 * N, scratch.data());
  }
  return {out, new_state};
}

// The whole model's step (torch_lru::lru_model_step's CPU loop, same arguments but check_ids: the
// ids are always checked, it costs a loop over B numbers): the encoder row, every block's
// block_row, the pooling and the decoder, per row, with no ATen op between them; one allocation per
// output tensor. A padded row (mask_t false) keeps its states and pooled features, as
// stream_finish says, but still runs the blocks (on a copy of its state) for pooling "none".
std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step_cpu(
    const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
    int64_t vocab_size, const c10::List<std::optional<at::Tensor>>& params, at::TensorList state,
    c10::string_view norm_kind, double eps, bool prenorm, c10::string_view pooling_kind,
    const at::Tensor& decoder_weight, const at::Tensor& decoder_bias, const std::optional<at::Tensor>& mask_t) {
  const char* op = "torch_lru::lru_model_step_cpu";
  constexpr size_t kPer = 10;
  const std::string norm(norm_kind), pooling(pooling_kind);
  const bool mean = pooling == "mean", last = pooling == "last";
  TORCH_CHECK(state.size() >= 2 && params.size() == kPer * (state.size() - 2), op, ": expected ", kPer,
              " tensors per block and a state of one tensor per block plus two, got ", params.size(), " and ",
              state.size());
  TORCH_CHECK(pooling == "mean" || pooling == "last" || pooling == "none", op,
              ": pooling must be one of {mean, last, none}, got \"", pooling, "\"");
  TORCH_CHECK(is_f32(decoder_weight) && decoder_weight.dim() == 2 && is_f32(decoder_bias) &&
                  decoder_bias.numel() == decoder_weight.size(0),
              op, ": the decoder must be contiguous float32 (d_output, H) and (d_output,), got ",
              decoder_weight.scalar_type(), " ", decoder_weight.sizes(), " and ", decoder_bias.sizes());
  const size_t n_blocks = state.size() - 2;
  const int64_t B = x_t.size(0), H = decoder_weight.size(1), d_output = decoder_weight.size(0);

  // The encoder: token ids (B,) into an embedding (vocab, H), or features (B, d_input) through a linear map.
  const at::Tensor enc = encoder_weight.contiguous();
  const at::Tensor x = x_t.contiguous();
  TORCH_CHECK(enc.scalar_type() == at::kFloat && enc.dim() == 2, op, ": the encoder weight must be float32 2-D, got ",
              enc.scalar_type(), " ", enc.sizes());
  const at::Tensor enc_bias = defined_or_empty(encoder_bias);
  if (vocab_size > 0) {
    TORCH_CHECK(x.scalar_type() == at::kLong && x.dim() == 1 && enc.sizes() == at::IntArrayRef({vocab_size, H}), op,
                ": token ids (B,) int64 into an embedding (", vocab_size, ", ", H, "), got ", x.scalar_type(), " ",
                x.sizes(), " and ", enc.sizes());
    const int64_t* ids = x.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK_VALUE(ids[b] >= 0 && ids[b] < vocab_size, "LRUModel.step: x_t holds token id ", ids[b], " (row ", b,
                        "), outside [0, vocab_size = ", vocab_size, ")");
    }
  } else {
    TORCH_CHECK(is_f32(x) && x.dim() == 2 && enc.size(0) == H && enc.size(1) == x.size(1) &&
                    (!enc_bias.defined() || (is_f32(enc_bias) && enc_bias.numel() == H)),
                op, ": features (B, d_input) float32 through a (", H, ", d_input) map, got ", x.scalar_type(), " ",
                x.sizes(), " and ", enc.sizes());
  }
  const bool* valid = nullptr;
  at::Tensor mask;
  if (mask_t.has_value() && mask_t->defined()) {
    mask = mask_t->contiguous();
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 1 && mask.size(0) == B, op,
                ": mask_t must be bool (B,) = (", B, ",), got ", mask.scalar_type(), " ", mask.sizes());
    valid = mask.data_ptr<bool>();
  }

  // Every block's weights (contiguous copies kept alive here where a tensor was not), its state.
  std::vector<at::Tensor> kept;
  kept.reserve(kPer * n_blocks);
  for (size_t i = 0; i < params.size(); ++i) {
    const std::optional<at::Tensor> t = params.get(i);
    kept.push_back(t.has_value() && t->defined() ? t->contiguous() : at::Tensor());
  }
  std::vector<Weights> weights;
  std::vector<at::Tensor> next;
  next.reserve(state.size());
  int64_t max_n = 0;
  for (size_t k = 0; k < n_blocks; ++k) {
    weights.push_back(block_weights(kept.data() + kPer * k, norm, eps, prenorm, H, op));
    const int64_t N = weights.back().N;
    max_n = std::max(max_n, N);
    TORCH_CHECK(state[k].scalar_type() == at::kComplexFloat && state[k].sizes() == at::IntArrayRef({B, N}), op,
                ": block ", k, "'s state must be complex64 (B, N) = (", B, ", ", N, "), got ", state[k].scalar_type(),
                " ", state[k].sizes());
    next.push_back(state[k].contiguous().clone());
  }
  const at::Tensor pooled = state[n_blocks].contiguous(), count = state[n_blocks + 1].contiguous();
  TORCH_CHECK(is_f32(pooled) && pooled.sizes() == at::IntArrayRef({B, H}) && is_f32(count) && count.dim() == 1 &&
                  count.size(0) == B,
              op, ": the pooled features must be float32 (B, H) = (", B, ", ", H, ") and the count (B,), got ",
              pooled.sizes(), " and ", count.sizes());
  auto new_pooled = at::empty_like(pooled), new_count = at::empty_like(count);
  auto logits = at::empty({B, d_output}, decoder_weight.options());

  std::vector<float> scratch(static_cast<size_t>(4 * H + 2 * max_n) + 2 * H + 2 * max_n + H);
  float *z = scratch.data() + 4 * H + 2 * max_n, *z_next = z + H, *spare = z_next + H, *features = spare + 2 * max_n;
  for (int64_t b = 0; b < B; ++b) {
    const bool keep = valid != nullptr && !valid[b];
    if (vocab_size > 0) {
      const float* row = enc.data_ptr<float>() + x.data_ptr<int64_t>()[b] * H;
      std::copy(row, row + H, z);
    } else {
      gemv(enc.data_ptr<float>(), x.data_ptr<float>() + b * x.size(1), z, H, x.size(1), f32_or_null(enc_bias));
    }
    for (size_t k = 0; k < n_blocks; ++k) {
      const int64_t N = weights[k].N;
      float* s = reinterpret_cast<float*>(next[k].data_ptr<c10::complex<float>>()) + b * 2 * N;
      if (keep) {  // advance a copy: the row's state stays as it was
        std::copy(s, s + 2 * N, spare);
        s = spare;
      }
      block_row(weights[k], z, z_next, s, scratch.data());
      std::swap(z, z_next);
    }
    // The pooling, as stream_finish has it (a padded row adds z * 0 to the mean).
    const float* old = pooled.data_ptr<float>() + b * H;
    float* pool = new_pooled.data_ptr<float>() + b * H;
    const float v = keep ? 0.0f : 1.0f;
    for (int64_t i = 0; i < H; ++i) {
      pool[i] = mean ? old[i] + z[i] * v : last && keep ? old[i] : z[i];
    }
    const float c = count.data_ptr<float>()[b] + v;
    new_count.data_ptr<float>()[b] = c;
    const float divisor = std::max(c, 1.0f);
    for (int64_t i = 0; i < H; ++i) features[i] = mean ? pool[i] / divisor : pool[i];
    gemv(decoder_weight.data_ptr<float>(), features, logits.data_ptr<float>() + b * d_output, d_output, H,
         decoder_bias.data_ptr<float>());
  }
  next.push_back(new_pooled);
  next.push_back(new_count);
  return {logits, next};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step_cpu_meta(
    const at::Tensor& x_t, const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
    const c10::List<std::optional<at::Tensor>>&, at::TensorList state, c10::string_view, double, bool, c10::string_view,
    const at::Tensor& decoder_weight, const at::Tensor&, const std::optional<at::Tensor>&) {
  std::vector<at::Tensor> next;
  for (const auto& s : state) next.push_back(at::empty_like(s));
  return {at::empty_symint({x_t.sym_size(0), decoder_weight.sym_size(0)}, decoder_weight.options()), next};
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_cpu_meta(const at::Tensor& x_t, c10::string_view, const at::Tensor&,
                                                           const std::optional<at::Tensor>&,
                                                           const std::optional<at::Tensor>&,
                                                           const std::optional<at::Tensor>&, double, bool,
                                                           const at::Tensor& lam, const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&, const at::Tensor&,
                                                           const at::Tensor&, const std::optional<at::Tensor>&) {
  return {at::empty_like(x_t), at::empty_symint({x_t.sym_size(0), lam.sym_size(0)}, lam.options())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def(
      "lru_block_step_cpu(Tensor x_t, str norm, Tensor norm_weight, Tensor? norm_bias, Tensor? running_mean, "
      "Tensor? running_var, float eps, bool prenorm, Tensor lam, Tensor W_in, Tensor W_out, Tensor? D, "
      "Tensor glu_weight, Tensor glu_bias, Tensor? state=None) -> (Tensor, Tensor)");
  m.def(
      "lru_model_step_cpu(Tensor x_t, Tensor encoder_weight, Tensor? encoder_bias, int vocab_size, "
      "Tensor?[] params, Tensor[] state, str norm, float eps, bool prenorm, str pooling, Tensor decoder_weight, "
      "Tensor decoder_bias, Tensor? mask_t=None) -> (Tensor, Tensor[])");
}

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("lru_block_step_cpu", &lru_block_step_cpu);
  m.impl("lru_model_step_cpu", &lru_model_step_cpu);
}
TORCH_LIBRARY_IMPL(torch_lru, Meta, m) {
  m.impl("lru_block_step_cpu", &lru_block_step_cpu_meta);
  m.impl("lru_model_step_cpu", &lru_model_step_cpu_meta);
}

}  // namespace torch_lru

// The RG-LRU layer's math and initialisation as ops (see torch_lru/rglru.h). Composite, like the
// LRU's (lru.cpp): written with ATen ops, the gates and convolution-taps ops (rglru_gates.cpp,
// rglru_conv.cpp: one fused pass each on the CPU) and the scan op (here with a per-step real
// coefficient), so autograd, autocast, torch.compile and every backend come from the ops they call.
#include "torch_lru/rglru.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "torch_lru/scan.h"

namespace torch_lru {
namespace {

constexpr int64_t kK = kRGLRUConvWidth;

const std::vector<std::string> kSharedNames{"W_in_x", "b_in_x", "W_in_gate", "b_in_gate", "W_out", "b_out"};
const std::vector<std::string> kDirectionNames{"conv_weight", "conv_bias", "Lambda", "W_a", "b_a", "W_x", "b_x"};

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

void expect(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
            c10::ArrayRef<c10::SymInt> shape) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a defined tensor");
  TORCH_CHECK(t.sym_sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sym_sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have Lambda's dtype ", ref.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on Lambda's device ", ref.device(), ", got ",
              t.device());
}

// The parameters of one RG-LRU (gates and Lambda); returns its width N.
c10::SymInt check_recurrence_params(const char* op, const at::Tensor& Lambda, const at::Tensor& W_a,
                                    const at::Tensor& b_a, const at::Tensor& W_x, const at::Tensor& b_x) {
  TORCH_CHECK(Lambda.defined() && Lambda.dim() == 1, op, ": Lambda must have shape (N,), got ",
              Lambda.defined() ? Lambda.sym_sizes() : c10::SymIntArrayRef());
  TORCH_CHECK(Lambda.scalar_type() == at::kFloat || Lambda.scalar_type() == at::kDouble, op,
              ": the parameters must be float32 or float64, got Lambda ", Lambda.scalar_type());
  const c10::SymInt N = Lambda.sym_size(0);
  TORCH_CHECK(W_a.defined() && W_a.dim() == 3, op, ": W_a must have shape (n_blocks, N/n_blocks, N/n_blocks), got ",
              W_a.defined() ? W_a.sym_sizes() : c10::SymIntArrayRef());
  const c10::SymInt blocks = W_a.sym_size(0), width = W_a.sym_size(1);
  TORCH_CHECK(blocks * width == N, op, ": W_a's ", blocks, " blocks of width ", width, " must cover Lambda's ", N,
              " channels");
  const std::vector<c10::SymInt> n{N}, w{blocks, width, width};
  expect(op, "W_a", W_a, Lambda, w);
  expect(op, "W_x", W_x, Lambda, w);
  expect(op, "b_a", b_a, Lambda, n);
  expect(op, "b_x", b_x, Lambda, n);
  return N;
}

void check_mask(const char* op, const std::optional<at::Tensor>& mask, const at::Tensor& x) {
  if (!has(mask)) return;
  TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": mask must be bool (true at valid positions), got ",
              mask->scalar_type());
  TORCH_CHECK(mask->device() == x.device(), op, ": mask is on ", mask->device(), " but the input is on ", x.device());
  TORCH_CHECK(mask->dim() == 2 && mask->sym_size(0) == x.sym_size(0) && mask->sym_size(1) == x.sym_size(1), op,
              ": mask must have shape (B, L) = (", x.sym_size(0), ", ", x.sym_size(1), "), got ", mask->sym_sizes());
}

// x (..., N) against the parameters; under autocast x may arrive in a lower precision and is cast.
at::Tensor check_sequence(const char* op, const at::Tensor& x, const at::Tensor& ref, const c10::SymInt& N,
                          int64_t rank, const char* shape_name) {
  TORCH_CHECK(x.defined(), op, ": the input must be a defined tensor");
  TORCH_CHECK(x.dim() == rank && x.sym_size(-1) == N, op, ": the input must have shape ", shape_name, " with N = ", N,
              ", got ", x.sym_sizes());
  TORCH_CHECK(x.device() == ref.device(), op, ": the input is on ", x.device(), " but the parameters are on ",
              ref.device());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": the input must be real floating point, got ",
              x.scalar_type());
  if (x.scalar_type() == ref.scalar_type()) return x;
  TORCH_CHECK(at::autocast::is_autocast_enabled(x.device().type()), op, ": the input's dtype ", x.scalar_type(),
              " differs from the parameters' ", ref.scalar_type(), " (cast one, or run under torch.autocast)");
  return x.to(ref.scalar_type());
}

// x @ blockdiag(W) + b over the last dimension: W (n_blocks, w, w) maps each width-w block of x.
at::Tensor block_linear(const at::Tensor& x, const at::Tensor& W, const at::Tensor& b) {
  if (W.sym_size(0) == 1) return at::addmm(b, x.flatten(0, -2), W.select(0, 0)).view_symint(x.sym_sizes());
  auto y = at::einsum("...hi,hij->...hj", {x.unflatten_symint(-1, {W.sym_size(0), W.sym_size(1)}), W});
  return y.flatten(-2) + b;
}

// (a_t, sqrt(1 - a_t^2) * i_t * x_t) for x (..., N): the recurrence's coefficient and input, from
// the gates' projections of x (torch_lru::rglru_gates, rglru_gates.cpp).
std::pair<at::Tensor, at::Tensor> gated(const at::Tensor& x, const at::Tensor& Lambda, const at::Tensor& W_a,
                                        const at::Tensor& b_a, const at::Tensor& W_x, const at::Tensor& b_x, double c,
                                        const std::optional<at::Tensor>& mask = std::nullopt) {
  auto [a, input] = rglru_gates(x, block_linear(x, W_a, b_a), block_linear(x, W_x, b_x), Lambda, c, mask);
  return {a, input};
}

std::tuple<at::Tensor, at::Tensor> rglru_recurrence_composite(const at::Tensor& x_in, const at::Tensor& Lambda,
                                                              const at::Tensor& W_a, const at::Tensor& b_a,
                                                              const at::Tensor& W_x, const at::Tensor& b_x, double c,
                                                              const std::optional<at::Tensor>& state,
                                                              const std::optional<at::Tensor>& mask, bool reverse) {
  const char* op = "torch_lru::rglru_recurrence";
  const c10::SymInt N = check_recurrence_params(op, Lambda, W_a, b_a, W_x, b_x);
  TORCH_CHECK(c > 0, op, ": c must be positive, got ", c);
  const auto x = check_sequence(op, x_in, Lambda, N, 3, "(B, L, N)");
  check_mask(op, mask, x);
  const c10::SymInt batch = x.sym_size(0), L = x.sym_size(1);
  if (has(state)) {
    TORCH_CHECK(state->scalar_type() == Lambda.scalar_type() && state->device() == Lambda.device(), op,
                ": state must be ", Lambda.scalar_type(), " on ", Lambda.device(), ", got ", state->scalar_type(),
                " on ", state->device());
    TORCH_CHECK(state->dim() == 2 && state->sym_size(0) == batch && state->sym_size(1) == N, op,
                ": state must have shape (B, N) = (", batch, ", ", N, "), got ", state->sym_sizes());
  }
  // A padded step is the identity (a = 1, no input): h passes through it unchanged.
  auto [a, input] = gated(x, Lambda, W_a, b_a, W_x, b_x, c, mask);
  auto h = scan(a, input, state, reverse);
  at::Tensor final_state;
  if (L == 0) {
    final_state = has(state) ? state->clone() : at::zeros_symint({batch, N}, x.options());
  } else {
    final_state = h.select_symint(1, reverse ? c10::SymInt(0) : L - 1).clone();
  }
  return {h, final_state};
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_composite(const at::Tensor& x_in, const at::Tensor& weight,
                                                           const at::Tensor& bias,
                                                           const std::optional<at::Tensor>& state,
                                                           const std::optional<at::Tensor>& mask, bool reverse) {
  const char* op = "torch_lru::causal_conv1d";
  TORCH_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) >= 1, op,
              ": weight must have shape (K, N) with K >= 1, got ",
              weight.defined() ? weight.sym_sizes() : c10::SymIntArrayRef());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble, op,
              ": weight must be float32 or float64, got ", weight.scalar_type());
  const int64_t K = weight.size(0);
  const c10::SymInt N = weight.sym_size(1);
  TORCH_CHECK(bias.defined() && bias.sym_sizes() == c10::SymIntArrayRef{N} &&
                  bias.scalar_type() == weight.scalar_type() && bias.device() == weight.device(),
              op, ": bias must be ", weight.scalar_type(), " (N,) = (", N, ",) on ", weight.device(), ", got ",
              bias.defined() ? bias.sym_sizes() : c10::SymIntArrayRef(), " ",
              bias.defined() ? bias.scalar_type() : at::kFloat);
  const auto x0 = check_sequence(op, x_in, weight, N, 3, "(B, L, N)");
  check_mask(op, mask, x0);
  const c10::SymInt batch = x0.sym_size(0), L = x0.sym_size(1);
  at::Tensor before;  // the K-1 inputs preceding the first step in the direction of travel, oldest first
  if (has(state)) {
    TORCH_CHECK(state->scalar_type() == weight.scalar_type() && state->device() == weight.device(), op,
                ": state must be ", weight.scalar_type(), " on ", weight.device(), ", got ", state->scalar_type(),
                " on ", state->device());
    TORCH_CHECK(
        state->dim() == 3 && state->sym_size(0) == batch && state->sym_size(1) == K - 1 && state->sym_size(2) == N, op,
        ": state must have shape (B, K-1, N) = (", batch, ", ", K - 1, ", ", N, "), got ", state->sym_sizes());
    before = *state;
  } else {
    before = at::zeros_symint({batch, K - 1, N}, x0.options());
  }
  const auto x = has(mask) ? x0.masked_fill(mask->logical_not().unsqueeze(-1), 0) : x0;

  // Padded with the K-1 earlier inputs on the side the window reaches: y_t reads padded[t + shift(j)].
  const auto padded = reverse ? at::cat({x, before.flip(1)}, 1) : at::cat({before, x}, 1);
  auto y = conv_taps(padded, weight, bias, reverse);

  // The K-1 inputs ending at the last valid position in the direction of travel, oldest first.
  at::Tensor final_state;
  const auto steps = at::arange(K - 1, x.options().dtype(at::kLong));
  if (!has(mask)) {
    final_state = reverse ? padded.narrow(1, 0, K - 1).flip(1) : padded.narrow_symint(1, L, K - 1).contiguous();
  } else {
    auto positions = at::ones_like(*mask, at::kLong).cumsum(1) - 1;
    at::Tensor index;
    if (reverse) {
      auto first = at::where(*mask, positions, L).amin(1, /*keepdim=*/true);  // L where a row has none
      index = first + (K - 2) - steps;
    } else {
      auto last = at::where(*mask, positions, -1).amax(1, /*keepdim=*/true);  // -1 where a row has none
      index = last + 1 + steps;
    }
    final_state = padded.gather(1, index.unsqueeze(-1).expand_symint({batch, K - 1, N}));
  }
  return {y, final_state};
}

struct Layer {
  at::Tensor W_in_x, b_in_x, W_in_gate, b_in_gate, W_out, b_out;
  struct Direction {
    at::Tensor conv_weight, conv_bias, Lambda, W_a, b_a, W_x, b_x;
  } forward, reverse;
  c10::SymInt H, N;
};

Layer unpack(const char* op, const std::vector<at::Tensor>& p, bool bidirectional) {
  const size_t expected = kSharedNames.size() + kDirectionNames.size() * (bidirectional ? 2 : 1);
  TORCH_CHECK(p.size() == expected, op, ": expected the ", expected, " parameters of rglru_parameter_names(",
              bidirectional ? "true" : "false", "), got ", p.size());
  auto direction = [&](size_t k) {
    return Layer::Direction{p[k], p[k + 1], p[k + 2], p[k + 3], p[k + 4], p[k + 5], p[k + 6]};
  };
  Layer l{p[0], p[1], p[2], p[3], p[4], p[5], direction(6), {}, {}, {}};
  if (bidirectional) l.reverse = direction(6 + kDirectionNames.size());
  const auto& ref = l.forward.Lambda;
  l.N = check_recurrence_params(op, ref, l.forward.W_a, l.forward.b_a, l.forward.W_x, l.forward.b_x);
  TORCH_CHECK(l.W_in_x.defined() && l.W_in_x.dim() == 2, op, ": W_in_x must have shape (N, H), got ",
              l.W_in_x.defined() ? l.W_in_x.sym_sizes() : c10::SymIntArrayRef());
  l.H = l.W_in_x.sym_size(1);
  const std::vector<c10::SymInt> nh{l.N, l.H}, hn{l.H, l.N}, n{l.N}, h{l.H}, kn{kK, l.N};
  expect(op, "W_in_x", l.W_in_x, ref, nh);
  expect(op, "b_in_x", l.b_in_x, ref, n);
  expect(op, "W_in_gate", l.W_in_gate, ref, nh);
  expect(op, "b_in_gate", l.b_in_gate, ref, n);
  expect(op, "W_out", l.W_out, ref, hn);
  expect(op, "b_out", l.b_out, ref, h);
  for (const auto* d : {&l.forward, bidirectional ? &l.reverse : nullptr}) {
    if (d == nullptr) continue;
    expect(op, "conv_weight", d->conv_weight, ref, kn);
    expect(op, "conv_bias", d->conv_bias, ref, n);
    if (d == &l.reverse) {
      expect(op, "Lambda_rev", d->Lambda, ref, n);
      check_recurrence_params(op, d->Lambda, d->W_a, d->b_a, d->W_x, d->b_x);
    }
  }
  return l;
}

void check_layer_state(const char* op, const at::Tensor& state, const at::Tensor& ref, const c10::SymInt& batch,
                       const c10::SymInt& N) {
  TORCH_CHECK(state.scalar_type() == ref.scalar_type() && state.device() == ref.device(), op, ": state must be ",
              ref.scalar_type(), " on ", ref.device(), ", got ", state.scalar_type(), " on ", state.device());
  TORCH_CHECK(state.dim() == 3 && state.sym_size(0) == batch && state.sym_size(1) == kK && state.sym_size(2) == N, op,
              ": state must have shape (B, ", kK, ", N) = (", batch, ", ", kK, ", ", N,
              ") (the convolution's last 3 inputs, then h), got ", state.sym_sizes());
}

// W u + b in the parameters' dtype (under autocast the product runs in the autocast dtype).
at::Tensor project(const at::Tensor& u, const at::Tensor& W, const at::Tensor& b) {
  auto y = at::linear(u, W, b);
  return y.scalar_type() == W.scalar_type() ? y : y.to(W.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> rglru_forward_composite(const at::Tensor& u, const std::vector<at::Tensor>& params,
                                                           bool bidirectional, double c,
                                                           const std::optional<at::Tensor>& state,
                                                           const std::optional<at::Tensor>& mask) {
  const char* op = "torch_lru::rglru";
  const Layer l = unpack(op, params, bidirectional);
  const auto& ref = l.forward.Lambda;
  check_sequence(op, u, ref, l.H, 3, "(B, L, H)");
  check_mask(op, mask, u);
  std::optional<at::Tensor> conv_state, h0;
  if (has(state)) {
    TORCH_CHECK(!bidirectional, op, ": a bidirectional layer sees the whole sequence; it takes no state");
    check_layer_state(op, *state, ref, u.sym_size(0), l.N);
    conv_state = state->narrow(1, 0, kK - 1);
    h0 = state->select(1, kK - 1);
  }
  const auto x = project(u, l.W_in_x, l.b_in_x);
  const auto& f = l.forward;
  auto [xc, conv_final] = causal_conv1d_composite(x, f.conv_weight, f.conv_bias, conv_state, mask, false);
  auto [h, h_final] = rglru_recurrence_composite(xc, f.Lambda, f.W_a, f.b_a, f.W_x, f.b_x, c, h0, mask, false);
  if (bidirectional) {
    const auto& r = l.reverse;
    auto xr = std::get<0>(causal_conv1d_composite(x, r.conv_weight, r.conv_bias, std::nullopt, mask, true));
    h = h +
        std::get<0>(rglru_recurrence_composite(xr, r.Lambda, r.W_a, r.b_a, r.W_x, r.b_x, c, std::nullopt, mask, true));
  }
  auto gate = at::gelu(at::linear(u, l.W_in_gate, l.b_in_gate));
  auto y = at::linear(gate * h, l.W_out, l.b_out);
  return {y, at::cat({conv_final, h_final.unsqueeze(1)}, 1)};
}

std::tuple<at::Tensor, at::Tensor> rglru_step_composite(const at::Tensor& u_t, const std::vector<at::Tensor>& params,
                                                        double c, const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::rglru_step";
  const Layer l = unpack(op, params, false);
  const auto& ref = l.forward.Lambda;
  const auto& f = l.forward;
  check_sequence(op, u_t, ref, l.H, 2, "(B, H)");
  TORCH_CHECK(c > 0, op, ": c must be positive, got ", c);
  const c10::SymInt batch = u_t.sym_size(0);
  const auto x = project(u_t, l.W_in_x, l.b_in_x);
  at::Tensor window;  // the convolution's inputs x_{t-3} .. x_t
  if (has(state)) {
    check_layer_state(op, *state, ref, batch, l.N);
    window = at::cat({state->narrow(1, 0, kK - 1), x.unsqueeze(1)}, 1);
  } else {
    window = at::cat({at::zeros_symint({batch, kK - 1, l.N}, x.options()), x.unsqueeze(1)}, 1);
  }
  // The same taps in the same order as causal_conv1d, so a step rounds as the sequence does.
  auto xc = window.select(1, kK - 1) * f.conv_weight.select(0, 0);
  for (int64_t j = 1; j < kK; ++j) xc = xc + window.select(1, kK - 1 - j) * f.conv_weight.select(0, j);
  xc = xc + f.conv_bias;
  auto [a, input] = gated(xc, f.Lambda, f.W_a, f.b_a, f.W_x, f.b_x, c);
  auto h = has(state) ? a * state->select(1, kK - 1) + input : input;
  auto gate = at::gelu(at::linear(u_t, l.W_in_gate, l.b_in_gate));
  auto y = at::linear(gate * h, l.W_out, l.b_out);
  return {y, at::cat({window.narrow(1, 1, kK - 1), h.unsqueeze(1)}, 1)};
}

std::vector<std::string> rglru_parameter_names_impl(bool bidirectional) {
  std::vector<std::string> names = kSharedNames;
  names.insert(names.end(), kDirectionNames.begin(), kDirectionNames.end());
  if (bidirectional) {
    for (const auto& name : kDirectionNames) names.push_back(name + "_rev");
  }
  return names;
}

std::vector<at::Tensor> rglru_init_composite(int64_t d_model, int64_t d_state, int64_t n_blocks, double a_min,
                                             double a_max, bool bidirectional, std::optional<at::ScalarType> dtype,
                                             std::optional<at::Device> device, std::optional<at::Generator> generator) {
  const char* op = "torch_lru::rglru_init";
  TORCH_CHECK(d_model > 0, op, ": d_model must be positive, got ", d_model);
  TORCH_CHECK(d_state > 0, op, ": d_state must be positive, got ", d_state);
  TORCH_CHECK(n_blocks > 0 && d_state % n_blocks == 0, op,
              ": n_blocks must be a positive divisor of d_state = ", d_state, ", got ", n_blocks);
  TORCH_CHECK(0.0 < a_min && a_min <= a_max && a_max < 1.0, op, ": the initial a^c needs 0 < a_min <= a_max < 1, got ",
              "a_min = ", a_min, ", a_max = ", a_max);
  const auto type = dtype.value_or(c10::typeMetaToScalarType(at::get_default_dtype()));
  TORCH_CHECK(type == at::kFloat || type == at::kDouble, op, ": dtype must be float32 or float64, got ", type);
  const auto opts = at::TensorOptions().dtype(type).device(device.value_or(at::kCPU));
  const int64_t H = d_model, N = d_state, width = N / n_blocks;
  auto normal = [&](at::IntArrayRef shape, double variance) {
    return at::randn(shape, generator, opts) * std::sqrt(variance);
  };

  std::vector<at::Tensor> p;
  p.push_back(normal({N, H}, 1.0 / H));  // W_in_x
  p.push_back(at::zeros({N}, opts));
  p.push_back(normal({N, H}, 1.0 / H));  // W_in_gate
  p.push_back(at::zeros({N}, opts));
  p.push_back(normal({H, N}, 1.0 / N));  // W_out
  p.push_back(at::zeros({H}, opts));
  for (int direction = 0; direction < (bidirectional ? 2 : 1); ++direction) {
    p.push_back(normal({kK, N}, 0.01 / kK));  // conv_weight
    p.push_back(at::zeros({N}, opts));
    // a^c uniform in [a_min, a_max]; Lambda = logit(a) = log a - log(1 - a), with log a = log(a^c) / c.
    auto log_a = at::log(a_min + (a_max - a_min) * at::rand({N}, generator, opts)) / kRGLRUc;
    p.push_back(log_a - at::log(-at::expm1(log_a)));
    p.push_back(normal({n_blocks, width, width}, 1.0 / width));  // W_a
    p.push_back(at::zeros({N}, opts));
    p.push_back(normal({n_blocks, width, width}, 1.0 / width));  // W_x
    p.push_back(at::zeros({N}, opts));
  }
  return p;
}

template <typename Fn>
auto typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

}  // namespace

std::vector<std::string> rglru_parameter_names(bool bidirectional) { return rglru_parameter_names_impl(bidirectional); }

std::vector<at::Tensor> rglru_init(int64_t d_model, int64_t d_state, int64_t n_blocks, double a_min, double a_max,
                                   bool bidirectional, std::optional<at::ScalarType> dtype,
                                   std::optional<at::Device> device, std::optional<at::Generator> generator) {
  static auto op = typed_op<decltype(rglru_init)>("torch_lru::rglru_init");
  return op.call(d_model, d_state, n_blocks, a_min, a_max, bidirectional, dtype, device, generator);
}

std::tuple<at::Tensor, at::Tensor> rglru_recurrence(const at::Tensor& x, const at::Tensor& Lambda,
                                                    const at::Tensor& W_a, const at::Tensor& b_a, const at::Tensor& W_x,
                                                    const at::Tensor& b_x, double c,
                                                    const std::optional<at::Tensor>& state,
                                                    const std::optional<at::Tensor>& mask, bool reverse) {
  static auto op = typed_op<decltype(rglru_recurrence)>("torch_lru::rglru_recurrence");
  return op.call(x, Lambda, W_a, b_a, W_x, b_x, c, state, mask, reverse);
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                                 const std::optional<at::Tensor>& state,
                                                 const std::optional<at::Tensor>& mask, bool reverse) {
  static auto op = typed_op<decltype(causal_conv1d)>("torch_lru::causal_conv1d");
  return op.call(x, weight, bias, state, mask, reverse);
}

std::tuple<at::Tensor, at::Tensor> rglru_forward(const at::Tensor& u, const std::vector<at::Tensor>& params,
                                                 bool bidirectional, double c, const std::optional<at::Tensor>& state,
                                                 const std::optional<at::Tensor>& mask) {
  static auto op =
      typed_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::TensorList, bool, double,
                                                  const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>(
          "torch_lru::rglru");
  return op.call(u, params, bidirectional, c, state, mask);
}

std::tuple<at::Tensor, at::Tensor> rglru_step(const at::Tensor& u_t, const std::vector<at::Tensor>& params, double c,
                                              const std::optional<at::Tensor>& state) {
  static auto op = typed_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, at::TensorList, double, const std::optional<at::Tensor>&)>("torch_lru::rglru_step");
  return op.call(u_t, params, c, state);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def("rglru_parameter_names(bool bidirectional=False) -> str[]", &rglru_parameter_names_impl);
  m.def(
      "rglru_init(int d_model, int d_state, int n_blocks=1, float a_min=0.9, float a_max=0.999, "
      "bool bidirectional=False, *, ScalarType? dtype=None, Device? device=None, Generator? generator=None) "
      "-> Tensor[]");
  m.def(
      "rglru_recurrence(Tensor x, Tensor Lambda, Tensor W_a, Tensor b_a, Tensor W_x, Tensor b_x, float c=8.0, "
      "Tensor? state=None, Tensor? mask=None, bool reverse=False) -> (Tensor, Tensor)");
  m.def(
      "causal_conv1d(Tensor x, Tensor weight, Tensor bias, Tensor? state=None, Tensor? mask=None, "
      "bool reverse=False) -> (Tensor, Tensor)");
  m.def(
      "rglru(Tensor u, Tensor[] params, bool bidirectional=False, float c=8.0, Tensor? state=None, "
      "Tensor? mask=None) -> (Tensor, Tensor)");
  m.def("rglru_step(Tensor u_t, Tensor[] params, float c=8.0, Tensor? state=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeImplicitAutograd, m) {
  m.impl("rglru_init", &rglru_init_composite);
  m.impl("rglru_recurrence", &rglru_recurrence_composite);
  m.impl("causal_conv1d", &causal_conv1d_composite);
  m.impl("rglru", [](const at::Tensor& u, at::TensorList params, bool bidirectional, double c,
                     const std::optional<at::Tensor>& state, const std::optional<at::Tensor>& mask) {
    return rglru_forward_composite(u, params.vec(), bidirectional, c, state, mask);
  });
  m.impl("rglru_step",
         [](const at::Tensor& u_t, at::TensorList params, double c, const std::optional<at::Tensor>& state) {
           return rglru_step_composite(u_t, params.vec(), c, state);
         });
}

}  // namespace torch_lru

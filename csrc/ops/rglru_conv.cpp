// torch_lru::conv_taps: the RG-LRU's depthwise Conv1D over an input already padded with the K-1
// inputs its window reaches before the first step. padded (B, L+K-1, N), weight (K, N), bias (N):
//   y[t] = ((padded[t + s(0)] w[0] + padded[t + s(1)] w[1]) + ...) + bias,
// s(j) = K-1-j, or j when reverse, summed in that order (the order of rglru_step's taps, so that a
// step rounds as the sequence does).
//
// One op so that the CPU runs it as one pass forward and one backward (grad of padded, weight and
// bias), where it was K products and sums forward and, backward, K zero-filled copies of padded
// accumulated into one plus K products and reductions. Elsewhere, and for double backward, it is
// the same formula in ATen ops (taps_composite). Autograd is registered here in C++.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "torch_lru/rglru.h"

namespace torch_lru {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kOp = "torch_lru::conv_taps";
// Steps per unit of work; the weight and bias gradients are summed per unit, the units in order,
// so they do not depend on the thread count.
constexpr int64_t kStepsPerBlock = 256;

int64_t shift(int64_t j, int64_t K, bool reverse) { return reverse ? j : K - 1 - j; }

// bias: nullptr for the backward, which takes none.
void check_taps_inputs(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor* bias) {
  TORCH_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) >= 1, kOp,
              ": weight must have shape (K, N) with K >= 1, got ",
              weight.defined() ? weight.sym_sizes() : c10::SymIntArrayRef());
  const auto K = weight.sym_size(0), N = weight.sym_size(1);
  TORCH_CHECK(padded.defined() && padded.dim() == 3 && padded.sym_size(2) == N && padded.sym_size(1) >= K - 1, kOp,
              ": padded must have shape (B, L + K - 1, N) with K = ", K, " and N = ", N, ", got ",
              padded.defined() ? padded.sym_sizes() : c10::SymIntArrayRef());
  if (bias != nullptr) {
    TORCH_CHECK(bias->defined() && bias->sym_sizes() == c10::SymIntArrayRef{N}, kOp, ": bias must have shape (N,) = (",
                N, ",), got ", bias->defined() ? bias->sym_sizes() : c10::SymIntArrayRef());
  }
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"padded", &padded}, {"bias", bias}}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->scalar_type() == weight.scalar_type() && t->device() == weight.device(), kOp, ": ", name,
                " must be ", weight.scalar_type(), " on ", weight.device(), " (like weight), got ", t->scalar_type(),
                " on ", t->device());
  }
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), kOp, ": weight must be real floating point, got ",
              weight.scalar_type());
}

at::Tensor taps_composite(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias, bool reverse) {
  const int64_t K = weight.size(0);
  const auto L = padded.sym_size(1) - (K - 1);
  auto tap = [&](int64_t j) { return padded.narrow_symint(1, shift(j, K, reverse), L) * weight.select(0, j); };
  auto y = tap(0);
  for (int64_t j = 1; j < K; ++j) y = y + tap(j);
  return y + bias;
}

// y[t] = ((p[t+s(0)] w[0] + p[t+s(1)] w[1]) + ...) + bias over units of kStepsPerBlock steps.
template <typename T>
void taps_forward_kernel(const T* p, const T* w, const T* b, T* out, int64_t B, int64_t L, int64_t K, int64_t N,
                         bool reverse) {
  const int64_t blocks = (L + kStepsPerBlock - 1) / kStepsPerBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t batch = u / blocks, t0 = (u % blocks) * kStepsPerBlock;
      for (int64_t t = t0; t < std::min(L, t0 + kStepsPerBlock); ++t) {
        T* o = out + (batch * L + t) * N;
        const T* row = p + (batch * (L + K - 1) + t) * N;
        const T* first = row + shift(0, K, reverse) * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = first[n] * w[n];
        for (int64_t j = 1; j < K; ++j) {
          const T* in = row + shift(j, K, reverse) * N;
          const T* wj = w + j * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) o[n] = o[n] + in[n] * wj[n];
        }
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) o[n] = o[n] + b[n];
      }
    }
  });
}

// Units of kStepsPerBlock padded rows s: the gradient of padded row s (it feeds output
// t = s - s(j) through tap j), and the weight and bias terms of the outputs t = s < L, summed
// into the unit's own row of acc_all (units, K + 1, N).
template <typename T>
void taps_backward_kernel(const T* g, const T* p, const T* w, T* out, T* acc_all, int64_t B, int64_t L, int64_t K,
                          int64_t N, bool reverse) {
  const int64_t P = L + K - 1;
  const int64_t blocks = (P + kStepsPerBlock - 1) / kStepsPerBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t batch = u / blocks, s0 = (u % blocks) * kStepsPerBlock;
      T* acc = acc_all + u * (K + 1) * N;
      const T* gb = g + batch * L * N;
      const T* pb = p + batch * P * N;
      for (int64_t s = s0; s < std::min(P, s0 + kStepsPerBlock); ++s) {
        T* o = out + (batch * P + s) * N;
        std::fill_n(o, N, T(0));
        for (int64_t j = 0; j < K; ++j) {
          const int64_t t = s - shift(j, K, reverse);
          if (t < 0 || t >= L) continue;
          const T* gt = gb + t * N;
          const T* wj = w + j * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) o[n] += gt[n] * wj[n];
        }
        if (s >= L) continue;
        const T* gt = gb + s * N;
        for (int64_t j = 0; j < K; ++j) {
          const T* in = pb + (s + shift(j, K, reverse)) * N;
          T* aj = acc + j * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) aj[n] += gt[n] * in[n];
        }
        T* ab = acc + K * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) ab[n] += gt[n];
      }
    }
  });
}

at::Tensor conv_taps_cpu(const at::Tensor& padded_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                         bool reverse) {
  check_taps_inputs(padded_in, weight_in, &bias_in);
  const auto padded = padded_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const int64_t B = padded.size(0), K = weight.size(0), N = weight.size(1), L = padded.size(1) - (K - 1);
  auto y = at::empty({B, L, N}, padded.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), kOp, [&] {
    taps_forward_kernel(padded.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                        bias.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), B, L, K, N, reverse);
  });
  return y;
}

at::Tensor conv_taps_meta(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias, bool reverse) {
  check_taps_inputs(padded, weight, &bias);
  const auto L = padded.sym_size(1) - (weight.sym_size(0) - 1);
  return at::empty_symint({padded.sym_size(0), L, padded.sym_size(2)}, padded.options());
}

at::Tensor conv_taps_other(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias, bool reverse) {
  check_taps_inputs(padded, weight, &bias);
  return taps_composite(padded, weight, bias, reverse);
}

// (grad_padded, grad_weight, grad_bias) for grad_y (B, L, N), in one pass over the steps.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_taps_backward_cpu(const at::Tensor& grad_y_in,
                                                                      const at::Tensor& padded_in,
                                                                      const at::Tensor& weight_in, bool reverse) {
  check_taps_inputs(padded_in, weight_in, nullptr);
  const auto padded = padded_in.contiguous(), weight = weight_in.contiguous(), gy = grad_y_in.contiguous();
  const int64_t B = padded.size(0), K = weight.size(0), N = weight.size(1), P = padded.size(1), L = P - (K - 1);
  TORCH_CHECK(gy.dim() == 3 && gy.size(0) == B && gy.size(1) == L && gy.size(2) == N &&
                  gy.scalar_type() == padded.scalar_type(),
              "torch_lru::conv_taps_backward: grad_y must be ", padded.scalar_type(), " (B, L, N) = (", B, ", ", L,
              ", ", N, "), got ", gy.scalar_type(), " ", gy.sizes());
  auto gp = at::empty_like(padded);
  const int64_t blocks = (P + kStepsPerBlock - 1) / kStepsPerBlock;
  auto partial = at::zeros({B * blocks, K + 1, N}, padded.options());
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "torch_lru::conv_taps_backward", [&] {
    taps_backward_kernel(gy.const_data_ptr<scalar_t>(), padded.const_data_ptr<scalar_t>(),
                         weight.const_data_ptr<scalar_t>(), gp.mutable_data_ptr<scalar_t>(),
                         partial.mutable_data_ptr<scalar_t>(), B, L, K, N, reverse);
  });
  // The units summed in order (deterministic): the last of the running sums.
  const auto total = B * blocks > 0 ? partial.cumsum(0).select(0, -1) : at::zeros({K + 1, N}, padded.options());
  return {gp, total.narrow(0, 0, K).clone(), total.select(0, K).clone()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_taps_backward_meta(const at::Tensor& grad_y,
                                                                       const at::Tensor& padded,
                                                                       const at::Tensor& weight, bool reverse) {
  check_taps_inputs(padded, weight, nullptr);
  return {at::empty_like(padded), at::empty_like(weight), at::empty_like(weight.select(0, 0))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_taps_backward_op(const at::Tensor& grad_y, const at::Tensor& padded,
                                                                     const at::Tensor& weight, bool reverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::conv_taps_backward", "")
                       .typed<decltype(conv_taps_backward_op)>();
  return op.call(grad_y, padded, weight, reverse);
}

class TapsFunction : public torch::autograd::Function<TapsFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& padded, const at::Tensor& weight,
                            const at::Tensor& bias, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto y = conv_taps(padded, weight, bias, reverse);
    ctx->save_for_backward({padded, weight, bias});
    ctx->saved_data["reverse"] = reverse;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &padded = saved[0], &weight = saved[1], &bias = saved[2];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const auto& gy = grads[0];
    if (!gy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const bool create_graph = at::GradMode::is_enabled();
    if (!create_graph && padded.device().is_cpu() && gy.scalar_type() == padded.scalar_type()) {
      auto [gp, gw, gb] = conv_taps_backward_op(gy, padded, weight, reverse);
      return {gp, gw, gb, at::Tensor()};
    }
    // The gradient of the ATen formula (double backward, other devices), on the graph when
    // create_graph asks for one.
    at::AutoGradMode enable(true);
    std::vector<at::Tensor> inputs;
    for (const auto& t : {padded, weight, bias}) {
      inputs.push_back(create_graph && t.requires_grad() ? t : t.detach().requires_grad_(true));
    }
    auto y = taps_composite(inputs[0], inputs[1], inputs[2], reverse);
    auto g = torch::autograd::grad({y}, inputs, {gy}, create_graph, create_graph, /*allow_unused=*/true);
    return {g[0], g[1], g[2], at::Tensor()};
  }
};

at::Tensor conv_taps_autograd(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias,
                              bool reverse) {
  return TapsFunction::apply(padded, weight, bias, reverse);
}

}  // namespace

at::Tensor conv_taps(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias, bool reverse) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::conv_taps", "").typed<decltype(conv_taps)>();
  return op.call(padded, weight, bias, reverse);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def("conv_taps(Tensor padded, Tensor weight, Tensor bias, bool reverse=False) -> Tensor");
  m.def("conv_taps_backward(Tensor grad_y, Tensor padded, Tensor weight, bool reverse) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("conv_taps", &conv_taps_cpu);
  m.impl("conv_taps_backward", &conv_taps_backward_cpu);
}

TORCH_LIBRARY_IMPL(torch_lru, Meta, m) {
  m.impl("conv_taps", &conv_taps_meta);
  m.impl("conv_taps_backward", &conv_taps_backward_meta);
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeExplicitAutograd, m) { m.impl("conv_taps", &conv_taps_other); }

TORCH_LIBRARY_IMPL(torch_lru, Autograd, m) { m.impl("conv_taps", &conv_taps_autograd); }

}  // namespace torch_lru

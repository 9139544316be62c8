// CUDA kernels of the scan ops: a first, simple version, one thread per (batch row, channel)
// walking the whole sequence. Correct for every case of the contract; parallel over B x N only.
// The math (step direction, conjugate coefficients) is the shared header's, as on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/scan_checks.h"
#include "torch_lru/scan_combine.h"

namespace torch_lru {
namespace {

constexpr int kThreads = 256;

// Contiguous (B, L, N) problem seen by one thread: channel n of batch row b.
struct Lane {
  int64_t b, n, L, N;
  bool reverse;
  __device__ int64_t offset(int64_t s) const { return (b * L + time_index(s, L, reverse)) * N + n; }
  __device__ int64_t step() const { return reverse ? -N : N; }
};

template <typename T, bool kPerStep>
__global__ void scan_forward_kernel(const T* __restrict__ lam, const T* __restrict__ x, const T* __restrict__ h0,
                                    T* __restrict__ h, int64_t B, int64_t L, int64_t N, bool reverse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * N) return;
  const Lane lane{i / N, i % N, L, N, reverse};
  const int64_t step = lane.step();
  int64_t off = lane.offset(0);
  T carry = h0 != nullptr ? h0[i] : T(0);
  const T a_const = kPerStep ? T(0) : lam[lane.n];
  for (int64_t s = 0; s < L; ++s, off += step) {
    carry = Affine<T>{kPerStep ? lam[off] : a_const, x[off]}.apply(carry);
    h[off] = carry;
  }
}

// Backward: d_k = g_k + conj(a_{k+1}) d_{k+1}, walked against the forward's direction;
// grad_x = d, grad_a_k = conj(h_{k-1}) d_k, grad_h0 = conj(a_0) d_0. Time-invariant grad_lam is
// left per (b, n) in `glam_rows` and summed over B afterwards (no atomics: deterministic).
template <typename T, bool kPerStep>
__global__ void scan_backward_kernel(const T* __restrict__ g, const T* __restrict__ lam, const T* __restrict__ h,
                                     const T* __restrict__ h0, T* __restrict__ gx, T* __restrict__ glam,
                                     T* __restrict__ glam_rows, T* __restrict__ gh0, int64_t B, int64_t L, int64_t N,
                                     bool reverse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * N) return;
  const Lane lane{i / N, i % N, L, N, !reverse};  // backward step s is the forward's step L-1-s
  const int64_t step = lane.step();
  const T a_const = kPerStep ? T(0) : lam[lane.n];
  const T h_first = h0 != nullptr ? h0[i] : T(0);
  const bool grad_lam = glam != nullptr || glam_rows != nullptr;
  T d(0), acc(0), a_prev(0);
  int64_t off = lane.offset(0);
  for (int64_t s = 0; s < L; ++s, off += step) {
    // Coefficient of step s: conj(a) of step s-1 (unused at s = 0, where the carry is zero).
    d = s == 0 ? g[off] : Affine<T>{conj_value(a_prev), g[off]}.apply(d);
    a_prev = kPerStep ? lam[off] : a_const;
    gx[off] = d;
    if (grad_lam) {
      const T ga = conj_value(s == L - 1 ? h_first : h[off + step]) * d;
      if (kPerStep) {
        glam[off] = ga;
      } else {
        acc += ga;
      }
    }
  }
  if (!kPerStep && glam_rows != nullptr) glam_rows[i] = acc;
  if (gh0 != nullptr) gh0[i] = conj_value(a_prev) * d;  // a_prev is now a_0
}

unsigned int grid_for(int64_t lanes) { return static_cast<unsigned int>((lanes + kThreads - 1) / kThreads); }

at::Tensor& scan_out_cuda(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse,
                          at::Tensor& h) {
  check_scan_inputs("torch_lru::scan", lam, x, h0);
  check_scan_out(h, x);
  const c10::cuda::CUDAGuard device_guard(x.device());
  if (h.numel() == 0) return h;
  const auto lam_c = lam.contiguous();
  const auto x_c = x.contiguous();
  const auto h0_c = h0.has_value() && h0->defined() ? h0->contiguous() : at::Tensor();
  const int64_t B = x.size(0), L = x.size(1), N = x.size(2);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(x.scalar_type(), "torch_lru::scan", [&] {
    auto kernel = lam_is_per_step(lam) ? &scan_forward_kernel<scalar_t, true> : &scan_forward_kernel<scalar_t, false>;
    kernel<<<grid_for(B * N), kThreads, 0, stream>>>(lam_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
                                                     h0_c.defined() ? h0_c.const_data_ptr<scalar_t>() : nullptr,
                                                     h.mutable_data_ptr<scalar_t>(), B, L, N, reverse);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return h;
}

at::Tensor scan_cuda(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse) {
  auto h = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  return scan_out_cuda(lam, x, h0, reverse, h);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cuda(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                  const at::Tensor& h,
                                                                  const std::optional<at::Tensor>& h0, bool reverse,
                                                                  std::array<bool, 3> mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  const c10::cuda::CUDAGuard device_guard(h.device());
  auto out = make_scan_backward_outputs(lam, h, h0, mask);
  if (out.done) return out.result();
  const bool has_h0 = h0.has_value() && h0->defined();
  const bool per_step = lam_is_per_step(lam);
  const int64_t B = h.size(0), L = h.size(1), N = h.size(2);
  auto glam_rows = mask[0] && !per_step ? at::empty({B, N}, h.options()) : at::Tensor();
  const auto g_c = grad_h.contiguous();
  const auto lam_c = lam.contiguous();
  const auto h_c = h.contiguous();
  const auto h0_c = has_h0 ? h0->contiguous() : at::Tensor();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    auto kernel = per_step ? &scan_backward_kernel<scalar_t, true> : &scan_backward_kernel<scalar_t, false>;
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
    kernel<<<grid_for(B * N), kThreads, 0, stream>>>(
        g_c.const_data_ptr<scalar_t>(), lam_c.const_data_ptr<scalar_t>(), h_c.const_data_ptr<scalar_t>(),
        has_h0 ? h0_c.const_data_ptr<scalar_t>() : nullptr, out.grad_x.mutable_data_ptr<scalar_t>(),
        per_step ? ptr(out.grad_lam) : nullptr, ptr(glam_rows), ptr(out.grad_h0), B, L, N, reverse);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (glam_rows.defined()) at::sum_out(out.grad_lam, glam_rows, {0});
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CUDA, m) {
  m.impl("scan", &scan_cuda);
  m.impl("scan.out", &scan_out_cuda);
  m.impl("scan_backward", &scan_backward_cuda);
}

}  // namespace torch_lru

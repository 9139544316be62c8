// The CPU backend of the scan ops: argument checks, layout, and the choice of kernel build
// (AVX2 + FMA when the processor has them, else baseline) for csrc/ops/scan_cpu_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "ops/scan_checks.h"
#include "ops/scan_cpu_kernels_api.h"

namespace torch_lru {
namespace {

bool use_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

template <typename T>
auto forward_kernel(bool per_step) {
  if (use_avx2())
    return per_step ? &cpu::avx2::scan_forward_kernel<T, true> : &cpu::avx2::scan_forward_kernel<T, false>;
  return per_step ? &cpu::baseline::scan_forward_kernel<T, true> : &cpu::baseline::scan_forward_kernel<T, false>;
}

template <typename T>
auto backward_kernel(bool per_step) {
  if (use_avx2()) {
    return per_step ? &cpu::avx2::scan_backward_kernel<T, true> : &cpu::avx2::scan_backward_kernel<T, false>;
  }
  return per_step ? &cpu::baseline::scan_backward_kernel<T, true> : &cpu::baseline::scan_backward_kernel<T, false>;
}

void run_forward(const ForwardOperands& f, bool reverse, at::Tensor& h) {
  if (h.numel() == 0) return;
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(f.x.scalar_type(), "torch_lru::scan", [&] {
    const scalar_t* h0_ptr = f.h0.defined() ? f.h0.const_data_ptr<scalar_t>() : nullptr;
    forward_kernel<scalar_t>(f.per_step)(f.lam.const_data_ptr<scalar_t>(), f.x.const_data_ptr<scalar_t>(), h0_ptr,
                                         h.mutable_data_ptr<scalar_t>(), f.B, f.L, f.N, reverse);
  });
}

at::Tensor& scan_out_cpu(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse,
                         at::Tensor& out) {
  run_forward(prepare_forward("torch_lru::scan.out", lam, x, h0, &out), reverse, out);
  return out;
}

at::Tensor scan_cpu(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse) {
  const auto f = prepare_forward("torch_lru::scan", lam, x, h0);
  auto h = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  run_forward(f, reverse, h);
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cpu(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                 const at::Tensor& h,
                                                                 const std::optional<at::Tensor>& h0, bool reverse,
                                                                 std::array<bool, 3> mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  auto out = make_scan_backward_outputs(lam, h, h0, mask);
  if (out.done) return out.result();
  const bool has_h0 = h0.has_value() && h0->defined();
  const int64_t B = h.size(0), L = h.size(1), N = h.size(2);
  const auto g_c = grad_h.contiguous();
  const auto lam_c = lam.contiguous();
  const auto h_c = h.contiguous();
  const auto h0_c = has_h0 ? h0->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    backward_kernel<scalar_t>(lam_is_per_step(lam))(
        g_c.const_data_ptr<scalar_t>(), lam_c.const_data_ptr<scalar_t>(), h_c.const_data_ptr<scalar_t>(),
        has_h0 ? h0_c.const_data_ptr<scalar_t>() : nullptr, out.grad_x.mutable_data_ptr<scalar_t>(),
        out.grad_lam.defined() ? out.grad_lam.mutable_data_ptr<scalar_t>() : nullptr,
        out.grad_h0.defined() ? out.grad_h0.mutable_data_ptr<scalar_t>() : nullptr, B, L, N, reverse);
  });
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("scan", &scan_cpu);
  m.impl("scan.out", &scan_out_cpu);
  m.impl("scan_backward", &scan_backward_cpu);
}

}  // namespace torch_lru

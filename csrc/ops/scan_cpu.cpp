// The CPU backend of the scan ops: argument checks, layout, and the choice of kernel build
// (AVX-512, else AVX2 + FMA, when the processor has them, else baseline) for csrc/ops/scan_cpu_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "ops/cpu_isa.h"
#include "ops/scan_checks.h"
#include "ops/scan_cpu_kernels_api.h"

namespace torch_lru {
namespace {

template <typename T, bool kPerStep>
auto forward_kernel() {
  return cpu::of_best_isa(&cpu::avx512::scan_forward_kernel<T, kPerStep>, &cpu::avx2::scan_forward_kernel<T, kPerStep>,
                          &cpu::baseline::scan_forward_kernel<T, kPerStep>);
}

template <typename T, bool kPerStep>
auto backward_kernel() {
  return cpu::of_best_isa(&cpu::avx512::scan_backward_kernel<T, kPerStep>,
                          &cpu::avx2::scan_backward_kernel<T, kPerStep>,
                          &cpu::baseline::scan_backward_kernel<T, kPerStep>);
}

void run_forward(const ForwardOperands& f, bool reverse, at::Tensor& h) {
  if (h.numel() == 0) return;
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(f.x.scalar_type(), "torch_lru::scan", [&] {
    const scalar_t* h0_ptr = f.h0.defined() ? f.h0.const_data_ptr<scalar_t>() : nullptr;
    (f.per_step ? forward_kernel<scalar_t, true>() : forward_kernel<scalar_t, false>())(
        f.lam.const_data_ptr<scalar_t>(), f.x.const_data_ptr<scalar_t>(), h0_ptr, h.mutable_data_ptr<scalar_t>(), f.B,
        f.L, f.N, reverse);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cpu(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                 const at::Tensor& h,
                                                                 const std::optional<at::Tensor>& h0, bool reverse,
                                                                 std::array<bool, 3> mask) {
  auto b = prepare_backward(grad_h, lam, h, h0, mask);
  auto& out = b.outputs;
  if (out.done) return out.result();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
    (b.per_step ? backward_kernel<scalar_t, true>() : backward_kernel<scalar_t, false>())(
        b.grad_h.const_data_ptr<scalar_t>(), b.lam.const_data_ptr<scalar_t>(), b.h.const_data_ptr<scalar_t>(),
        b.h0.defined() ? b.h0.const_data_ptr<scalar_t>() : nullptr, out.grad_x.mutable_data_ptr<scalar_t>(),
        ptr(out.grad_lam), ptr(out.grad_h0), b.B, b.L, b.N, reverse);
  });
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("scan", &scan_with<run_forward>);
  m.impl("scan.out", &scan_out_with<run_forward>);
  m.impl("scan_backward", &scan_backward_cpu);
}

}  // namespace torch_lru

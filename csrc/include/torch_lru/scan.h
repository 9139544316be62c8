// Public C++ API of the scan op. Link the `torch_lru` library (CMake target of the same name) and
// call these; they go through the dispatcher, so CPU/CUDA kernels and autograd are picked exactly
// as for `torch.ops.torch_lru.scan` in Python.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace torch_lru {

// h_t = lam_t * h_{t-1} + x_t over the L axis of x (B, L, N), with h_{-1} = h0 (or zero).
// lam is (N,) (time-invariant) or (B, L, N) (time-varying), h0 is (B, N); all share x's dtype
// (float32, float64, complex64 or complex128) and device. With reverse the recurrence runs from
// t = L-1 down to 0 (h_t = lam_t * h_{t+1} + x_t, h_L = h0). Returns h, contiguous (B, L, N).
// Differentiable with respect to lam, x and h0.
at::Tensor scan(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0 = std::nullopt,
                bool reverse = false);

// As scan, writing h into `out` (contiguous, x's shape, dtype and device). Not differentiable.
at::Tensor& scan_out(at::Tensor& out, const at::Tensor& lam, const at::Tensor& x,
                     const std::optional<at::Tensor>& h0 = std::nullopt, bool reverse = false);

// The backward of scan, given grad_h and the forward's output h. Returns
// (grad_lam, grad_x, grad_h0) in PyTorch's conjugate-Wirtinger convention; an entry whose
// output_mask is false is an undefined tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(const at::Tensor& grad_h, const at::Tensor& lam,
                                                             const at::Tensor& h, const std::optional<at::Tensor>& h0,
                                                             bool reverse, std::array<bool, 3> output_mask);

}  // namespace torch_lru

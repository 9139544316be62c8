// Autograd of torch_lru::scan, registered in C++ for the Autograd key so that LibTorch programs get
// the same gradients as Python. The backward is its own op (torch_lru::scan_backward, fused kernels
// per backend). When the backward itself must be differentiable (create_graph=True, double
// backward), it is written instead with differentiable ops: a scan with conj(lam) in the other
// direction and elementwise products, the same equations as the fused kernels.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/scan_checks.h"
#include "torch_lru/scan.h"

namespace torch_lru {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// lam shifted one step along the forward's direction of travel: at time t it holds lam at the
// forward's next step (t+1, or t-1 when reverse), zero where there is none.
at::Tensor lam_of_next_step(const at::Tensor& lam, bool reverse) {
  const int64_t L = lam.size(1);
  auto pad = at::zeros_like(lam.narrow(1, 0, 1));
  return reverse ? at::cat({pad, lam.narrow(1, 0, L - 1)}, 1) : at::cat({lam.narrow(1, 1, L - 1), pad}, 1);
}

// h at the forward's previous step (h0, or zero, before the first).
at::Tensor h_of_previous_step(const at::Tensor& h, const at::Tensor& h0, bool reverse) {
  const int64_t L = h.size(1);
  auto first = h0.defined() ? h0.unsqueeze(1) : at::zeros_like(h.narrow(1, 0, 1));
  return reverse ? at::cat({h.narrow(1, 1, L - 1), first}, 1) : at::cat({first, h.narrow(1, 0, L - 1)}, 1);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_differentiable(const at::Tensor& grad_h,
                                                                            const at::Tensor& lam, const at::Tensor& h,
                                                                            const at::Tensor& h0, bool reverse,
                                                                            std::array<bool, 3> mask) {
  const bool per_step = lam_is_per_step(lam);
  auto coef = (per_step ? lam_of_next_step(lam, reverse) : lam).conj();
  auto d = scan(coef, grad_h, std::nullopt, !reverse);
  at::Tensor grad_lam, grad_h0;
  if (mask[0]) {
    grad_lam = h_of_previous_step(h, h0, reverse).conj() * d;
    if (!per_step) grad_lam = grad_lam.sum(at::IntArrayRef{0, 1});
  }
  if (mask[2] && h0.defined()) {
    const int64_t t0 = reverse ? h.size(1) - 1 : 0;
    auto a0 = per_step ? lam.select(1, t0) : lam;
    grad_h0 = a0.conj() * d.select(1, t0);
  }
  return {grad_lam, mask[1] ? d : at::Tensor(), grad_h0};
}

class ScanFunction : public torch::autograd::Function<ScanFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& lam, const at::Tensor& x,
                            const std::optional<at::Tensor>& h0, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto h = scan(lam, x, h0, reverse);
    const bool has_h0 = h0.has_value() && h0->defined();
    ctx->save_for_backward({lam, h, has_h0 ? *h0 : at::Tensor()});
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["has_h0"] = has_h0;
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& lam = saved[0];
    const auto& h = saved[1];
    const auto& h0 = saved[2];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const bool has_h0 = ctx->saved_data["has_h0"].toBool();
    const auto& grad_h = grad_outputs[0];
    if (!grad_h.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    // Edges are numbered over the tensor arguments that were given: lam, x, then h0 if present.
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_h0 && ctx->needs_input_grad(2)};
    std::tuple<at::Tensor, at::Tensor, at::Tensor> grads;
    if (at::GradMode::is_enabled() && h.numel() > 0) {
      grads = scan_backward_differentiable(grad_h, lam, h, h0, reverse, mask);
    } else {
      grads = scan_backward(grad_h, lam, h, has_h0 ? std::optional<at::Tensor>(h0) : std::nullopt, reverse, mask);
    }
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads), at::Tensor()};
  }
};

// Whether autograd has anything to record for these inputs: a gradient to track in reverse mode, or
// a tangent in forward mode (which ScanFunction and the out= variant refuse with a clear error).
bool autograd_needed(const at::Tensor& t) {
  return t.defined() && ((at::GradMode::is_enabled() && t.requires_grad()) || t._fw_grad(/*level=*/0).defined());
}
bool autograd_needed(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0) {
  return autograd_needed(lam) || autograd_needed(x) || (h0.has_value() && autograd_needed(*h0));
}

at::Tensor scan_autograd(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                         bool reverse) {
  // With nothing to record, skip the graph node and its saved tensors: about 1 us of a 4-5 us call
  // on the smallest problems (docs/perf.md, 2026-12-07, night).
  if (!autograd_needed(lam, x, h0)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return scan(lam, x, h0, reverse);
  }
  return ScanFunction::apply(lam, x, h0, reverse);
}

// out= variants are not differentiable; say so rather than return a result cut off from the graph.
at::Tensor& scan_out_autograd(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                              bool reverse, at::Tensor& out) {
  TORCH_CHECK(!autograd_needed(lam, x, h0),
              "torch_lru::scan.out: out= does not support automatic differentiation, but an input requires grad "
              "or carries a forward-mode tangent (call scan without out=, or under torch.no_grad())");
  at::AutoDispatchBelowADInplaceOrView guard;
  return scan_out(out, lam, x, h0, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, Autograd, m) {
  m.impl("scan", &scan_autograd);
  m.impl("scan.out", &scan_out_autograd);
}

}  // namespace torch_lru

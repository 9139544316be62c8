// Input validation shared by every backend of the scan ops (CPU, CUDA, Meta), so a bad call fails
// the same way whichever kernel the dispatcher picks.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>

namespace torch_lru {

// Checks x (B, L, N), lam (N,) or (B, L, N), h0 (B, N) or absent: ranks, shapes, one supported
// dtype, one device. Throws c10::Error naming the op and the offending argument.
void check_scan_inputs(const char* op, const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0);

// As above for the backward, plus grad_h matching h.
void check_scan_backward_inputs(const at::Tensor& grad_h, const at::Tensor& lam, const at::Tensor& h,
                                const std::optional<at::Tensor>& h0);

// Checks the destination of scan.out: contiguous, with x's shape, dtype and device.
void check_scan_out(const at::Tensor& out, const at::Tensor& x);

// The operands of a forward scan as every kernel takes them: checked, contiguous, with their
// sizes. `h0` is undefined when absent.
struct ForwardOperands {
  at::Tensor lam, x, h0;
  int64_t B, L, N;
  bool per_step;
};
// Checks the inputs under `op`'s name and lays them out. With `out` (scan.out) also checks out,
// and that it shares no memory with lam or h0, nor with x unless it is x itself (in place).
ForwardOperands prepare_forward(const char* op, const at::Tensor& lam, const at::Tensor& x,
                                const std::optional<at::Tensor>& h0, const at::Tensor* out = nullptr);

// The outputs of scan_backward, allocated (contiguous) for the entries output_mask asks for;
// grad_x is always allocated, since the kernels compute it on the way. For a problem with no
// elements they are final already: nothing flows to lam, and h0 reaches no step.
struct ScanBackwardOutputs {
  at::Tensor grad_lam, grad_x, grad_h0;
  std::array<bool, 3> mask;
  bool done;

  std::tuple<at::Tensor, at::Tensor, at::Tensor> result() const {
    return {grad_lam, mask[1] ? grad_x : at::Tensor(), grad_h0};
  }
};
ScanBackwardOutputs make_scan_backward_outputs(const at::Tensor& lam, const at::Tensor& h,
                                               const std::optional<at::Tensor>& h0, std::array<bool, 3> output_mask);

// The forward's two entry points (scan, scan.out) for a backend whose kernels run as
// RunForward(operands, reverse, h): the checks, the layout and the output are the same for all.
using RunForwardFn = void (*)(const ForwardOperands&, bool, at::Tensor&);

template <RunForwardFn RunForward>
at::Tensor scan_with(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse) {
  const auto f = prepare_forward("torch_lru::scan", lam, x, h0);
  auto h = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  RunForward(f, reverse, h);
  return h;
}

template <RunForwardFn RunForward>
at::Tensor& scan_out_with(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse,
                          at::Tensor& out) {
  RunForward(prepare_forward("torch_lru::scan.out", lam, x, h0, &out), reverse, out);
  return out;
}

// The operands of a backward scan as every kernel takes them: checked, contiguous, with their
// sizes and the outputs allocated (`outputs.done` when there is nothing to compute).
struct BackwardOperands {
  at::Tensor grad_h, lam, h, h0;  // h0 undefined when absent
  int64_t B, L, N;
  bool per_step;
  ScanBackwardOutputs outputs;
};
BackwardOperands prepare_backward(const at::Tensor& grad_h, const at::Tensor& lam, const at::Tensor& h,
                                  const std::optional<at::Tensor>& h0, std::array<bool, 3> output_mask);

// True when lam holds one value per step (B, L, N) rather than one per channel (N,).
inline bool lam_is_per_step(const at::Tensor& lam) { return lam.dim() == 3; }

}  // namespace torch_lru

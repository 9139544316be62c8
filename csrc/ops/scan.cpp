// The scan ops' schemas, their shared input checks, the Meta kernels (shape inference for
// torch.compile / torch.export) and the C++ API that calls them through the dispatcher.
#include "torch_lru/scan.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/scan_checks.h"

namespace torch_lru {

namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kComplexFloat || t == at::kComplexDouble;
}

// `xn` names the (B, L, N) tensor the others are checked against: x in the forward, h in the backward.
void check_like(const char* op, const char* name, const at::Tensor& t, const char* xn, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " and ", xn, " must have the same dtype, got ", name,
              " ", t.scalar_type(), " and ", xn, " ", x.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " and ", xn, " must be on the same device, got ", name, " on ",
              t.device(), " and ", xn, " on ", x.device());
}

void check_inputs(const char* op, const at::Tensor& lam, const char* xn, const at::Tensor& x,
                  const std::optional<at::Tensor>& h0) {
  TORCH_CHECK(x.defined() && lam.defined(), op, ": lam and ", xn, " must be defined tensors");
  TORCH_CHECK(x.dim() == 3, op, ": ", xn, " must have shape (B, L, N), got ", x.dim(), " dimensions ", x.sym_sizes());
  TORCH_CHECK(is_supported_dtype(x.scalar_type()), op, ": unsupported dtype ", x.scalar_type(),
              " (expected float32, float64, complex64 or complex128)");
  check_like(op, "lam", lam, xn, x);
  if (lam.dim() == 1) {
    TORCH_CHECK(lam.sym_size(0) == x.sym_size(2), op, ": lam of shape (N,) must match ", xn,
                "'s last dimension, got lam ", lam.sym_sizes(), " and ", xn, " ", x.sym_sizes());
  } else {
    TORCH_CHECK(lam.dim() == 3, op, ": lam must have shape (N,) or (B, L, N), got ", lam.sym_sizes());
    TORCH_CHECK(lam.sym_sizes() == x.sym_sizes(), op, ": lam of shape (B, L, N) must match ", xn, ", got lam ",
                lam.sym_sizes(), " and ", xn, " ", x.sym_sizes());
  }
  if (h0.has_value() && h0->defined()) {
    check_like(op, "h0", *h0, xn, x);
    TORCH_CHECK(h0->dim() == 2 && h0->sym_size(0) == x.sym_size(0) && h0->sym_size(1) == x.sym_size(2), op,
                ": h0 must have shape (B, N) = (", x.sym_size(0), ", ", x.sym_size(2), "), got ", h0->sym_sizes());
  }
}

}  // namespace

void check_scan_inputs(const char* op, const at::Tensor& lam, const at::Tensor& x,
                       const std::optional<at::Tensor>& h0) {
  check_inputs(op, lam, "x", x, h0);
}

void check_scan_backward_inputs(const at::Tensor& grad_h, const at::Tensor& lam, const at::Tensor& h,
                                const std::optional<at::Tensor>& h0) {
  const char* op = "torch_lru::scan_backward";
  check_inputs(op, lam, "h", h, h0);
  TORCH_CHECK(grad_h.defined(), op, ": grad_h must be a defined tensor");
  check_like(op, "grad_h", grad_h, "h", h);
  TORCH_CHECK(grad_h.sym_sizes() == h.sym_sizes(), op, ": grad_h must match h, got grad_h ", grad_h.sym_sizes(),
              " and h ", h.sym_sizes());
}

void check_scan_out(const at::Tensor& out, const at::Tensor& x) {
  const char* op = "torch_lru::scan.out";
  check_like(op, "out", out, "x", x);
  TORCH_CHECK(out.sym_sizes() == x.sym_sizes(), op, ": out must have x's shape ", x.sym_sizes(), ", got ",
              out.sym_sizes());
  TORCH_CHECK(out.is_contiguous(), op, ": out must be contiguous");
}

namespace {

// Whether a and b may touch a common byte of one storage: their spans (first to last element
// they can reach) intersect. Views whose elements interleave without meeting count as sharing.
bool may_share_memory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.has_storage() || !b.has_storage()) return false;
  if (!a.storage().is_alias_of(b.storage())) return false;
  auto span = [](const at::Tensor& t) {
    int64_t first = t.storage_offset(), last = first;
    for (int64_t d = 0; d < t.dim(); ++d) (t.stride(d) >= 0 ? last : first) += (t.size(d) - 1) * t.stride(d);
    const auto item = static_cast<int64_t>(t.element_size());
    return std::pair<int64_t, int64_t>{first * item, (last + 1) * item - 1};
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 <= b1 && b0 <= a1;
}

// The kernels read x_t, lam_t and h0 while they write h. out may be x itself (each step reads
// x_t before it writes h_t at the same address), but must share no other memory with an input,
// or the kernel would read values it has already overwritten.
void check_out_overlap(const at::Tensor& out, const at::Tensor& lam, const at::Tensor& x,
                       const std::optional<at::Tensor>& h0) {
  const char* op = "torch_lru::scan.out";
  const bool is_x = out.is_alias_of(x) && out.storage_offset() == x.storage_offset() && out.strides() == x.strides();
  TORCH_CHECK(is_x || !may_share_memory(out, x), op,
              ": out overlaps x in part (out may be x itself, or share no memory with it); got out with storage "
              "offset ",
              out.storage_offset(), " and strides ", out.strides(), ", x with storage offset ", x.storage_offset(),
              " and strides ", x.strides());
  const auto refuse_shared = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK(!may_share_memory(out, t), op, ": ", name,
                " shares memory with out (it would be overwritten while it is read); pass a clone of ", name,
                " or another out");
  };
  refuse_shared("lam", lam);
  if (h0.has_value() && h0->defined()) refuse_shared("h0", *h0);
}

}  // namespace

ForwardOperands prepare_forward(const char* op, const at::Tensor& lam, const at::Tensor& x,
                                const std::optional<at::Tensor>& h0, const at::Tensor* out) {
  check_scan_inputs(op, lam, x, h0);
  if (out != nullptr) {
    check_scan_out(*out, x);
    check_out_overlap(*out, lam, x, h0);
  }
  ForwardOperands f;
  f.lam = lam.contiguous();
  f.x = x.contiguous();
  if (h0.has_value() && h0->defined()) f.h0 = h0->contiguous();
  f.B = x.size(0);
  f.L = x.size(1);
  f.N = x.size(2);
  f.per_step = lam_is_per_step(lam);
  return f;
}

ScanBackwardOutputs make_scan_backward_outputs(const at::Tensor& lam, const at::Tensor& h,
                                               const std::optional<at::Tensor>& h0, std::array<bool, 3> mask) {
  const auto contiguous = at::MemoryFormat::Contiguous;
  const bool has_h0 = h0.has_value() && h0->defined();
  ScanBackwardOutputs out{mask[0] ? at::empty_like(lam, contiguous) : at::Tensor(), at::empty_like(h, contiguous),
                          mask[2] && has_h0 ? at::empty_like(*h0, contiguous) : at::Tensor(), mask, false};
  if (h.sym_numel() == 0) {
    if (out.grad_lam.defined()) out.grad_lam.zero_();
    if (out.grad_h0.defined()) out.grad_h0.zero_();
    out.done = true;
  }
  return out;
}

BackwardOperands prepare_backward(const at::Tensor& grad_h, const at::Tensor& lam, const at::Tensor& h,
                                  const std::optional<at::Tensor>& h0, std::array<bool, 3> output_mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  BackwardOperands b{{},
                     {},
                     {},
                     {},
                     h.size(0),
                     h.size(1),
                     h.size(2),
                     lam_is_per_step(lam),
                     make_scan_backward_outputs(lam, h, h0, output_mask)};
  if (b.outputs.done) return b;
  b.grad_h = grad_h.contiguous();
  b.lam = lam.contiguous();
  b.h = h.contiguous();
  if (h0.has_value() && h0->defined()) b.h0 = h0->contiguous();
  return b;
}

namespace {

at::Tensor& scan_out_meta(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                          bool /*reverse*/, at::Tensor& out) {
  check_scan_inputs("torch_lru::scan.out", lam, x, h0);
  check_scan_out(out, x);
  return out;
}

at::Tensor scan_meta(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                     bool /*reverse*/) {
  check_scan_inputs("torch_lru::scan", lam, x, h0);
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_meta(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                  const at::Tensor& h,
                                                                  const std::optional<at::Tensor>& h0, bool /*reverse*/,
                                                                  std::array<bool, 3> mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  return make_scan_backward_outputs(lam, h, h0, mask).result();
}

}  // namespace

at::Tensor scan(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::scan", "").typed<decltype(scan)>();
  return op.call(lam, x, h0, reverse);
}

at::Tensor& scan_out(at::Tensor& out, const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                     bool reverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::scan", "out")
                       .typed<at::Tensor&(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, bool,
                                          at::Tensor&)>();
  return op.call(lam, x, h0, reverse, out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward(const at::Tensor& grad_h, const at::Tensor& lam,
                                                             const at::Tensor& h, const std::optional<at::Tensor>& h0,
                                                             bool reverse, std::array<bool, 3> output_mask) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::scan_backward", "").typed<decltype(scan_backward)>();
  return op.call(grad_h, lam, h, h0, reverse, output_mask);
}

TORCH_LIBRARY(torch_lru, m) {
  m.def("scan(Tensor lam, Tensor x, Tensor? h0=None, bool reverse=False) -> Tensor");
  // Writes h into a preallocated contiguous tensor (no autograd: out= variants are not differentiable).
  m.def("scan.out(Tensor lam, Tensor x, Tensor? h0=None, bool reverse=False, *, Tensor(a!) out) -> Tensor(a!)");
  m.def(
      "scan_backward(Tensor grad_h, Tensor lam, Tensor h, Tensor? h0, bool reverse, bool[3] output_mask)"
      " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, Meta, m) {
  m.impl("scan", &scan_meta);
  m.impl("scan.out", &scan_out_meta);
  m.impl("scan_backward", &scan_backward_meta);
}

}  // namespace torch_lru

// torch_lru::rglru_gates: the RG-LRU's recurrence coefficient and input from the gate
// pre-activations (Griffin, De et al. 2024, eqs. 1-4):
//   r = sigmoid(pre_a), i = sigmoid(pre_x), log a = -c r softplus(-Lambda),
//   a = exp(log a), input = sqrt(1 - a^2) * (i * x),
// with 1 - a^2 = -expm1(2 log a) (no cancellation as a -> 1), clamped at the smallest normal number
// so that sqrt's derivative stays finite where a rounds to 1 (a factor that is zero there multiplies
// it). Where mask is false the step is padding: a = 1, input = 0, and no gradient flows.
//
// One op so that the CPU runs the chain as one fused pass forward and one backward
// (rglru_gates_cpu_kernels.h); elsewhere, and for mixed dtypes (autocast), it is the same formula
// in ATen ops (gates_composite). Autograd is registered here in C++: the fused backward op on the
// CPU, otherwise (and for double backward) the gradient of gates_composite.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>

#include "ops/cpu_isa.h"
#include "ops/scan_cpu_kernels_api.h"
#include "torch_lru/rglru.h"

namespace torch_lru {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kOp = "torch_lru::rglru_gates";

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

double tiny_of(at::ScalarType t) {
  return t == at::kDouble ? std::numeric_limits<double>::min() : static_cast<double>(std::numeric_limits<float>::min());
}

void check_gates_inputs(const at::Tensor& x, const at::Tensor& pre_a, const at::Tensor& pre_x, const at::Tensor& Lambda,
                        double c, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(Lambda.defined() && Lambda.dim() == 1, kOp, ": Lambda must have shape (N,), got ",
              Lambda.defined() ? Lambda.sym_sizes() : c10::SymIntArrayRef());
  TORCH_CHECK(c > 0, kOp, ": c must be positive, got ", c);
  const auto N = Lambda.sym_size(0);
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"x", x}, {"pre_a", pre_a}, {"pre_x", pre_x}}) {
    TORCH_CHECK(t.defined() && t.dim() >= 1 && t.sym_size(-1) == N, kOp, ": ", name,
                " must have shape (..., N) with N = ", N, " (Lambda's length), got ",
                t.defined() ? t.sym_sizes() : c10::SymIntArrayRef());
    TORCH_CHECK(t.sym_sizes() == x.sym_sizes(), kOp, ": ", name, " must have x's shape ", x.sym_sizes(), ", got ",
                t.sym_sizes());
    TORCH_CHECK(at::isFloatingType(t.scalar_type()), kOp, ": ", name, " must be real floating point, got ",
                t.scalar_type());
    TORCH_CHECK(t.device() == Lambda.device(), kOp, ": ", name, " is on ", t.device(), " but Lambda is on ",
                Lambda.device());
  }
  TORCH_CHECK(at::isFloatingType(Lambda.scalar_type()), kOp, ": Lambda must be real floating point, got ",
              Lambda.scalar_type());
  if (has(mask)) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, kOp, ": mask must be bool (true at valid positions), got ",
                mask->scalar_type());
    TORCH_CHECK(mask->device() == x.device(), kOp, ": mask is on ", mask->device(), " but x is on ", x.device());
    TORCH_CHECK(mask->sym_sizes() == x.sym_sizes().slice(0, x.dim() - 1), kOp,
                ": mask must have x's shape without its last dimension, ", x.sym_sizes().slice(0, x.dim() - 1),
                ", got ", mask->sym_sizes());
  }
}

// The formula in ATen ops: any device and dtype, differentiable to any order.
std::tuple<at::Tensor, at::Tensor> gates_composite(const at::Tensor& x, const at::Tensor& pre_a,
                                                   const at::Tensor& pre_x, const at::Tensor& Lambda, double c,
                                                   const std::optional<at::Tensor>& mask) {
  auto r = at::sigmoid(pre_a);
  auto i = at::sigmoid(pre_x);
  auto log_a = (-c) * r * at::softplus(-Lambda);
  const double tiny = tiny_of(at::result_type(log_a, x));
  auto multiplier = at::sqrt(at::clamp_min(-at::expm1(2.0 * log_a), tiny));
  auto a = at::exp(log_a);
  auto input = x * i * multiplier;
  if (has(mask)) {
    const auto padded = mask->logical_not().unsqueeze(-1);
    a = a.masked_fill(padded, 1);
    input = input.masked_fill(padded, 0);
  }
  return {a, input};
}

// Whether the fused CPU kernels take these operands: one float32 or float64 dtype throughout.
bool fused_applies(const at::Tensor& x, const at::Tensor& pre_a, const at::Tensor& pre_x, const at::Tensor& Lambda) {
  const auto t = Lambda.scalar_type();
  return x.device().is_cpu() && (t == at::kFloat || t == at::kDouble) && x.scalar_type() == t &&
         pre_a.scalar_type() == t && pre_x.scalar_type() == t;
}

std::tuple<at::Tensor, at::Tensor> rglru_gates_cpu(const at::Tensor& x_in, const at::Tensor& pre_a_in,
                                                   const at::Tensor& pre_x_in, const at::Tensor& Lambda, double c,
                                                   const std::optional<at::Tensor>& mask) {
  check_gates_inputs(x_in, pre_a_in, pre_x_in, Lambda, c, mask);
  if (!fused_applies(x_in, pre_a_in, pre_x_in, Lambda))
    return gates_composite(x_in, pre_a_in, pre_x_in, Lambda, c, mask);
  const auto x = x_in.contiguous(), pre_a = pre_a_in.contiguous(), pre_x = pre_x_in.contiguous();
  const auto sp = at::softplus(-Lambda).contiguous();
  const auto valid = has(mask) ? mask->contiguous() : at::Tensor();
  auto a = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto input = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t N = Lambda.size(0), rows = N == 0 ? 0 : x.numel() / N;
  if (rows == 0 || N == 0) return {a, input};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), kOp, [&] {
    cpu::of_best_isa(&cpu::avx512::rglru_gates_forward_kernel<scalar_t>,
                     &cpu::avx2::rglru_gates_forward_kernel<scalar_t>,
                     &cpu::baseline::rglru_gates_forward_kernel<scalar_t>)(
        x.const_data_ptr<scalar_t>(), pre_a.const_data_ptr<scalar_t>(), pre_x.const_data_ptr<scalar_t>(),
        sp.const_data_ptr<scalar_t>(), valid.defined() ? valid.const_data_ptr<bool>() : nullptr, scalar_t(c),
        scalar_t(tiny_of(x.scalar_type())), a.mutable_data_ptr<scalar_t>(), input.mutable_data_ptr<scalar_t>(), rows,
        N);
  });
  return {a, input};
}

std::tuple<at::Tensor, at::Tensor> rglru_gates_meta(const at::Tensor& x, const at::Tensor& pre_a,
                                                    const at::Tensor& pre_x, const at::Tensor& Lambda, double c,
                                                    const std::optional<at::Tensor>& mask) {
  check_gates_inputs(x, pre_a, pre_x, Lambda, c, mask);
  // The dtypes of gates_composite's results under type promotion.
  const auto a_type = at::promote_types(pre_a.scalar_type(), Lambda.scalar_type());
  const auto input_type = at::promote_types(at::promote_types(x.scalar_type(), pre_x.scalar_type()), a_type);
  return {at::empty_symint(x.sym_sizes(), x.options().dtype(a_type)),
          at::empty_symint(x.sym_sizes(), x.options().dtype(input_type))};
}

std::tuple<at::Tensor, at::Tensor> rglru_gates_other(const at::Tensor& x, const at::Tensor& pre_a,
                                                     const at::Tensor& pre_x, const at::Tensor& Lambda, double c,
                                                     const std::optional<at::Tensor>& mask) {
  check_gates_inputs(x, pre_a, pre_x, Lambda, c, mask);
  return gates_composite(x, pre_a, pre_x, Lambda, c, mask);
}

// The fused backward (CPU, the dtypes of fused_applies): (grad_x, grad_pre_a, grad_pre_x, grad_Lambda).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rglru_gates_backward_cpu(
    const at::Tensor& grad_a, const at::Tensor& grad_input, const at::Tensor& x_in, const at::Tensor& pre_a_in,
    const at::Tensor& pre_x_in, const at::Tensor& Lambda, double c, const std::optional<at::Tensor>& mask) {
  check_gates_inputs(x_in, pre_a_in, pre_x_in, Lambda, c, mask);
  TORCH_CHECK(fused_applies(x_in, pre_a_in, pre_x_in, Lambda), "torch_lru::rglru_gates_backward",
              ": x, pre_a, pre_x and Lambda must share one dtype, float32 or float64, got ", x_in.scalar_type(), ", ",
              pre_a_in.scalar_type(), ", ", pre_x_in.scalar_type(), ", ", Lambda.scalar_type());
  for (const auto& [name, g] :
       {std::pair<const char*, const at::Tensor&>{"grad_a", grad_a}, {"grad_input", grad_input}}) {
    TORCH_CHECK(g.defined() && g.sym_sizes() == x_in.sym_sizes() && g.scalar_type() == x_in.scalar_type() &&
                    g.device() == x_in.device(),
                "torch_lru::rglru_gates_backward: ", name, " must be ", x_in.scalar_type(), " ", x_in.sym_sizes(),
                " on ", x_in.device(), " (like x), got ", g.defined() ? g.scalar_type() : at::kFloat, " ",
                g.defined() ? g.sym_sizes() : c10::SymIntArrayRef(), " on ", g.defined() ? g.device() : x_in.device());
  }
  const auto x = x_in.contiguous(), pre_a = pre_a_in.contiguous(), pre_x = pre_x_in.contiguous();
  const auto ga = grad_a.contiguous(), gi = grad_input.contiguous();
  const auto sp = at::softplus(-Lambda).contiguous();
  const auto valid = has(mask) ? mask->contiguous() : at::Tensor();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gpa = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gpx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t N = Lambda.size(0), rows = N == 0 ? 0 : x.numel() / N;
  const int64_t blocks = (rows + cpu::kGateRowsPerBlock - 1) / cpu::kGateRowsPerBlock;
  auto partial = at::empty({blocks, N}, Lambda.options());
  if (rows > 0 && N > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "torch_lru::rglru_gates_backward", [&] {
      cpu::of_best_isa(&cpu::avx512::rglru_gates_backward_kernel<scalar_t>,
                       &cpu::avx2::rglru_gates_backward_kernel<scalar_t>,
                       &cpu::baseline::rglru_gates_backward_kernel<scalar_t>)(
          ga.const_data_ptr<scalar_t>(), gi.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          pre_a.const_data_ptr<scalar_t>(), pre_x.const_data_ptr<scalar_t>(), sp.const_data_ptr<scalar_t>(),
          valid.defined() ? valid.const_data_ptr<bool>() : nullptr, scalar_t(c), scalar_t(tiny_of(x.scalar_type())),
          gx.mutable_data_ptr<scalar_t>(), gpa.mutable_data_ptr<scalar_t>(), gpx.mutable_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<scalar_t>(), rows, N);
    });
  }
  // The blocks summed in order (deterministic: the last of the running sums), then
  // d softplus(-Lambda) / d Lambda = -sigmoid(-Lambda).
  const auto g_sp = blocks > 0 ? partial.cumsum(0).select(0, -1) : at::zeros_like(Lambda);
  return {gx, gpa, gpx, -g_sp * at::sigmoid(-Lambda)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rglru_gates_backward_meta(
    const at::Tensor& grad_a, const at::Tensor& grad_input, const at::Tensor& x, const at::Tensor& pre_a,
    const at::Tensor& pre_x, const at::Tensor& Lambda, double c, const std::optional<at::Tensor>& mask) {
  check_gates_inputs(x, pre_a, pre_x, Lambda, c, mask);
  return {at::empty_like(x), at::empty_like(x), at::empty_like(x), at::empty_like(Lambda)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rglru_gates_backward_op(
    const at::Tensor& grad_a, const at::Tensor& grad_input, const at::Tensor& x, const at::Tensor& pre_a,
    const at::Tensor& pre_x, const at::Tensor& Lambda, double c, const std::optional<at::Tensor>& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::rglru_gates_backward", "")
                       .typed<decltype(rglru_gates_backward_op)>();
  return op.call(grad_a, grad_input, x, pre_a, pre_x, Lambda, c, mask);
}

class GatesFunction : public torch::autograd::Function<GatesFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& pre_a,
                               const at::Tensor& pre_x, const at::Tensor& Lambda, double c,
                               const std::optional<at::Tensor>& mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [a, input] = rglru_gates(x, pre_a, pre_x, Lambda, c, mask);
    ctx->save_for_backward({x, pre_a, pre_x, Lambda, has(mask) ? *mask : at::Tensor()});
    ctx->saved_data["c"] = c;
    return {a, input};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &pre_a = saved[1], &pre_x = saved[2], &Lambda = saved[3];
    const std::optional<at::Tensor> mask = saved[4].defined() ? std::optional<at::Tensor>(saved[4]) : std::nullopt;
    const double c = ctx->saved_data["c"].toDouble();
    auto ga = grads[0].defined() ? grads[0] : at::zeros_like(x, Lambda.scalar_type());
    auto gi = grads[1].defined() ? grads[1] : at::zeros_like(x, Lambda.scalar_type());
    const bool create_graph = at::GradMode::is_enabled();
    if (!create_graph && fused_applies(x, pre_a, pre_x, Lambda) && ga.scalar_type() == x.scalar_type() &&
        gi.scalar_type() == x.scalar_type()) {
      auto [gx, gpa, gpx, glam] = rglru_gates_backward_op(ga, gi, x, pre_a, pre_x, Lambda, c, mask);
      return {gx, gpa, gpx, glam, at::Tensor(), at::Tensor()};
    }
    // The gradient of the ATen formula (double backward, other devices, mixed dtypes): recomputed
    // from the saved inputs, on the graph when create_graph asks for one.
    at::AutoGradMode enable(true);
    std::vector<at::Tensor> inputs;
    for (const auto& t : {x, pre_a, pre_x, Lambda}) {
      inputs.push_back(create_graph && t.requires_grad() ? t : t.detach().requires_grad_(true));
    }
    auto [a, input] = gates_composite(inputs[0], inputs[1], inputs[2], inputs[3], c, mask);
    auto g = torch::autograd::grad({a, input}, inputs, {ga, gi}, /*retain_graph=*/create_graph,
                                   /*create_graph=*/create_graph, /*allow_unused=*/true);
    return {g[0], g[1], g[2], g[3], at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> rglru_gates_autograd(const at::Tensor& x, const at::Tensor& pre_a,
                                                        const at::Tensor& pre_x, const at::Tensor& Lambda, double c,
                                                        const std::optional<at::Tensor>& mask) {
  auto out = GatesFunction::apply(x, pre_a, pre_x, Lambda, c, mask);
  return {out[0], out[1]};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rglru_gates(const at::Tensor& x, const at::Tensor& pre_a, const at::Tensor& pre_x,
                                               const at::Tensor& Lambda, double c,
                                               const std::optional<at::Tensor>& mask) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::rglru_gates", "").typed<decltype(rglru_gates)>();
  return op.call(x, pre_a, pre_x, Lambda, c, mask);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def(
      "rglru_gates(Tensor x, Tensor pre_a, Tensor pre_x, Tensor Lambda, float c=8.0, Tensor? mask=None) -> "
      "(Tensor, Tensor)");
  m.def(
      "rglru_gates_backward(Tensor grad_a, Tensor grad_input, Tensor x, Tensor pre_a, Tensor pre_x, Tensor Lambda, "
      "float c, Tensor? mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("rglru_gates", &rglru_gates_cpu);
  m.impl("rglru_gates_backward", &rglru_gates_backward_cpu);
}

TORCH_LIBRARY_IMPL(torch_lru, Meta, m) {
  m.impl("rglru_gates", &rglru_gates_meta);
  m.impl("rglru_gates_backward", &rglru_gates_backward_meta);
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeExplicitAutograd, m) { m.impl("rglru_gates", &rglru_gates_other); }

TORCH_LIBRARY_IMPL(torch_lru, Autograd, m) { m.impl("rglru_gates", &rglru_gates_autograd); }

}  // namespace torch_lru

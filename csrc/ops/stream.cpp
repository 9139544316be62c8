// The streaming ops (see torch_lru/stream.h): composite, so they run on every backend and under
// autograd; written once for the Python and the C++ blocks.
#include "torch_lru/stream.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "torch_lru/lru.h"

namespace torch_lru {
namespace {

at::Tensor normalise(const at::Tensor& x, const std::string& norm, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                     const std::optional<at::Tensor>& running_var, double eps) {
  const char* op = "torch_lru::lru_block_step";
  const int64_t H = x.size(-1);
  if (norm == "layer") return at::layer_norm(x, {H}, weight, bias, eps);
  if (norm == "rms") return at::rms_norm(x, {H}, weight, eps);
  TORCH_CHECK(norm == "batch", op, ": norm must be one of {batch, layer, rms}, got \"", norm, "\"");
  TORCH_CHECK(running_mean.has_value() && running_var.has_value(), op,
              ": a batch norm steps with its running mean and variance");
  return at::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, /*momentum=*/0.0, eps,
                        /*cudnn_enabled=*/true);
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_composite(
    const at::Tensor& x_t, c10::string_view norm_kind, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  TORCH_CHECK(x_t.defined() && x_t.dim() == 2, "torch_lru::lru_block_step: x_t must have shape (B, H), got ",
              x_t.defined() ? x_t.sizes() : at::IntArrayRef());
  const std::string norm(norm_kind);
  auto normed = [&](const at::Tensor& t) {
    return normalise(t, norm, norm_weight, norm_bias, running_mean, running_var, eps);
  };
  auto [y, new_state] = lru_step_packed(prenorm ? normed(x_t) : x_t, lam, W_in, W_out, D, state);
  auto out = x_t + at::glu(at::linear(at::gelu(y), glu_weight, glu_bias), -1);
  return {prenorm ? out : normed(out), new_state};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lru_block_step(
    const at::Tensor& x_t, const std::string& norm, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::lru_block_step", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, c10::string_view, const at::Tensor&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, double, bool,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(x_t, norm, norm_weight, norm_bias, running_mean, running_var, eps, prenorm, lam, W_in, W_out, D,
                 glu_weight, glu_bias, state);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def(
      "lru_block_step(Tensor x_t, str norm, Tensor norm_weight, Tensor? norm_bias, Tensor? running_mean, "
      "Tensor? running_var, float eps, bool prenorm, Tensor lam, Tensor W_in, Tensor W_out, Tensor? D, "
      "Tensor glu_weight, Tensor glu_bias, Tensor? state=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeImplicitAutograd, m) { m.impl("lru_block_step", &lru_block_step_composite); }

}  // namespace torch_lru

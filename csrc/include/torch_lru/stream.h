// Streaming inference, one token at a time: an LRUBlock's whole step (norm, the LRU's packed step,
// GELU, GLU, residual) as one op, so that a streaming model pays one dispatch per block rather
// than one per small op. The Python block (torch_lru.modules.LRUBlock.step) and the C++ block
// (torch_lru/modules.h) both call it; its math is theirs, op for op.
#pragma once

#include <optional>
#include <string>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace torch_lru {

// x_t (B, H) -> (y_t (B, H), new state (B, N) complex). norm: "layer" (weight, bias), "rms"
// (weight) or "batch" (weight, bias and the running mean and variance: evaluation mode); eps is the
// norm's. lam, W_in, W_out from lru_step_weights (torch_lru/lru.h); D the LRU's skip; glu_weight
// (2H, H) and glu_bias (2H) the block's GLU. state undefined: zero.
std::tuple<at::Tensor, at::Tensor> lru_block_step(
    const at::Tensor& x_t, const std::string& norm, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state = std::nullopt);

}  // namespace torch_lru

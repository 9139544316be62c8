// Streaming inference, one token at a time: an LRUBlock's whole step (norm, the LRU's packed step,
// GELU, GLU, residual) as one op, so that a streaming model pays one dispatch per block rather
// than one per small op. The Python block (torch_lru.modules.LRUBlock.step) and the C++ block
// (torch_lru/modules.h) both call it; its math is theirs, op for op.
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

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

// The end of a model's step, the same for every layer: the pooling's running state (mean: the sum
// and the count of valid tokens; last: the last valid output; none: this token's), and, where
// mask_t is false, every block's state restored from `state`. state: each block's state before
// this token, then pooled (B, H), then count (B,); blocks: each block's state after it. Returns
// (the features the decoder reads (B, H), the new state in state's layout).
std::tuple<at::Tensor, std::vector<at::Tensor>> stream_finish(const at::Tensor& z, const std::vector<at::Tensor>& state,
                                                              const std::vector<at::Tensor>& blocks,
                                                              const std::string& pooling,
                                                              const std::optional<at::Tensor>& mask_t = std::nullopt);

// A whole step of a model of LRU blocks as one op: the encoder (an embedding when vocab_size > 0,
// the token ids checked against it unless check_ids is false, as while capturing a CUDA graph or
// tracing; else a linear map of features), every block
// (lru_block_step; params as lru_blocks_step takes them: per block norm weight, norm bias, running
// mean, running variance, lam, W_in, W_out, D, GLU weight, GLU bias, undefined where absent),
// stream_finish and the decoder. Returns (logits (B, d_output), new state).
std::tuple<at::Tensor, std::vector<at::Tensor>> lru_model_step(
    const at::Tensor& x_t, const at::Tensor& encoder_weight, const std::optional<at::Tensor>& encoder_bias,
    int64_t vocab_size, const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& state,
    const std::string& norm, double eps, bool prenorm, const std::string& pooling, const at::Tensor& decoder_weight,
    const at::Tensor& decoder_bias, const std::optional<at::Tensor>& mask_t = std::nullopt, bool check_ids = true);

}  // namespace torch_lru

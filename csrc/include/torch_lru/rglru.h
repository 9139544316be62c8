// The RG-LRU layer of Griffin and Hawk (De et al., "Griffin: Mixing Gated Linear Recurrences with
// Local Attention for Efficient Language Models", 2024, section 2.4 and figure 2), as functions of
// its parameters: the one implementation of its math and its initialisation, registered as ops
// (torch.ops.torch_lru.rglru_*) that the Python layer (torch_lru.layers.RGLRU) and the C++ layer
// (torch_lru/layers.h) both call.
//
// The recurrence (the paper's equations 1-4), over a width-N sequence x_t:
//   r_t = sigmoid(W_a x_t + b_a)            recurrence gate (W_a block-diagonal, n_blocks blocks)
//   i_t = sigmoid(W_x x_t + b_x)            input gate      (W_x block-diagonal)
//   log a_t = -c r_t softplus(-Lambda)      a_t = a^(c r_t) with a = sigmoid(Lambda), c = 8
//   h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)
// computed by the scan op with a per-step real coefficient. The layer around it is the paper's
// recurrent (temporal-mixing) block, d_model H -> d_state N -> H:
//   y = W_out (GeLU(W_in_gate u + b_in_gate) * RG-LRU(Conv1D(W_in_x u + b_in_x))) + b_out
// with a causal depthwise Conv1D of width 4 (y_t = conv_bias + sum_j conv_weight[j] x_{t-j}).
// A bidirectional layer adds a second Conv1D (anti-causal) and RG-LRU run from the last step to
// the first (parameters *_rev), summed with the first before the gate.
//
// State (unidirectional layers): one real tensor (B, 4, N): rows 0-2 the convolution's last three
// inputs (oldest first), row 3 the RG-LRU's h.
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace torch_lru {

inline constexpr int64_t kRGLRUConvWidth = 4;  // the paper's temporal filter width
inline constexpr double kRGLRUc = 8.0;         // the paper's c

// The layer's parameter names, in rglru_init's order:
//   W_in_x (N, H), b_in_x (N), W_in_gate (N, H), b_in_gate (N), W_out (H, N), b_out (H), then per
//   direction conv_weight (4, N), conv_bias (N), Lambda (N), W_a (n_blocks, N/n_blocks, N/n_blocks),
//   b_a (N), W_x (like W_a), b_x (N); the reverse direction's names end in "_rev".
std::vector<std::string> rglru_parameter_names(bool bidirectional);

// Fresh parameters (named by rglru_parameter_names). Lambda: a^c uniform in [a_min, a_max] (the
// paper's initialisation, section 2.4; 0 < a_min <= a_max < 1). The weights as RecurrentGemma's
// reference implementation draws them: W_in_x, W_in_gate ~ N(0, 1/H), W_out ~ N(0, 1/N), the gate
// blocks ~ N(0, n_blocks/N), conv_weight ~ N(0, 0.01/4), every bias zero. Random draws in that
// order (the reverse direction after the forward one) from `generator` (default: the global one).
std::vector<at::Tensor> rglru_init(int64_t d_model, int64_t d_state, int64_t n_blocks = 1, double a_min = 0.9,
                                   double a_max = 0.999, bool bidirectional = false,
                                   std::optional<at::ScalarType> dtype = std::nullopt,
                                   std::optional<at::Device> device = std::nullopt,
                                   std::optional<at::Generator> generator = std::nullopt);

// The RG-LRU recurrence over x (B, L, N) real: returns (h (B, L, N), final h (B, N)). state: h
// before the first step (B, N) (zero when omitted). mask (B, L) bool, true at valid positions: a
// padded step leaves h unchanged (a_t = 1, no input), so the final h is the one after the last
// valid step. reverse: from t = L-1 down to 0.
std::tuple<at::Tensor, at::Tensor> rglru_recurrence(const at::Tensor& x, const at::Tensor& Lambda,
                                                    const at::Tensor& W_a, const at::Tensor& b_a, const at::Tensor& W_x,
                                                    const at::Tensor& b_x, double c = kRGLRUc,
                                                    const std::optional<at::Tensor>& state = std::nullopt,
                                                    const std::optional<at::Tensor>& mask = std::nullopt,
                                                    bool reverse = false);

// The recurrence's coefficient and input from the gate pre-activations (x, pre_a = x W_a + b_a,
// pre_x = x W_x + b_x, all (..., N)): a = exp(-c sigmoid(pre_a) softplus(-Lambda)) and
// input = sqrt(1 - a^2) * sigmoid(pre_x) * x. mask (x's shape without N) bool: false marks padding,
// where a = 1 and input = 0. Fused into one pass (and one for the backward) on the CPU.
std::tuple<at::Tensor, at::Tensor> rglru_gates(const at::Tensor& x, const at::Tensor& pre_a, const at::Tensor& pre_x,
                                               const at::Tensor& Lambda, double c = kRGLRUc,
                                               const std::optional<at::Tensor>& mask = std::nullopt);

// The convolution's taps over an input padded with the K-1 inputs before the first step: padded
// (B, L+K-1, N), weight (K, N), bias (N) -> y (B, L, N), y_t = sum_j weight[j] padded[t+K-1-j]
// (padded[t+j] when reverse) + bias, summed in the order of j. One fused pass on the CPU.
at::Tensor conv_taps(const at::Tensor& padded, const at::Tensor& weight, const at::Tensor& bias, bool reverse = false);

// Depthwise Conv1D over time of x (B, L, N) with weight (K, N) and bias (N):
// y_t = bias + sum_j weight[j] x_{t-j} (x_{t+j} when reverse). state (B, K-1, N): the inputs
// before t = 0, oldest first (zero when omitted; not with reverse). Inputs at masked positions
// count as zero. Returns (y, final state): the K-1 inputs ending at the last valid position.
std::tuple<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                                 const std::optional<at::Tensor>& state = std::nullopt,
                                                 const std::optional<at::Tensor>& mask = std::nullopt,
                                                 bool reverse = false);

// The layer over u (B, L, H) real, params in rglru_parameter_names(bidirectional) order: returns
// (y (B, L, H), final state (B, 4, N)); state (B, 4, N) as above (zero when omitted). A
// bidirectional layer takes no state and returns an undefined one. mask as rglru_recurrence's:
// padding never changes an output at a valid position. Under autocast the projections run in the
// autocast dtype while the convolution and the recurrence stay in the parameters' dtype.
std::tuple<at::Tensor, at::Tensor> rglru_forward(const at::Tensor& u, const std::vector<at::Tensor>& params,
                                                 bool bidirectional, double c = kRGLRUc,
                                                 const std::optional<at::Tensor>& state = std::nullopt,
                                                 const std::optional<at::Tensor>& mask = std::nullopt);

// One token u_t (B, H) of a unidirectional layer -> (y_t (B, H), new state (B, 4, N)).
std::tuple<at::Tensor, at::Tensor> rglru_step(const at::Tensor& u_t, const std::vector<at::Tensor>& params,
                                              double c = kRGLRUc,
                                              const std::optional<at::Tensor>& state = std::nullopt);

}  // namespace torch_lru

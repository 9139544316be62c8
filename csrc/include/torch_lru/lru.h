// The LRU layer as functions of its parameters: the one implementation of the layer's math and of
// its initialisation, registered as ops (torch.ops.torch_lru.lru_init / lru / lru_step, and the
// generic diag_recurrence) that the Python module and the C++ module (torch_lru/modules.h) call.
//
// Parameters (names and shapes shared by both modules and their checkpoints), for d_model H and
// d_state N: nu_log, theta_log, gamma_log (N); B_re, B_im (N, H); C_re, C_im (H, N); D (H).
//   lambda = exp(-exp(nu_log) + i exp(theta_log))
//   x_k    = lambda * x_{k-1} + exp(gamma_log) * (B u_k),   B = B_re + i B_im
//   y_k    = Re(C x_k) + D * u_k,                            C = C_re + i C_im
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace torch_lru {

inline constexpr double kTwoPi = 6.283185307179586;

// lambda = exp(-exp(nu_log) + i exp(theta_log)), complex: the LRU's eigenvalues, and diag_exp's.
at::Tensor eigenvalues(const at::Tensor& nu_log, const at::Tensor& theta_log);

// Draws the parameters of one LRU direction (paper, Lemma 3.2): lambda uniform on the ring
// r_min <= |lambda| <= r_max with phase in [0, max_phase); gamma_log = log sqrt(1 - |lambda|^2);
// B ~ N(0, 1) / sqrt(2 H); C ~ N(0, 1) / sqrt(N); D ~ N(0, 1). Random draws in this order: u1 (N),
// u2 (N), B_re, B_im, C_re, C_im, D, from `generator` (or the default generator, which Python's
// torch.manual_seed and C++'s torch::manual_seed both seed). Returns
// {nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D}; dtype float32 (default) or float64.
std::vector<at::Tensor> lru_init(int64_t d_model, int64_t d_state, double r_min = 0.0, double r_max = 1.0,
                                 double max_phase = kTwoPi, std::optional<at::ScalarType> dtype = std::nullopt,
                                 std::optional<at::Device> device = std::nullopt,
                                 std::optional<at::Generator> generator = std::nullopt);

// The layer over a sequence u (B, L, H), real. state: the state before the first step (B, N),
// complex (zero when omitted). mask (B, L) bool, true at valid positions: inputs at other positions
// are zeroed, so padding never changes an output at a valid position, in either direction (the
// outputs at padded positions are not meaningful). reverse: run the recurrence from t = L-1 down to
// 0. D may be omitted (no skip term), as for the second direction of a bidirectional layer.
// Returns (y (B, L, H), final_state (B, N)): the state after the last valid step the recurrence
// took (t = L-1, or 0 when reverse; with a mask, the last or first valid position; `state` where a
// row has none). Differentiable in every tensor argument but mask. Under autocast the two
// projections run in the autocast dtype while the recurrence stays in complex64.
std::tuple<at::Tensor, at::Tensor> lru_forward(const at::Tensor& u, const at::Tensor& nu_log,
                                               const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                               const at::Tensor& B_re, const at::Tensor& B_im, const at::Tensor& C_re,
                                               const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                               const std::optional<at::Tensor>& state = std::nullopt,
                                               const std::optional<at::Tensor>& mask = std::nullopt,
                                               bool reverse = false);

// The same layer for any eigenvalues lam (N,) (complex, of the parameters' complex dtype) and an
// input matrix B = B_re + i B_im used as given (no gamma): x_k = lam * x_{k-1} + B u_k,
// y_k = Re(C x_k) + D u_k. For recurrences parameterised otherwise than the LRU (ablations,
// discretised state-space layers); same state, mask and reverse semantics as lru_forward.
std::tuple<at::Tensor, at::Tensor> diag_recurrence(const at::Tensor& u, const at::Tensor& lam, const at::Tensor& B_re,
                                                   const at::Tensor& B_im, const at::Tensor& C_re,
                                                   const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                                   const std::optional<at::Tensor>& state = std::nullopt,
                                                   const std::optional<at::Tensor>& mask = std::nullopt,
                                                   bool reverse = false);

// One step of the recurrence for u_t (B, H): returns (y_t (B, H), new state (B, N)), in O(N H) per
// row. Stepping through a sequence gives lru_forward's outputs to rounding.
std::tuple<at::Tensor, at::Tensor> lru_step(const at::Tensor& u_t, const at::Tensor& nu_log,
                                            const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                            const at::Tensor& B_re, const at::Tensor& B_im, const at::Tensor& C_re,
                                            const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                            const std::optional<at::Tensor>& state = std::nullopt);

// The step's weights packed once for a stream of steps: (lam (N,) complex, W_in (2N, H), W_out
// (H, 2N)), W_in holding exp(gamma_log) * B with its real and imaginary rows interleaved and W_out
// such that Re(C x) = W_out x read as interleaved pairs. lru_step = lru_step_weights, then
// lru_step_packed; a streaming module packs once per parameter update instead of per token.
std::tuple<at::Tensor, at::Tensor, at::Tensor> lru_step_weights(const at::Tensor& nu_log, const at::Tensor& theta_log,
                                                                const at::Tensor& gamma_log, const at::Tensor& B_re,
                                                                const at::Tensor& B_im, const at::Tensor& C_re,
                                                                const at::Tensor& C_im);
std::tuple<at::Tensor, at::Tensor> lru_step_packed(const at::Tensor& u_t, const at::Tensor& lam, const at::Tensor& W_in,
                                                   const at::Tensor& W_out, const std::optional<at::Tensor>& D,
                                                   const std::optional<at::Tensor>& state = std::nullopt);

// One step of diag_recurrence for u_t (B, H): (y_t (B, H), new state (B, N)).
std::tuple<at::Tensor, at::Tensor> diag_step(const at::Tensor& u_t, const at::Tensor& lam, const at::Tensor& B_re,
                                             const at::Tensor& B_im, const at::Tensor& C_re, const at::Tensor& C_im,
                                             const std::optional<at::Tensor>& D,
                                             const std::optional<at::Tensor>& state = std::nullopt);

}  // namespace torch_lru

// The math of the paper's ablation layers, once: their initialisation, their discretisation and
// their recurrences, as composite ops (torch.ops.torch_lru.*) that the Python layers
// (python/torch_lru/layers/) and the C++ layers (torch_lru/layers.h) both call. One seed gives the
// same parameters in both languages, because both draw them here.
//
// Layers (layer_names()):
//   tanh_rnn      x_k = tanh(W_ih u_k + b_ih + W_hh x_{k-1} + b_hh), y_k = W_out x_k + D u_k
//   linear_dense  x_k = A x_{k-1} + B u_k with a dense real A (Glorot), y_k = C x_k + D u_k
//   diag_complex  the LRU's recurrence, lambda's real and imaginary parts the parameters, no gamma
//   diag_exp      lambda = exp(-exp(nu_log) + i exp(theta_log)), no gamma
//   lru           the LRU (torch_lru/lru.h)
//   s5, s4d       x' = Lambda x + B u, Lambda = -exp(a_log) + i omega, discretised by zero-order hold
//                 with steps exp(log_step); S5 from HiPPO-N's eigenvalues, S4D from S4D-Lin
//   rglru         Griffin's gated RG-LRU in its recurrent block (torch_lru/rglru.h)
// Parameters of the reverse direction of a bidirectional layer carry the suffix "_rev".
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

// The layer names, in the ablation's order; check_layer throws c10::Error listing them.
std::vector<std::string> layer_names();
void check_layer(const std::string& name);

// (lambda, B_bar) = (exp(Delta Lambda), (lambda - 1) / Lambda * B) with Delta = exp(log_step):
// Lambda (N,) complex, log_step (N,), B (N, H) complex.
std::tuple<at::Tensor, at::Tensor> zoh(const at::Tensor& Lambda, const at::Tensor& log_step, const at::Tensor& B);
// The n eigenvalues with positive imaginary part of HiPPO-LegS's normal part (size 2n), by
// increasing imaginary part: S5's initial Lambda (float64).
at::Tensor hippo_n_eigenvalues(int64_t n);

// The names of the parameters layer_init draws for `layer` (diag_complex, diag_exp, s5, s4d,
// linear_dense), in its order: what a module registers.
std::vector<std::string> layer_parameter_names(const std::string& layer, bool bidirectional);
// The parameters of one direction of a diagonal layer that diagonal_forward takes, in order:
//   diag_complex: lam_re, lam_im, B_re, B_im     diag_exp: nu_log, theta_log, B_re, B_im
//   s5, s4d: a_log, omega, log_step, B_re, B_im
std::vector<std::string> diagonal_direction_names(const std::string& layer);
// Fresh parameters of `layer`, named by layer_parameter_names. Diagonal layers: C ~ N(0, 1/N)
// (complex, per direction), D ~ N(0, 1); diag_complex and diag_exp draw lambda on the LRU's ring
// and B as the LRU does; s5: B ~ complex N(0, 1/(2H)), shared by both directions; s4d: B = 1/sqrt(H);
// s5 and s4d: log steps uniform in [log 1e-3, log 1e-1]. linear_dense: A Glorot-normal,
// B ~ N(0, 1/H), C ~ N(0, 1/N) per direction, then D ~ N(0, 1). Draws from `generator` (default:
// the global generator). float32 unless dtype says float64.
std::vector<at::Tensor> layer_init(const std::string& layer, int64_t d_model, int64_t d_state, double r_min,
                                   double r_max, double max_phase, bool bidirectional,
                                   std::optional<at::ScalarType> dtype = std::nullopt,
                                   std::optional<at::Device> device = std::nullopt,
                                   std::optional<at::Generator> generator = std::nullopt);

// (lambda (N,) complex, B_re (N, H), B_im (N, H)) of one direction of a diagonal layer, from its
// parameters in diagonal_direction_names order.
std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_discretise(const std::string& layer,
                                                                   const std::vector<at::Tensor>& params);
// One direction of a diagonal layer over u (B, L, H): the diagonal recurrence (torch_lru/lru.h's
// diag_recurrence) of its discretised lambda and B, read out by C, plus D u when D is given.
at::Tensor diagonal_forward(const at::Tensor& u, const std::string& layer, const std::vector<at::Tensor>& params,
                            const at::Tensor& C_re, const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                            const std::optional<at::Tensor>& mask, bool reverse);
// One direction of linear_dense without its skip term: C x_k with x_k = A x_{k-1} + B u_k (inputs
// at masked positions zeroed), a loop over time (the scan covers diagonal recurrences only).
at::Tensor dense_recurrence(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                            const std::optional<at::Tensor>& mask, bool reverse);
// tanh_rnn over u (B, L, H): the states of a one-layer tanh RNN with `weights` in torch's order
// (w_ih, w_hh, b_ih, b_hh, then the reverse direction's), read out by W_out, plus D u. A mask must
// mark a valid prefix of each row; rows are then packed to their lengths. `train` as the module's
// training flag (cuDNN's backward needs a training-mode forward).
at::Tensor tanh_rnn(const at::Tensor& u, const std::optional<at::Tensor>& mask, const std::vector<at::Tensor>& weights,
                    bool bidirectional, bool train, const at::Tensor& W_out, const at::Tensor& D);

// One token u_t (B, H) of one direction of a layer -> (y_t (B, H), new state (B, N)); the state is
// complex for the diagonal layers, real for linear_dense and tanh_rnn (undefined: zero). Stepping
// through a sequence gives the layer's forward outputs to rounding.
std::tuple<at::Tensor, at::Tensor> diagonal_step(const at::Tensor& u_t, const std::string& layer,
                                                 const std::vector<at::Tensor>& params, const at::Tensor& C_re,
                                                 const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                                 const std::optional<at::Tensor>& state = std::nullopt);
std::tuple<at::Tensor, at::Tensor> dense_step(const at::Tensor& u_t, const at::Tensor& A, const at::Tensor& B,
                                              const at::Tensor& C, const at::Tensor& D,
                                              const std::optional<at::Tensor>& state = std::nullopt);
// weights: w_ih, w_hh, b_ih, b_hh of the forward direction (torch's order).
std::tuple<at::Tensor, at::Tensor> tanh_rnn_step(const at::Tensor& u_t, const std::vector<at::Tensor>& weights,
                                                 const at::Tensor& W_out, const at::Tensor& D,
                                                 const std::optional<at::Tensor>& state = std::nullopt);

}  // namespace torch_lru

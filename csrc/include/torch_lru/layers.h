// The recurrent layers as torch::nn modules, for LibTorch programs: the LRU and the layers of the
// paper's ablation (torch_lru/layer_math.h lists them). Each is a thin module over the ops that
// hold its math (torch_lru/lru.h, torch_lru/layer_math.h), which the Python layers
// (python/torch_lru/layers/) call too: the same parameter names, the same draws for one seed, the
// same outputs. Every layer takes u (B, L, H) real and an optional mask (B, L) bool and returns
// y (B, L, H). The residual block and the model around them are in torch_lru/modules.h.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include <torch/torch.h>

#include "torch_lru/layer_math.h"
#include "torch_lru/lru.h"
#include "torch_lru/rglru.h"

namespace torch_lru {

// The options of a recurrent layer; each layer reads those that apply to it (the ring for the
// LRU, diag_complex and diag_exp; the sizes and bidirectional for all).
struct LRUOptions {
  LRUOptions(int64_t d_model, int64_t d_state) : d_model_(d_model), d_state_(d_state) {}
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, d_state);
  TORCH_ARG(double, r_min) = 0.0;
  TORCH_ARG(double, r_max) = 1.0;
  TORCH_ARG(double, max_phase) = kTwoPi;
  // A second direction, run from the last step to the first, with its own *_rev parameters (all
  // but D); the two directions' outputs are summed.
  TORCH_ARG(bool, bidirectional) = false;
  // rglru only: the gates' number of diagonal blocks (a divisor of d_state) and the initial a^c's range.
  TORCH_ARG(int64_t, gate_blocks) = 1;
  TORCH_ARG(double, a_min) = 0.9;
  TORCH_ARG(double, a_max) = 0.999;
};

// Linear Recurrent Unit over real sequences u (B, L, H). Parameters: nu_log, theta_log, gamma_log
// (N); B_re, B_im (N, H); C_re, C_im (H, N); D (H); and *_rev copies when bidirectional.
class LRUImpl : public torch::nn::Cloneable<LRUImpl> {
 public:
  explicit LRUImpl(LRUOptions options);
  LRUImpl(int64_t d_model, int64_t d_state) : LRUImpl(LRUOptions(d_model, d_state)) {}

  // Draws every parameter (the forward direction first).
  void reset() override;

  // y (B, L, H). mask (B, L) bool, true at valid positions (undefined: all valid).
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // (y, final state): state is the complex (B, N) state before the first step (undefined: zero).
  // Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> forward_with_state(const torch::Tensor& u, const torch::Tensor& state = {},
                                                              const torch::Tensor& mask = {});
  // One token u_t (B, H) -> (y_t, new state). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& u_t, const torch::Tensor& state = {});
  // The zero state (batch, N), complex.
  torch::Tensor init_state(int64_t batch) const;
  // (lam, W_in, W_out) of lru_step_weights. Without autograd (GradMode off) they are packed once and
  // kept until a parameter changes (its storage or version), so a stream of steps packs them once.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> step_weights() const;
  // lambda (N,), complex.
  torch::Tensor eigenvalues(bool reverse = false) const;

  void pretty_print(std::ostream& stream) const override;

  LRUOptions options;

 private:
  struct Direction {
    torch::Tensor nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im;
  };
  std::tuple<torch::Tensor, torch::Tensor> run(const torch::Tensor& u, const torch::Tensor& state,
                                               const torch::Tensor& mask);
  Direction forward_, reverse_;
  torch::Tensor D_;
  mutable std::vector<std::pair<const void*, uint32_t>> packed_key_;
  mutable std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> packed_;

 public:
  const torch::Tensor& D() const { return D_; }
};
TORCH_MODULE(LRU);

// diag_complex, diag_exp, s5 and s4d: parameters from layer_init, forward by diagonal_forward.
class DiagonalLayerImpl : public torch::nn::Cloneable<DiagonalLayerImpl> {
 public:
  DiagonalLayerImpl(std::string kind, const LRUOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // (lambda (N,) complex, B_re (N, H), B_im (N, H)) of one direction.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> discretised(bool reverse) const;
  // One token u_t (B, H) -> (y_t, new state (B, N) complex). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& u_t, const torch::Tensor& state = {});
  torch::Tensor init_state(int64_t batch) const;

  std::string kind;
  LRUOptions options;

 private:
  std::vector<torch::Tensor> direction(bool reverse) const;
};
TORCH_MODULE(DiagonalLayer);

// tanh_rnn: torch::nn::RNN's parameters (submodule "rnn"), a bias-free read-out ("out") and D;
// forward by the tanh_rnn op. A mask must mark a valid prefix of each row.
class TanhRNNImpl : public torch::nn::Cloneable<TanhRNNImpl> {
 public:
  TanhRNNImpl(int64_t d_model, int64_t d_state, bool bidirectional);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // One token u_t (B, H) -> (y_t, new state (B, N)). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& u_t, const torch::Tensor& state = {});
  torch::Tensor init_state(int64_t batch) const;

  int64_t d_model, d_state;
  bool bidirectional;
  torch::nn::RNN rnn{nullptr};
  torch::nn::Linear out{nullptr};
  torch::Tensor D;
};
TORCH_MODULE(TanhRNN);

// linear_dense: parameters from layer_init, forward by dense_recurrence per direction plus D u.
class LinearDenseImpl : public torch::nn::Cloneable<LinearDenseImpl> {
 public:
  LinearDenseImpl(int64_t d_model, int64_t d_state, bool bidirectional);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // One token u_t (B, H) -> (y_t, new state (B, N)). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& u_t, const torch::Tensor& state = {});
  torch::Tensor init_state(int64_t batch) const;

  int64_t d_model, d_state;
  bool bidirectional;
};
TORCH_MODULE(LinearDense);

// rglru: Griffin's recurrent block around the RG-LRU (torch_lru/rglru.h), d_model -> d_state ->
// d_model; parameters from rglru_init under rglru_parameter_names, forward by the rglru op. The
// state of a unidirectional layer is one (B, 4, d_state) tensor: the convolution's last three
// inputs, then h.
class RGLRUImpl : public torch::nn::Cloneable<RGLRUImpl> {
 public:
  explicit RGLRUImpl(LRUOptions options);
  RGLRUImpl(int64_t d_model, int64_t d_state) : RGLRUImpl(LRUOptions(d_model, d_state)) {}
  void reset() override;
  // y (B, L, H); mask (B, L) bool, true at valid positions (undefined: all valid).
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // (y, final state) from a state (undefined: zero). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> forward_with_state(const torch::Tensor& u, const torch::Tensor& state = {},
                                                              const torch::Tensor& mask = {});
  // One token u_t (B, H) -> (y_t, new state). Unidirectional layers only.
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& u_t, const torch::Tensor& state = {});
  // The zero state (batch, 4, d_state).
  torch::Tensor init_state(int64_t batch) const;
  void pretty_print(std::ostream& stream) const override;

  LRUOptions options;

 private:
  std::vector<torch::Tensor> params() const;
};
TORCH_MODULE(RGLRU);

// One token through any of the layers above, held in `layer` (what make_layer returns):
// (y_t, new state), and the layer's zero state.
std::tuple<torch::Tensor, torch::Tensor> step_layer(torch::nn::AnyModule& layer, const torch::Tensor& u_t,
                                                    const torch::Tensor& state);
torch::Tensor init_layer_state(torch::nn::AnyModule& layer, int64_t batch);

// The layer called `name` (one of layer_names() but "lru": a block holds the LRU itself, as the
// submodule "lru"), built from the options that apply to it.
torch::nn::AnyModule make_layer(const std::string& name, const LRUOptions& options);

}  // namespace torch_lru

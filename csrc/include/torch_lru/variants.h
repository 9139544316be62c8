// The recurrent layers of the paper's ablation for LibTorch programs, twins of
// python/torch_lru/variants.py: the same names, parameters, draws (one seed gives the same values
// in both languages) and outputs. LRUBlockOptions::layer / LRUModelOptions::layer choose one; the
// block around it stays the same.
//   tanh_rnn      torch::nn::RNN (tanh) + a linear read-out + D u
//   linear_dense  x_k = A x_{k-1} + B u_k, dense real A (Glorot), a loop over time
//   diag_complex  complex diagonal lambda with its real and imaginary parts as parameters
//   diag_exp      lambda = exp(-exp(nu_log) + i exp(theta_log)), no gamma
//   lru           the LRU (torch_lru::LRU, modules.h)
//   s5, s4d       zero-order-hold diagonal state-space layers (HiPPO-N / S4D-Lin eigenvalues)
// Every layer but the LRU takes (u (B, L, H), mask (B, L) or undefined) and returns y (B, L, H).
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include <torch/torch.h>

#include "torch_lru/lru.h"

namespace torch_lru {

struct LRUOptions;

// The layer names, in the ablation's order.
const std::vector<std::string>& layer_names();
// Throws c10::Error listing the valid names unless `name` is one.
void check_layer(const std::string& name);

// (lambda, B_bar) = (exp(Delta Lambda), (lambda - 1) / Lambda * B) with Delta = exp(log_step):
// Lambda (N,) complex, log_step (N,), B (N, H) complex.
std::tuple<torch::Tensor, torch::Tensor> zoh(const torch::Tensor& Lambda, const torch::Tensor& log_step,
                                             const torch::Tensor& B);
// The n eigenvalues with positive imaginary part of HiPPO-LegS's normal part (size 2n), by
// increasing imaginary part: S5's initial Lambda.
torch::Tensor hippo_n_eigenvalues(int64_t n);

// diag_complex, diag_exp, s5 and s4d: lambda and B from the kind, C and D as in the LRU, on the
// torch_lru::diag_recurrence op. Parameters of the reverse direction carry the suffix "_rev".
class DiagonalLayerImpl : public torch::nn::Cloneable<DiagonalLayerImpl> {
 public:
  DiagonalLayerImpl(std::string kind, const LRUOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});
  // (lambda (N,) complex, B_re (N, H), B_im (N, H)) of one direction.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> discretised(bool reverse) const;

  std::string kind;
  int64_t d_model, d_state;
  double r_min, r_max, max_phase;
  bool bidirectional;

 private:
  torch::Tensor get(const std::string& name, bool reverse) const;
};
TORCH_MODULE(DiagonalLayer);

// tanh_rnn: states of torch::nn::RNN, read out by a bias-free Linear, plus D u. A mask must mark a
// valid prefix of each row; rows are packed to their lengths.
class TanhRNNImpl : public torch::nn::Cloneable<TanhRNNImpl> {
 public:
  TanhRNNImpl(int64_t d_model, int64_t d_state, bool bidirectional);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});

  int64_t d_model, d_state;
  bool bidirectional;
  torch::nn::RNN rnn{nullptr};
  torch::nn::Linear out{nullptr};
  torch::Tensor D;
};
TORCH_MODULE(TanhRNN);

// linear_dense: x_k = A x_{k-1} + B u_k, y = C x + D u, a loop over time.
class LinearDenseImpl : public torch::nn::Cloneable<LinearDenseImpl> {
 public:
  LinearDenseImpl(int64_t d_model, int64_t d_state, bool bidirectional);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& u, const torch::Tensor& mask = {});

  int64_t d_model, d_state;
  bool bidirectional;
  torch::Tensor D;
};
TORCH_MODULE(LinearDense);

// The layer called `name` (not "lru": the block holds the LRU itself, as submodule "lru").
torch::nn::AnyModule make_layer(const std::string& name, const LRUOptions& options);

}  // namespace torch_lru

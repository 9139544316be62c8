// The residual block and the deep model as torch::nn modules, for LibTorch programs, above the
// recurrent layers of torch_lru/layers.h. They mirror python/torch_lru/modules.py: the same
// parameter and buffer names, the same initialisation (with one seed, the same values), the same
// outputs. Checkpoints are PyTorch state dicts (torch.save files): see save_state_dict /
// load_state_dict below.
#pragma once

#include <string>
#include <tuple>

#include <torch/torch.h>

#include "torch_lru/layers.h"

namespace torch_lru {

struct SequenceNormOptions {
  explicit SequenceNormOptions(int64_t d_model) : d_model_(d_model) {}
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(std::string, kind) = "batch";  // "batch", "layer" or "rms"
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, momentum) = 0.1;
};

// BatchNorm (statistics over the valid positions only), LayerNorm or RMSNorm (weight, no bias)
// over the features of (B, L, H) sequences. Buffers as torch::nn::BatchNorm1d's.
class SequenceNormImpl : public torch::nn::Cloneable<SequenceNormImpl> {
 public:
  explicit SequenceNormImpl(SequenceNormOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});

  SequenceNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(SequenceNorm);

// A block's options hold its recurrent layer's (LRUOptions, read by whichever layer `layer` names).
struct LRUBlockOptions {
  LRUBlockOptions(int64_t d_model, int64_t d_state) : recurrence_(d_model, d_state) {}
  explicit LRUBlockOptions(LRUOptions recurrence) : recurrence_(std::move(recurrence)) {}
  TORCH_ARG(LRUOptions, recurrence);
  // The recurrent layer (torch_lru/layers.h): "lru" (submodule "lru") or another of
  // layer_names() (submodule "rnn").
  TORCH_ARG(std::string, layer) = "lru";
  TORCH_ARG(std::string, norm) = "batch";
  TORCH_ARG(bool, prenorm) = true;
  TORCH_ARG(double, dropout) = 0.0;
  // The residual block: "lru" (LRUBlock) or "hawk" (HawkBlock).
  TORCH_ARG(std::string, block) = "lru";

 public:
  int64_t d_model() const { return recurrence_.d_model(); }
};

// [pre-norm] -> LRU (or options.layer) -> GELU -> dropout -> GLU -> dropout -> residual add ->
// [post-norm].
class LRUBlockImpl : public torch::nn::Cloneable<LRUBlockImpl> {
 public:
  explicit LRUBlockImpl(LRUBlockOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  // One token x_t (B, H) -> (y_t, new state); norms use their running statistics (eval mode). With
  // the LRU, the whole block is one op (torch_lru/stream.h).
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& x_t, const torch::Tensor& state = {});
  // The layer's zero state for `batch` rows.
  torch::Tensor init_state(int64_t batch);

  LRUBlockOptions options;
  SequenceNorm norm{nullptr};
  LRU lru{nullptr};                // when options.layer is "lru"
  torch::nn::AnyModule rnn;        // any other layer
  torch::nn::Linear glu{nullptr};  // H -> 2H: value, then gate
  torch::nn::Dropout dropout{nullptr};

 private:
  torch::Tensor mix(const torch::Tensor& z);
};
TORCH_MODULE(LRUBlock);

// Hawk's residual block (Griffin paper, section 2.2) around options.layer (Hawk's own: "rglru"):
// x + dropout(layer(norm(x))), then + dropout(mlp_down(GeLU(mlp_gate(z)) * mlp_up(z))) with
// z = mlp_norm(x), a gated MLP of width 3 H; with prenorm false each norm follows its residual add.
class HawkBlockImpl : public torch::nn::Cloneable<HawkBlockImpl> {
 public:
  explicit HawkBlockImpl(LRUBlockOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  // One token x_t (B, H) -> (y_t, new state); norms use their running statistics (eval mode).
  std::tuple<torch::Tensor, torch::Tensor> step(const torch::Tensor& x_t, const torch::Tensor& state = {});
  torch::Tensor init_state(int64_t batch);

  LRUBlockOptions options;
  SequenceNorm norm{nullptr}, mlp_norm{nullptr};
  LRU lru{nullptr};          // when options.layer is "lru"
  torch::nn::AnyModule rnn;  // any other layer
  torch::nn::Linear mlp_gate{nullptr}, mlp_up{nullptr}, mlp_down{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  torch::Tensor mlp(const torch::Tensor& z);
};
TORCH_MODULE(HawkBlock);

// Hawk's gated MLP widens the model by this factor (Griffin paper, section 2.2: M = 3).
inline constexpr int64_t kMlpExpansion = 3;

// Two pooled encodings a, b -> [a, b, a * b, a - b] -> Linear -> GELU -> Linear.
class RetrievalHeadImpl : public torch::nn::Cloneable<RetrievalHeadImpl> {
 public:
  RetrievalHeadImpl(int64_t d_model, int64_t d_output);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b);

  int64_t d_model, d_output;
  torch::nn::Linear hidden{nullptr}, out{nullptr};
};
TORCH_MODULE(RetrievalHead);

// A model's options hold its blocks' (LRUBlockOptions), which hold their layer's (LRUOptions).
// The setters r_min ... layer are shorthands for the nested entries.
struct LRUModelOptions {
  LRUModelOptions(int64_t d_output, int64_t d_model = 128, int64_t d_state = 256)
      : d_output_(d_output), block_(d_model, d_state) {}
  TORCH_ARG(int64_t, d_output);
  TORCH_ARG(LRUBlockOptions, block);  // every block's
  TORCH_ARG(int64_t, n_layers) = 6;
  TORCH_ARG(int64_t, vocab_size) = 0;        // > 0: token inputs through an embedding
  TORCH_ARG(int64_t, d_input) = 1;           // features per step otherwise
  TORCH_ARG(std::string, pooling) = "mean";  // "mean", "last" or "none" (per-step outputs)
  TORCH_ARG(bool, dual) = false;             // two sequences, RetrievalHead

 public:
  int64_t d_model() const { return block_.d_model(); }

  LRUModelOptions& r_min(double v) {
    block_.recurrence().r_min(v);
    return *this;
  }
  LRUModelOptions& r_max(double v) {
    block_.recurrence().r_max(v);
    return *this;
  }
  LRUModelOptions& max_phase(double v) {
    block_.recurrence().max_phase(v);
    return *this;
  }
  LRUModelOptions& bidirectional(bool v) {
    block_.recurrence().bidirectional(v);
    return *this;
  }
  LRUModelOptions& layer(const std::string& v) {
    block_.layer(v);
    return *this;
  }
  LRUModelOptions& norm(const std::string& v) {
    block_.norm(v);
    return *this;
  }
  LRUModelOptions& prenorm(bool v) {
    block_.prenorm(v);
    return *this;
  }
  LRUModelOptions& dropout(double v) {
    block_.dropout(v);
    return *this;
  }
  LRUModelOptions& block_kind(const std::string& v) {
    block_.block(v);
    return *this;
  }
  LRUModelOptions& gate_blocks(int64_t v) {
    block_.recurrence().gate_blocks(v);
    return *this;
  }
  LRUModelOptions& a_min(double v) {
    block_.recurrence().a_min(v);
    return *this;
  }
  LRUModelOptions& a_max(double v) {
    block_.recurrence().a_max(v);
    return *this;
  }
};

// Encoder (embedding or linear) -> n_layers LRUBlocks (or HawkBlocks) -> pooling -> decoder (Linear, or
// RetrievalHead when dual).
class LRUModelImpl : public torch::nn::Cloneable<LRUModelImpl> {
 public:
  explicit LRUModelImpl(LRUModelOptions options);
  void reset() override;
  // Logits (B, d_output). x: token ids (B, L) or features (B, L, d_input); mask (B, L) bool or
  // undefined; x2, mask2: the second sequence of a dual model, of x's shape.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {}, const torch::Tensor& x2 = {},
                        const torch::Tensor& mask2 = {});
  // Inputs -> pooled features (B, d_model) (pooling "none": (B, L, d_model)).
  torch::Tensor encode(const torch::Tensor& x, const torch::Tensor& mask = {});

  // Streaming, for unidirectional models that are not dual: the state before the first token
  // (each block's zero state, then the pooling's running sum or last output (B, d_model), then
  // the count of valid steps (B,)), and one token x_t (ids (B,) or features (B, d_input)) ->
  // (logits of the sequence so far (B, d_output), new state). An empty state means a fresh one;
  // mask_t (B,) bool false where x_t is padding (that row's state is kept). After the last token
  // the logits equal forward's.
  std::vector<torch::Tensor> init_state(int64_t batch);
  std::tuple<torch::Tensor, std::vector<torch::Tensor>> step(const torch::Tensor& x_t,
                                                             std::vector<torch::Tensor> state = {},
                                                             const torch::Tensor& mask_t = {});

  LRUModelOptions options;
  torch::nn::Embedding embedding{nullptr};  // registered as "encoder" when vocab_size > 0
  torch::nn::Linear input_linear{nullptr};  // registered as "encoder" otherwise
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear decoder{nullptr};     // registered as "decoder" unless dual
  RetrievalHead retrieval_head{nullptr};  // registered as "decoder" when dual

 private:
  void check_streaming() const;
};
TORCH_MODULE(LRUModel);

// (B, L, H) -> (B, H): the mean over valid positions ("mean") or the last valid position ("last");
// "none" returns x.
torch::Tensor pool(const torch::Tensor& x, const torch::Tensor& mask, const std::string& how);

// Checkpoints: a PyTorch state dict (a plain dict str -> tensor) in torch.save's format, so Python
// reads it with torch.load(path, weights_only=True) or torch_lru.load_state_dict, and writes one
// with torch_lru.save_state_dict(model, path) (LibTorch cannot read the OrderedDict that
// model.state_dict() returns: save dict(model.state_dict()) instead). Tensors are saved on the CPU,
// atomically (a temporary file renamed over the target). Loading is strict: a missing or unexpected key, or a shape
// mismatch, raises an error naming it; values are copied into the module's tensors (keeping
// their device and dtype).
void save_state_dict(const torch::nn::Module& module, const std::string& path);
// The bytes of such a file holding `tensors` (for writing other tensor dicts Python can read).
std::vector<char> pickle_tensors(const c10::Dict<std::string, at::Tensor>& tensors);
void load_state_dict(torch::nn::Module& module, const std::string& path);

}  // namespace torch_lru

// The C++ modules (torch_lru/modules.h). Each mirrors its Python twin in python/torch_lru/modules.py
// line for line: construction order (so one seed draws the same values), names, and forward.
#include "torch_lru/modules.h"

#include "torch_lru/stream.h"

namespace torch_lru {

namespace {

void check_choice(const char* what, const std::string& value, std::initializer_list<const char*> choices) {
  std::string listed;
  for (const char* c : choices) {
    if (value == c) return;
    listed += listed.empty() ? c : std::string(", ") + c;
  }
  TORCH_CHECK(false, what, " must be one of {", listed, "}, got \"", value, "\"");
}

}  // namespace

// ---- SequenceNorm ----

SequenceNormImpl::SequenceNormImpl(SequenceNormOptions options_) : options(std::move(options_)) { reset(); }

void SequenceNormImpl::reset() {
  check_choice("SequenceNorm: kind", options.kind(), {"batch", "layer", "rms"});
  const int64_t H = options.d_model();
  weight = register_parameter("weight", torch::ones({H}));
  if (options.kind() != "rms") bias = register_parameter("bias", torch::zeros({H}));
  if (options.kind() == "batch") {
    running_mean = register_buffer("running_mean", torch::zeros({H}));
    running_var = register_buffer("running_var", torch::ones({H}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
  }
}

torch::Tensor SequenceNormImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t H = options.d_model();
  TORCH_CHECK(x.dim() == 3 && x.size(-1) == H, "SequenceNorm: expected (B, L, ", H, "), got ", x.sizes());
  if (options.kind() == "layer") return torch::layer_norm(x, {H}, weight, bias, options.eps());
  if (options.kind() == "rms") return at::rms_norm(x, {H}, weight, options.eps());
  if (is_training()) num_batches_tracked.add_(1);
  if (!mask.defined() || !is_training()) {
    auto y = torch::batch_norm(x.reshape({-1, H}), weight, bias, running_mean, running_var, is_training(),
                               options.momentum(), options.eps(), /*cudnn_enabled=*/true);
    return y.view(x.sizes());
  }
  // The statistics in the buffers' precision: under bf16 autocast x arrives in bf16, which the
  // float buffers cannot be updated from (and sums over B*L would lose digits in).
  const auto xs = x.to(running_mean.scalar_type());
  auto valid = mask.unsqueeze(-1).to(xs.scalar_type());
  auto count = valid.sum().clamp_min(1);
  auto mean = (xs * valid).sum(at::IntArrayRef{0, 1}) / count;
  auto var = ((xs - mean) * valid).square().sum(at::IntArrayRef{0, 1}) / count;
  {
    torch::NoGradGuard no_grad;
    running_mean.lerp_(mean, options.momentum());
    running_var.lerp_(var * count / (count - 1).clamp_min(1), options.momentum());
  }
  return (xs - mean) * torch::rsqrt(var + options.eps()) * weight + bias;
}

namespace {

void check_steps(const char* block, const LRUBlockOptions& o, bool training) {
  TORCH_CHECK(!(training && o.norm() == "batch"), block,
              "::step: BatchNorm needs running statistics; call eval() first");
}

// The block's layer, built as the Python block builds it: the LRU as "lru", any other as "rnn".
void register_layer(torch::nn::Module& block, const LRUBlockOptions& o, LRU& lru, torch::nn::AnyModule& rnn) {
  if (o.layer() == "lru") {
    lru = block.register_module("lru", LRU(o.recurrence()));
  } else {
    rnn = make_layer(o.layer(), o.recurrence());
    block.register_module("rnn", rnn.ptr());
  }
}

torch::Tensor run_layer(LRU& lru, torch::nn::AnyModule& rnn, const torch::Tensor& z, const torch::Tensor& mask) {
  return lru ? lru(z, mask) : rnn.forward(z, mask);
}

std::tuple<torch::Tensor, torch::Tensor> step_layer(LRU& lru, torch::nn::AnyModule& rnn, const torch::Tensor& z,
                                                    const torch::Tensor& state) {
  return lru ? lru->step(z, state) : torch_lru::step_layer(rnn, z, state);
}

torch::Tensor init_state_of(LRU& lru, torch::nn::AnyModule& rnn, int64_t batch) {
  return lru ? lru->init_state(batch) : init_layer_state(rnn, batch);
}

std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}

}  // namespace

// ---- LRUBlock ----

LRUBlockImpl::LRUBlockImpl(LRUBlockOptions options_) : options(std::move(options_)) { reset(); }

void LRUBlockImpl::reset() {
  const auto& o = options;
  check_layer(o.layer());
  norm = register_module("norm", SequenceNorm(SequenceNormOptions(o.d_model()).kind(o.norm())));
  register_layer(*this, o, lru, rnn);
  glu = register_module("glu", torch::nn::Linear(o.d_model(), 2 * o.d_model()));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
}

torch::Tensor LRUBlockImpl::mix(const torch::Tensor& z) {
  auto a = dropout(torch::gelu(z));
  return dropout(torch::glu(glu(a), -1));
}

torch::Tensor LRUBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto z = options.prenorm() ? norm(x, mask) : x;
  auto y = x + mix(run_layer(lru, rnn, z, mask));
  return options.prenorm() ? y : norm(y, mask);
}

torch::Tensor LRUBlockImpl::init_state(int64_t batch) { return init_state_of(lru, rnn, batch); }

torch::Tensor HawkBlockImpl::init_state(int64_t batch) { return init_state_of(lru, rnn, batch); }

std::tuple<torch::Tensor, torch::Tensor> LRUBlockImpl::step(const torch::Tensor& x_t, const torch::Tensor& state) {
  check_steps("LRUBlock", options, is_training());
  if (lru && !(is_training() && options.dropout() > 0)) {
    // One op for the whole block (torch_lru::lru_block_step), as the Python block calls it.
    auto [lam, W_in, W_out] = lru->step_weights();
    const bool batch = options.norm() == "batch";
    return lru_block_step(x_t, options.norm(), norm->weight, opt(norm->bias),
                          batch ? opt(norm->running_mean) : std::nullopt, batch ? opt(norm->running_var) : std::nullopt,
                          norm->options.eps(), options.prenorm(), lam, W_in, W_out, lru->D(), glu->weight, glu->bias,
                          opt(state));
  }
  auto normed = [&](const torch::Tensor& t) { return norm(t.unsqueeze(1)).squeeze(1); };
  auto z = options.prenorm() ? normed(x_t) : x_t;
  auto [y, new_state] = step_layer(lru, rnn, z, state);
  auto out = x_t + mix(y);
  return {options.prenorm() ? out : normed(out), new_state};
}

// ---- HawkBlock ----

HawkBlockImpl::HawkBlockImpl(LRUBlockOptions options_) : options(std::move(options_)) { reset(); }

void HawkBlockImpl::reset() {
  const auto& o = options;
  check_layer(o.layer());
  const int64_t H = o.d_model();
  norm = register_module("norm", SequenceNorm(SequenceNormOptions(H).kind(o.norm())));
  register_layer(*this, o, lru, rnn);
  mlp_norm = register_module("mlp_norm", SequenceNorm(SequenceNormOptions(H).kind(o.norm())));
  mlp_gate = register_module("mlp_gate", torch::nn::Linear(H, kMlpExpansion * H));
  mlp_up = register_module("mlp_up", torch::nn::Linear(H, kMlpExpansion * H));
  mlp_down = register_module("mlp_down", torch::nn::Linear(kMlpExpansion * H, H));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
}

torch::Tensor HawkBlockImpl::mlp(const torch::Tensor& z) {
  return dropout(mlp_down(torch::gelu(mlp_gate(z)) * mlp_up(z)));
}

torch::Tensor HawkBlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& mask) {
  auto x = x_in;
  if (options.prenorm()) {
    x = x + dropout(run_layer(lru, rnn, norm(x, mask), mask));
    return x + mlp(mlp_norm(x, mask));
  }
  x = norm(x + dropout(run_layer(lru, rnn, x, mask)), mask);
  return mlp_norm(x + mlp(x), mask);
}

std::tuple<torch::Tensor, torch::Tensor> HawkBlockImpl::step(const torch::Tensor& x_t, const torch::Tensor& state) {
  check_steps("HawkBlock", options, is_training());
  auto normed = [](SequenceNorm& n, const torch::Tensor& t) { return n(t.unsqueeze(1)).squeeze(1); };
  torch::Tensor x = x_t, new_state;
  if (options.prenorm()) {
    auto [y, s] = step_layer(lru, rnn, normed(norm, x), state);
    new_state = s;
    x = x + dropout(y);
    return {x + mlp(normed(mlp_norm, x)), new_state};
  }
  auto [y, s] = step_layer(lru, rnn, x, state);
  new_state = s;
  x = normed(norm, x + dropout(y));
  return {normed(mlp_norm, x + mlp(x)), new_state};
}

// ---- RetrievalHead ----

RetrievalHeadImpl::RetrievalHeadImpl(int64_t d_model_, int64_t d_output_) : d_model(d_model_), d_output(d_output_) {
  reset();
}

void RetrievalHeadImpl::reset() {
  hidden = register_module("hidden", torch::nn::Linear(4 * d_model, d_model));
  out = register_module("out", torch::nn::Linear(d_model, d_output));
}

torch::Tensor RetrievalHeadImpl::forward(const torch::Tensor& a, const torch::Tensor& b) {
  return out(torch::gelu(hidden(torch::cat({a, b, a * b, a - b}, -1))));
}

// ---- LRUModel ----

torch::Tensor pool(const torch::Tensor& x, const torch::Tensor& mask, const std::string& how) {
  if (how == "none") return x;
  if (how == "mean") {
    if (!mask.defined()) return x.mean(1);
    auto valid = mask.unsqueeze(-1).to(x.scalar_type());
    return (x * valid).sum(1) / valid.sum(1).clamp_min(1);
  }
  check_choice("pool: how", how, {"mean", "last", "none"});
  if (!mask.defined()) return x.select(1, -1);
  auto last = torch::where(mask, mask.to(torch::kLong).cumsum(1) - 1, -1).amax(1).clamp_min(0);
  return x.gather(1, last.view({-1, 1, 1}).expand({-1, 1, x.size(-1)})).squeeze(1);
}

LRUModelImpl::LRUModelImpl(LRUModelOptions options_) : options(std::move(options_)) { reset(); }

void LRUModelImpl::reset() {
  const auto& o = options;
  check_choice("LRUModel: pooling", o.pooling(), {"mean", "last", "none"});
  TORCH_CHECK(!(o.dual() && o.pooling() == "none"),
              "LRUModel: a dual model classifies pairs of pooled sequences; pooling \"none\" has no pair");
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"d_output", o.d_output()},
                                    {"d_model", o.d_model()},
                                    {"d_state", o.block().recurrence().d_state()},
                                    {"n_layers", o.n_layers()},
                                    {"d_input", o.d_input()}}) {
    TORCH_CHECK(value >= 1, "LRUModel: ", name, " must be positive, got ", value);
  }
  TORCH_CHECK(o.vocab_size() >= 0, "LRUModel: vocab_size must be positive (or 0 for feature inputs), got ",
              o.vocab_size());
  const double dropout = o.block().dropout();
  TORCH_CHECK(dropout >= 0 && dropout < 1, "LRUModel: dropout must be in [0, 1), got ", dropout);
  if (o.vocab_size() > 0) {
    embedding = register_module("encoder", torch::nn::Embedding(o.vocab_size(), o.d_model()));
  } else {
    input_linear = register_module("encoder", torch::nn::Linear(o.d_input(), o.d_model()));
  }
  blocks = register_module("blocks", torch::nn::ModuleList());
  check_choice("LRUModel: block", o.block().block(), {"lru", "hawk"});
  for (int64_t i = 0; i < o.n_layers(); ++i) {
    if (o.block().block() == "hawk") {
      blocks->push_back(HawkBlock(o.block()));
    } else {
      blocks->push_back(LRUBlock(o.block()));
    }
  }
  if (o.dual()) {
    retrieval_head = register_module("decoder", RetrievalHead(o.d_model(), o.d_output()));
  } else {
    decoder = register_module("decoder", torch::nn::Linear(o.d_model(), o.d_output()));
  }
}

torch::Tensor LRUModelImpl::encode(const torch::Tensor& x, const torch::Tensor& mask) {
  const auto& o = options;
  if (o.vocab_size() > 0) {
    TORCH_CHECK(x.dim() == 2 && !x.is_floating_point() && !x.is_complex(), "LRUModel: x must be token ids (B, L), got ",
                x.sizes(), " ", x.scalar_type());
    // An id out of range would index past the embedding (on a GPU, a device-side assert).
    if (x.numel() > 0) {
      const auto [low, high] = x.aminmax();
      const int64_t lo = low.item<int64_t>(), hi = high.item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < o.vocab_size(), "LRUModel: x holds token ids in [", lo, ", ", hi,
                  "], outside [0, vocab_size = ", o.vocab_size(), ")");
    }
  } else {
    TORCH_CHECK(x.dim() == 3 && x.size(-1) == o.d_input(), "LRUModel: x must be features (B, L, ", o.d_input(),
                "), got ", x.sizes(), " ", x.scalar_type());
  }
  if (mask.defined()) {
    TORCH_CHECK(mask.scalar_type() == torch::kBool && mask.sizes() == x.sizes().slice(0, 2),
                "LRUModel: the mask must be bool ", x.sizes().slice(0, 2), ", got ", mask.scalar_type(), " ",
                mask.sizes());
  }
  auto z = o.vocab_size() > 0 ? embedding(x) : input_linear(x);
  for (const auto& block : *blocks) {
    if (auto* hawk = block->as<HawkBlock>()) {
      z = hawk->forward(z, mask);
    } else {
      z = block->as<LRUBlock>()->forward(z, mask);
    }
  }
  return pool(z, mask, o.pooling());
}

torch::Tensor LRUModelImpl::forward(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& x2,
                                    const torch::Tensor& mask2) {
  if (!options.dual()) {
    TORCH_CHECK(!x2.defined(), "LRUModel: x2 given to a model built with dual = false");
    return decoder(encode(x, mask));
  }
  TORCH_CHECK(x2.defined(), "LRUModel: a dual model takes two sequences (x2 is missing)");
  TORCH_CHECK(x2.sizes() == x.sizes() && mask.defined() == mask2.defined(),
              "LRUModel: the two sequences must have one shape, got ", x.sizes(), " and ", x2.sizes());
  auto both = encode(torch::cat({x, x2}), mask.defined() ? torch::cat({mask, mask2}) : torch::Tensor());
  auto halves = both.chunk(2);
  return retrieval_head(halves[0], halves[1]);
}

}  // namespace torch_lru

namespace torch_lru {

void LRUModelImpl::check_streaming() const {
  TORCH_CHECK(!options.block().recurrence().bidirectional(),
              "LRUModel::step: a bidirectional model needs the whole sequence (its reverse direction reads the "
              "future); streaming needs bidirectional = false");
  TORCH_CHECK(!options.dual(), "LRUModel::step: a dual model compares two whole sequences; it does not stream");
}

std::vector<torch::Tensor> LRUModelImpl::init_state(int64_t batch) {
  check_streaming();
  std::vector<torch::Tensor> state;
  for (const auto& block : *blocks) {
    if (auto* hawk = block->as<HawkBlock>()) {
      state.push_back(hawk->init_state(batch));
    } else {
      state.push_back(block->as<LRUBlock>()->init_state(batch));
    }
  }
  const auto& ref = options.dual() ? retrieval_head->out->weight : decoder->weight;
  state.push_back(torch::zeros({batch, options.d_model()}, ref.options()));
  state.push_back(torch::zeros({batch}, ref.options()));
  return state;
}

std::tuple<torch::Tensor, std::vector<torch::Tensor>> LRUModelImpl::step(const torch::Tensor& x_t,
                                                                         std::vector<torch::Tensor> state,
                                                                         const torch::Tensor& mask_t) {
  check_streaming();
  const auto& o = options;
  const int64_t n = static_cast<int64_t>(blocks->size());
  if (o.vocab_size() > 0) {
    TORCH_CHECK(x_t.dim() == 1 && !x_t.is_floating_point() && !x_t.is_complex(),
                "LRUModel::step: x_t must be token ids (B,), got ", x_t.sizes(), " ", x_t.scalar_type());
  } else {
    TORCH_CHECK(x_t.dim() == 2 && x_t.size(1) == o.d_input(), "LRUModel::step: x_t must be features (B, ", o.d_input(),
                "), got ", x_t.sizes());
  }
  if (state.empty()) state = init_state(x_t.size(0));
  TORCH_CHECK(static_cast<int64_t>(state.size()) == n + 2, "LRUModel::step: the state holds ", state.size(),
              " tensors, expected ", n + 2,
              " (one per block, the pooled features, the count); make it with init_state");
  if (mask_t.defined()) {
    TORCH_CHECK(mask_t.scalar_type() == torch::kBool && mask_t.dim() == 1 && mask_t.size(0) == x_t.size(0),
                "LRUModel::step: mask_t must be bool (B,) = (", x_t.size(0), ",), got ", mask_t.scalar_type(), " ",
                mask_t.sizes());
  }
  const auto mask = mask_t.defined() ? std::optional<torch::Tensor>(mask_t) : std::nullopt;
  const auto& first = options.block();
  if (first.block() == "lru" && first.layer() == "lru" && !(is_training() && first.dropout() > 0)) {
    // Every block is an LRU block: the whole step is one op (torch_lru::lru_model_step), as from Python.
    std::vector<torch::Tensor> params;
    for (const auto& block : *blocks) {
      auto* b = block->as<LRUBlock>();
      auto [lam, W_in, W_out] = b->lru->step_weights();
      const bool batch = first.norm() == "batch";
      params.insert(params.end(), {b->norm->weight, b->norm->bias, batch ? b->norm->running_mean : torch::Tensor(),
                                   batch ? b->norm->running_var : torch::Tensor(), lam, W_in, W_out, b->lru->D(),
                                   b->glu->weight, b->glu->bias});
    }
    const auto& encoder = o.vocab_size() > 0 ? embedding->weight : input_linear->weight;
    const auto encoder_bias = o.vocab_size() > 0 ? std::nullopt : std::optional<torch::Tensor>(input_linear->bias);
    const auto& norm = blocks[0]->as<LRUBlock>()->norm;
    return lru_model_step(x_t, encoder, encoder_bias, o.vocab_size(), params, state, first.norm(), norm->options.eps(),
                          first.prenorm(), o.pooling(), decoder->weight, decoder->bias, mask);
  }
  if (o.vocab_size() > 0 && x_t.numel() > 0) {  // (lru_model_step checks the ids itself)
    const auto [low, high] = x_t.aminmax();
    const int64_t lo = low.item<int64_t>(), hi = high.item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < o.vocab_size(), "LRUModel::step: x_t holds token ids in [", lo, ", ", hi,
                "], outside [0, vocab_size = ", o.vocab_size(), ")");
  }
  auto z = o.vocab_size() > 0 ? embedding(x_t) : input_linear(x_t);
  std::vector<torch::Tensor> next;
  for (int64_t i = 0; i < n; ++i) {
    const auto& block = (*blocks)[i];
    auto [y, s] =
        block->as<HawkBlock>() ? block->as<HawkBlock>()->step(z, state[i]) : block->as<LRUBlock>()->step(z, state[i]);
    z = y;
    next.push_back(s);
  }
  auto [features, new_state] = stream_finish(z, state, next, o.pooling(), mask);
  return {decoder(features), new_state};
}

}  // namespace torch_lru

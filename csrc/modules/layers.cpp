// The recurrent layers as torch::nn modules (torch_lru/layers.h): thin modules over the ops that
// hold their math, which the Python layers call too.
#include "torch_lru/layers.h"

namespace torch_lru {

namespace {

const char* const kDirectionNames[] = {"nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im"};

std::string suffix(bool reverse) { return reverse ? "_rev" : ""; }

std::vector<bool> directions(bool bidirectional) {
  return bidirectional ? std::vector<bool>{false, true} : std::vector<bool>{false};
}

// Registers `layer`'s parameters as layer_init draws them, under layer_parameter_names.
void register_drawn(torch::nn::Module& module, const std::string& layer, const LRUOptions& o) {
  const auto names = layer_parameter_names(layer, o.bidirectional());
  const auto values =
      layer_init(layer, o.d_model(), o.d_state(), o.r_min(), o.r_max(), o.max_phase(), o.bidirectional());
  for (size_t i = 0; i < names.size(); ++i) module.register_parameter(names[i], values[i]);
}

}  // namespace

// ---- LRU ----

LRUImpl::LRUImpl(LRUOptions options_) : options(std::move(options_)) { reset(); }

void LRUImpl::reset() {
  for (bool reverse : {false, true}) {
    if (reverse && !options.bidirectional()) break;
    auto drawn = lru_init(options.d_model(), options.d_state(), options.r_min(), options.r_max(), options.max_phase());
    Direction& d = reverse ? reverse_ : forward_;
    torch::Tensor* slots[] = {&d.nu_log, &d.theta_log, &d.gamma_log, &d.B_re, &d.B_im, &d.C_re, &d.C_im};
    const std::string suffix = reverse ? "_rev" : "";
    for (size_t i = 0; i < 7; ++i) *slots[i] = register_parameter(kDirectionNames[i] + suffix, drawn[i]);
    if (!reverse) D_ = register_parameter("D", drawn[7]);
  }
}

std::tuple<torch::Tensor, torch::Tensor> LRUImpl::run(const torch::Tensor& u, const torch::Tensor& state,
                                                      const torch::Tensor& mask) {
  auto opt = [](const torch::Tensor& t) { return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt; };
  const Direction& f = forward_;
  auto [y, final_state] =
      lru_forward(u, f.nu_log, f.theta_log, f.gamma_log, f.B_re, f.B_im, f.C_re, f.C_im, D_, opt(state), opt(mask));
  if (options.bidirectional()) {
    const Direction& r = reverse_;
    y = y + std::get<0>(lru_forward(u, r.nu_log, r.theta_log, r.gamma_log, r.B_re, r.B_im, r.C_re, r.C_im, std::nullopt,
                                    std::nullopt, opt(mask), /*reverse=*/true));
  }
  return {y, final_state};
}

torch::Tensor LRUImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  return std::get<0>(run(u, {}, mask));
}

std::tuple<torch::Tensor, torch::Tensor> LRUImpl::forward_with_state(const torch::Tensor& u, const torch::Tensor& state,
                                                                     const torch::Tensor& mask) {
  TORCH_CHECK(!options.bidirectional(),
              "LRU: a bidirectional layer sees the whole sequence; it takes and returns no state");
  return run(u, state, mask);
}

std::tuple<torch::Tensor, torch::Tensor> LRUImpl::step(const torch::Tensor& u_t, const torch::Tensor& state) {
  TORCH_CHECK(!options.bidirectional(),
              "LRU: a bidirectional layer cannot run step by step (its reverse half needs the future)");
  auto [lam, W_in, W_out] = step_weights();
  return lru_step_packed(u_t, lam, W_in, W_out, D_,
                         state.defined() ? std::optional<torch::Tensor>(state) : std::nullopt);
}

torch::Tensor LRUImpl::init_state(int64_t batch) const {
  return torch::zeros({batch, options.d_state()},
                      D_.options().dtype(c10::toComplexType(forward_.nu_log.scalar_type())));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> LRUImpl::step_weights() const {
  const Direction& f = forward_;
  const torch::Tensor* params[] = {&f.nu_log, &f.theta_log, &f.gamma_log, &f.B_re, &f.B_im, &f.C_re, &f.C_im};
  if (torch::GradMode::is_enabled()) {
    return lru_step_weights(f.nu_log, f.theta_log, f.gamma_log, f.B_re, f.B_im, f.C_re, f.C_im);
  }
  std::vector<std::pair<const void*, uint32_t>> key;
  for (const auto* p : params) key.emplace_back(p->data_ptr(), p->_version());
  if (key != packed_key_) {
    packed_ = lru_step_weights(f.nu_log, f.theta_log, f.gamma_log, f.B_re, f.B_im, f.C_re, f.C_im);
    packed_key_ = std::move(key);
  }
  return packed_;
}

torch::Tensor LRUImpl::eigenvalues(bool reverse) const {
  const Direction& d = reverse ? reverse_ : forward_;
  TORCH_CHECK(d.nu_log.defined(), "LRU: this layer has no reverse direction");
  return torch_lru::eigenvalues(d.nu_log, d.theta_log);
}

void LRUImpl::pretty_print(std::ostream& stream) const {
  stream << "torch_lru::LRU(d_model=" << options.d_model() << ", d_state=" << options.d_state()
         << ", r_min=" << options.r_min() << ", r_max=" << options.r_max() << ", max_phase=" << options.max_phase()
         << ", bidirectional=" << (options.bidirectional() ? "true" : "false") << ")";
}

// ---- the ablation's layers ----

DiagonalLayerImpl::DiagonalLayerImpl(std::string kind_, const LRUOptions& o) : kind(std::move(kind_)), options(o) {
  diagonal_direction_names(kind);  // checks the kind
  reset();
}

void DiagonalLayerImpl::reset() { register_drawn(*this, kind, options); }

std::vector<torch::Tensor> DiagonalLayerImpl::direction(bool reverse) const {
  std::vector<torch::Tensor> out;
  for (const auto& name : diagonal_direction_names(kind)) out.push_back(parameters_[name + suffix(reverse)]);
  return out;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> DiagonalLayerImpl::discretised(bool reverse) const {
  return diagonal_discretise(kind, direction(reverse));
}

torch::Tensor DiagonalLayerImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  const auto m = mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt;
  torch::Tensor y;
  for (bool reverse : directions(options.bidirectional())) {
    const auto D = reverse ? std::nullopt : std::optional<torch::Tensor>(parameters_["D"]);
    auto out = diagonal_forward(u, kind, direction(reverse), parameters_["C_re" + suffix(reverse)],
                                parameters_["C_im" + suffix(reverse)], D, m, reverse);
    y = y.defined() ? y + out : out;
  }
  return y;
}

std::tuple<torch::Tensor, torch::Tensor> DiagonalLayerImpl::step(const torch::Tensor& u_t, const torch::Tensor& state) {
  TORCH_CHECK(!options.bidirectional(), kind,
              ": a bidirectional layer cannot run step by step (its reverse half needs the future)");
  return diagonal_step(u_t, kind, direction(false), parameters_["C_re"], parameters_["C_im"], parameters_["D"],
                       state.defined() ? std::optional<torch::Tensor>(state) : std::nullopt);
}

torch::Tensor DiagonalLayerImpl::init_state(int64_t batch) const {
  const auto& C = parameters_["C_re"];
  return torch::zeros({batch, options.d_state()}, C.options().dtype(c10::toComplexType(C.scalar_type())));
}

TanhRNNImpl::TanhRNNImpl(int64_t d_model_, int64_t d_state_, bool bidirectional_)
    : d_model(d_model_), d_state(d_state_), bidirectional(bidirectional_) {
  reset();
}

void TanhRNNImpl::reset() {
  rnn = register_module("rnn", torch::nn::RNN(torch::nn::RNNOptions(d_model, d_state)
                                                  .nonlinearity(torch::kTanh)
                                                  .batch_first(true)
                                                  .bidirectional(bidirectional)));
  out = register_module(
      "out", torch::nn::Linear(torch::nn::LinearOptions(d_state * (bidirectional ? 2 : 1), d_model).bias(false)));
  D = register_parameter("D", torch::randn({d_model}));
}

torch::Tensor TanhRNNImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  return tanh_rnn(u, mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt, rnn->all_weights(),
                  bidirectional, is_training(), out->weight, D);
}

std::tuple<torch::Tensor, torch::Tensor> TanhRNNImpl::step(const torch::Tensor& u_t, const torch::Tensor& state) {
  TORCH_CHECK(!bidirectional,
              "TanhRNN: a bidirectional layer cannot run step by step (its reverse half needs the future)");
  auto weights = rnn->all_weights();
  return tanh_rnn_step(u_t, {weights.begin(), weights.begin() + 4}, out->weight, D,
                       state.defined() ? std::optional<torch::Tensor>(state) : std::nullopt);
}

torch::Tensor TanhRNNImpl::init_state(int64_t batch) const { return torch::zeros({batch, d_state}, D.options()); }

LinearDenseImpl::LinearDenseImpl(int64_t d_model_, int64_t d_state_, bool bidirectional_)
    : d_model(d_model_), d_state(d_state_), bidirectional(bidirectional_) {
  reset();
}

void LinearDenseImpl::reset() {
  register_drawn(*this, "linear_dense", LRUOptions(d_model, d_state).bidirectional(bidirectional));
}

torch::Tensor LinearDenseImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  const auto m = mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt;
  auto y = parameters_["D"] * u;
  for (bool reverse : directions(bidirectional)) {
    const auto s = suffix(reverse);
    y = y + dense_recurrence(u, parameters_["A" + s], parameters_["B" + s], parameters_["C" + s], m, reverse);
  }
  return y;
}

// ---- RG-LRU ----

RGLRUImpl::RGLRUImpl(LRUOptions options_) : options(std::move(options_)) { reset(); }

void RGLRUImpl::reset() {
  const auto& o = options;
  const auto names = rglru_parameter_names(o.bidirectional());
  const auto values = rglru_init(o.d_model(), o.d_state(), o.gate_blocks(), o.a_min(), o.a_max(), o.bidirectional());
  for (size_t i = 0; i < names.size(); ++i) register_parameter(names[i], values[i]);
}

std::vector<torch::Tensor> RGLRUImpl::params() const {
  std::vector<torch::Tensor> out;
  for (const auto& name : rglru_parameter_names(options.bidirectional())) out.push_back(parameters_[name]);
  return out;
}

torch::Tensor RGLRUImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  const auto m = mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt;
  return std::get<0>(rglru_forward(u, params(), options.bidirectional(), kRGLRUc, std::nullopt, m));
}

std::tuple<torch::Tensor, torch::Tensor> RGLRUImpl::forward_with_state(const torch::Tensor& u,
                                                                       const torch::Tensor& state,
                                                                       const torch::Tensor& mask) {
  TORCH_CHECK(!options.bidirectional(),
              "RGLRU: a bidirectional layer sees the whole sequence; it takes and returns no state");
  auto opt = [](const torch::Tensor& t) { return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt; };
  return rglru_forward(u, params(), false, kRGLRUc, opt(state), opt(mask));
}

std::tuple<torch::Tensor, torch::Tensor> RGLRUImpl::step(const torch::Tensor& u_t, const torch::Tensor& state) {
  TORCH_CHECK(!options.bidirectional(),
              "RGLRU: a bidirectional layer cannot run step by step (its reverse half needs the future)");
  return rglru_step(u_t, params(), kRGLRUc, state.defined() ? std::optional<torch::Tensor>(state) : std::nullopt);
}

torch::Tensor RGLRUImpl::init_state(int64_t batch) const {
  return torch::zeros({batch, kRGLRUConvWidth, options.d_state()}, parameters_["Lambda"].options());
}

void RGLRUImpl::pretty_print(std::ostream& stream) const {
  stream << "torch_lru::RGLRU(d_model=" << options.d_model() << ", d_state=" << options.d_state()
         << ", gate_blocks=" << options.gate_blocks() << ", a_min=" << options.a_min() << ", a_max=" << options.a_max()
         << ", bidirectional=" << (options.bidirectional() ? "true" : "false") << ")";
}

std::tuple<torch::Tensor, torch::Tensor> LinearDenseImpl::step(const torch::Tensor& u_t, const torch::Tensor& state) {
  TORCH_CHECK(!bidirectional,
              "LinearDense: a bidirectional layer cannot run step by step (its reverse half needs the future)");
  return dense_step(u_t, parameters_["A"], parameters_["B"], parameters_["C"], parameters_["D"],
                    state.defined() ? std::optional<torch::Tensor>(state) : std::nullopt);
}

torch::Tensor LinearDenseImpl::init_state(int64_t batch) const {
  return torch::zeros({batch, d_state}, parameters_["A"].options());
}

std::tuple<torch::Tensor, torch::Tensor> step_layer(torch::nn::AnyModule& layer, const torch::Tensor& u_t,
                                                    const torch::Tensor& state) {
  auto& m = *layer.ptr();
  if (auto* l = m.as<RGLRU>()) return l->step(u_t, state);
  if (auto* l = m.as<DiagonalLayer>()) return l->step(u_t, state);
  if (auto* l = m.as<TanhRNN>()) return l->step(u_t, state);
  if (auto* l = m.as<LinearDense>()) return l->step(u_t, state);
  if (auto* l = m.as<LRU>()) return l->step(u_t, state);
  TORCH_CHECK(false, "step_layer: ", m.name(), " is not a torch_lru layer");
}

torch::Tensor init_layer_state(torch::nn::AnyModule& layer, int64_t batch) {
  auto& m = *layer.ptr();
  if (auto* l = m.as<RGLRU>()) return l->init_state(batch);
  if (auto* l = m.as<DiagonalLayer>()) return l->init_state(batch);
  if (auto* l = m.as<TanhRNN>()) return l->init_state(batch);
  if (auto* l = m.as<LinearDense>()) return l->init_state(batch);
  if (auto* l = m.as<LRU>()) return l->init_state(batch);
  TORCH_CHECK(false, "init_layer_state: ", m.name(), " is not a torch_lru layer");
}

torch::nn::AnyModule make_layer(const std::string& name, const LRUOptions& o) {
  check_layer(name);
  TORCH_CHECK(name != "lru", "make_layer: the LRU is torch_lru::LRU (the block holds it as \"lru\")");
  if (name == "tanh_rnn") return torch::nn::AnyModule(TanhRNN(o.d_model(), o.d_state(), o.bidirectional()));
  if (name == "linear_dense") return torch::nn::AnyModule(LinearDense(o.d_model(), o.d_state(), o.bidirectional()));
  if (name == "rglru") return torch::nn::AnyModule(RGLRU(o));
  return torch::nn::AnyModule(DiagonalLayer(name, o));
}

}  // namespace torch_lru

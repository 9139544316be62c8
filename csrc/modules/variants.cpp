// The ablation's recurrent layers (torch_lru/variants.h). Each mirrors its twin in
// python/torch_lru/variants.py draw for draw, so one seed gives the same parameters in both
// languages (tests/test_parity.py checks every layer).
#include "torch_lru/variants.h"

#include <cmath>

#include "torch_lru/modules.h"

namespace torch_lru {

namespace {

constexpr double kDtMin = 1e-3, kDtMax = 1e-1;  // S4/S5's range of initial time steps

std::string suffix(bool reverse) { return reverse ? "_rev" : ""; }

std::vector<bool> directions(bool bidirectional) {
  return bidirectional ? std::vector<bool>{false, true} : std::vector<bool>{false};
}

}  // namespace

const std::vector<std::string>& layer_names() {
  static const std::vector<std::string> names{"tanh_rnn", "linear_dense", "diag_complex", "diag_exp",
                                              "lru",      "s5",           "s4d"};
  return names;
}

void check_layer(const std::string& name) {
  std::string listed;
  for (const auto& n : layer_names()) {
    if (n == name) return;
    listed += (listed.empty() ? "" : ", ") + n;
  }
  TORCH_CHECK(false, "unknown recurrent layer '", name, "'; the layers are ", listed);
}

std::tuple<torch::Tensor, torch::Tensor> zoh(const torch::Tensor& Lambda, const torch::Tensor& log_step,
                                             const torch::Tensor& B) {
  auto step = torch::exp(log_step).to(Lambda.scalar_type());
  auto lam = torch::exp(step * Lambda);
  return {lam, ((lam - 1) / Lambda).unsqueeze(-1) * B};
}

torch::Tensor hippo_n_eigenvalues(int64_t n) {
  const int64_t size = 2 * n;
  auto k = torch::arange(size, torch::kDouble);
  auto p = torch::sqrt(k + 0.5);
  auto s = torch::sqrt(2 * k + 1);
  auto legs = -torch::tril(s.unsqueeze(1) * s.unsqueeze(0), -1) - torch::diag(k + 1);
  auto eig = torch::linalg_eigvals(legs + p.unsqueeze(1) * p.unsqueeze(0));
  eig = eig.index({torch::imag(eig) > 0});
  return eig.index({torch::argsort(torch::imag(eig))}).slice(0, 0, n);
}

// ---- diagonal layers ----

DiagonalLayerImpl::DiagonalLayerImpl(std::string kind_, const LRUOptions& o)
    : kind(std::move(kind_)),
      d_model(o.d_model()),
      d_state(o.d_state()),
      r_min(o.r_min()),
      r_max(o.r_max()),
      max_phase(o.max_phase()),
      bidirectional(o.bidirectional()) {
  TORCH_CHECK(kind == "diag_complex" || kind == "diag_exp" || kind == "s5" || kind == "s4d",
              "DiagonalLayer: kind must be diag_complex, diag_exp, s5 or s4d, got '", kind, "'");
  reset();
}

void DiagonalLayerImpl::reset() {
  const int64_t H = d_model, N = d_state;
  // S5 draws its B before the C and D every diagonal layer draws.
  torch::Tensor s5_b_re, s5_b_im;
  if (kind == "s5") {
    const double scale = 1 / std::sqrt(2.0 * H);
    s5_b_re = torch::randn({N, H}) * scale;
    s5_b_im = torch::randn({N, H}) * scale;
  }
  for (bool reverse : directions(bidirectional)) {
    const double scale = 1 / std::sqrt(static_cast<double>(N));
    auto c_re = torch::randn({H, N}) * scale;
    auto c_im = torch::randn({H, N}) * scale;
    register_parameter("C_re" + suffix(reverse), c_re);
    register_parameter("C_im" + suffix(reverse), c_im);
  }
  register_parameter("D", torch::randn({H}));
  for (bool reverse : directions(bidirectional)) {
    const std::string s = suffix(reverse);
    if (kind == "diag_complex" || kind == "diag_exp") {
      // The LRU's ring draw (its gamma, C and D unused).
      auto drawn = lru_init(H, N, r_min, r_max, max_phase);
      if (kind == "diag_complex") {
        auto lam = torch::polar(torch::exp(-torch::exp(drawn[0])), torch::exp(drawn[1]));
        register_parameter("lam_re" + s, torch::real(lam).clone());
        register_parameter("lam_im" + s, torch::imag(lam).clone());
      } else {
        register_parameter("nu_log" + s, drawn[0]);
        register_parameter("theta_log" + s, drawn[1]);
      }
      register_parameter("B_re" + s, drawn[3]);
      register_parameter("B_im" + s, drawn[4]);
      continue;
    }
    torch::Tensor Lambda, b_re, b_im;
    if (kind == "s5") {
      Lambda = hippo_n_eigenvalues(N);
      b_re = s5_b_re, b_im = s5_b_im;
    } else {  // S4D-Lin: -1/2 + i pi n, B = 1 / sqrt(H)
      auto n = torch::arange(N, torch::kDouble);
      Lambda = torch::complex(torch::full_like(n, -0.5), M_PI * n);
      b_re = torch::ones({N, H}) / std::sqrt(static_cast<double>(H));
      b_im = torch::zeros({N, H});
    }
    auto log_step = torch::rand({N}) * (std::log(kDtMax) - std::log(kDtMin)) + std::log(kDtMin);
    register_parameter("a_log" + s, torch::log(-torch::real(Lambda)).to(torch::kFloat));
    register_parameter("omega" + s, torch::imag(Lambda).to(torch::kFloat).clone());
    register_parameter("log_step" + s, log_step);
    register_parameter("B_re" + s, b_re.clone());
    register_parameter("B_im" + s, b_im.clone());
  }
}

torch::Tensor DiagonalLayerImpl::get(const std::string& name, bool reverse) const {
  return parameters_[name + suffix(reverse)];  // a lookup, not a copy of every parameter
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> DiagonalLayerImpl::discretised(bool reverse) const {
  if (kind == "diag_complex") {
    return {torch::complex(get("lam_re", reverse), get("lam_im", reverse)), get("B_re", reverse), get("B_im", reverse)};
  }
  if (kind == "diag_exp") {
    auto lam = torch::polar(torch::exp(-torch::exp(get("nu_log", reverse))), torch::exp(get("theta_log", reverse)));
    return {lam, get("B_re", reverse), get("B_im", reverse)};
  }
  auto Lambda = torch::complex(-torch::exp(get("a_log", reverse)), get("omega", reverse));
  auto [lam, b_bar] = zoh(Lambda, get("log_step", reverse), torch::complex(get("B_re", reverse), get("B_im", reverse)));
  return {lam, torch::real(b_bar), torch::imag(b_bar)};
}

torch::Tensor DiagonalLayerImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  torch::Tensor y;
  for (bool reverse : directions(bidirectional)) {
    auto [lam, b_re, b_im] = discretised(reverse);
    auto D = reverse ? std::nullopt : std::optional<torch::Tensor>(get("D", false));
    auto out = std::get<0>(diag_recurrence(u, lam, b_re, b_im, get("C_re", reverse), get("C_im", reverse), D,
                                           std::nullopt, mask.defined() ? std::optional(mask) : std::nullopt, reverse));
    y = y.defined() ? y + out : out;
  }
  return y;
}

// ---- tanh RNN ----

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
  torch::Tensor states;
  if (!mask.defined()) {
    states = std::get<0>(rnn->forward(u));
  } else {
    auto lengths = mask.sum(1);
    auto prefix = torch::arange(mask.size(1), mask.device()).unsqueeze(0) < lengths.unsqueeze(1);
    TORCH_CHECK(torch::equal(prefix, mask),
                "tanh_rnn: the mask must mark a valid prefix of each row (padding at the end)");
    namespace rnn_utils = torch::nn::utils::rnn;
    auto packed = rnn_utils::pack_padded_sequence(u, lengths.clamp_min(1).cpu(), /*batch_first=*/true,
                                                  /*enforce_sorted=*/false);
    auto run = std::get<0>(rnn->forward_with_packed_input(packed));
    states = std::get<0>(rnn_utils::pad_packed_sequence(run, /*batch_first=*/true, /*padding_value=*/0.0,
                                                        /*total_length=*/u.size(1)));
  }
  return out(states) + D * u;
}

// ---- dense linear recurrence ----

LinearDenseImpl::LinearDenseImpl(int64_t d_model_, int64_t d_state_, bool bidirectional_)
    : d_model(d_model_), d_state(d_state_), bidirectional(bidirectional_) {
  reset();
}

void LinearDenseImpl::reset() {
  const int64_t H = d_model, N = d_state;
  for (bool reverse : directions(bidirectional)) {
    register_parameter("A" + suffix(reverse), torch::nn::init::xavier_normal_(torch::empty({N, N})));
    register_parameter("B" + suffix(reverse), torch::randn({N, H}) / std::sqrt(static_cast<double>(H)));
    register_parameter("C" + suffix(reverse), torch::randn({H, N}) / std::sqrt(static_cast<double>(N)));
  }
  D = register_parameter("D", torch::randn({H}));
}

torch::Tensor LinearDenseImpl::forward(const torch::Tensor& u, const torch::Tensor& mask) {
  auto u_in = mask.defined() ? u.masked_fill(~mask.unsqueeze(-1), 0) : u;
  auto y = D * u;
  const auto& params = parameters_;
  for (bool reverse : directions(bidirectional)) {
    const auto& A = params["A" + suffix(reverse)];
    auto bu = torch::nn::functional::linear(u_in, params["B" + suffix(reverse)]).unbind(1);
    auto x = torch::zeros({u.size(0), A.size(0)}, u.options());
    std::vector<torch::Tensor> states(bu.size());
    const int64_t L = static_cast<int64_t>(bu.size());
    for (int64_t i = 0; i < L; ++i) {
      const int64_t t = reverse ? L - 1 - i : i;
      x = torch::nn::functional::linear(x, A) + bu[t];
      states[t] = x;
    }
    if (L > 0) y = y + torch::nn::functional::linear(torch::stack(states, 1), params["C" + suffix(reverse)]);
  }
  return y;
}

torch::nn::AnyModule make_layer(const std::string& name, const LRUOptions& o) {
  check_layer(name);
  TORCH_CHECK(name != "lru", "make_layer: the LRU is torch_lru::LRU (the block holds it as \"lru\")");
  if (name == "tanh_rnn") return torch::nn::AnyModule(TanhRNN(o.d_model(), o.d_state(), o.bidirectional()));
  if (name == "linear_dense") return torch::nn::AnyModule(LinearDense(o.d_model(), o.d_state(), o.bidirectional()));
  return torch::nn::AnyModule(DiagonalLayer(name, o));
}

}  // namespace torch_lru

// The ablation layers' math (torch_lru/layer_math.h): composite functions of ATen ops and the
// LRU's ops, registered as torch.ops.torch_lru.* so that Python calls the same code as C++.
#include "torch_lru/layer_math.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "torch_lru/lru.h"

namespace torch_lru {

namespace {

constexpr double kDtMin = 1e-3, kDtMax = 1e-1;  // S4/S5's range of initial time steps

bool is_diagonal(const std::string& layer) {
  return layer == "diag_complex" || layer == "diag_exp" || layer == "s5" || layer == "s4d";
}

std::vector<bool> directions(bool bidirectional) {
  return bidirectional ? std::vector<bool>{false, true} : std::vector<bool>{false};
}

std::string suffix(bool reverse) { return reverse ? "_rev" : ""; }

void check_drawn_layer(const char* op, const std::string& layer) {
  check_layer(layer);
  TORCH_CHECK(is_diagonal(layer) || layer == "linear_dense", op, ": '", layer,
              "' draws its parameters elsewhere (lru: lru_init; tanh_rnn: torch's RNN)");
}

void check_diagonal(const char* op, const std::string& layer) {
  TORCH_CHECK(is_diagonal(layer), op, ": the diagonal layers are diag_complex, diag_exp, s5 and s4d, got '", layer,
              "'");
}

}  // namespace

std::vector<std::string> layer_names() {
  return {"tanh_rnn", "linear_dense", "diag_complex", "diag_exp", "lru", "s5", "s4d", "rglru"};
}

void check_layer(const std::string& name) {
  std::string listed;
  for (const auto& n : layer_names()) {
    if (n == name) return;
    listed += (listed.empty() ? "" : ", ") + n;
  }
  TORCH_CHECK(false, "unknown recurrent layer '", name, "'; the layers are ", listed);
}

std::tuple<at::Tensor, at::Tensor> zoh(const at::Tensor& Lambda, const at::Tensor& log_step, const at::Tensor& B) {
  auto step = at::exp(log_step).to(Lambda.scalar_type());
  auto lam = at::exp(step * Lambda);
  return {lam, ((lam - 1) / Lambda).unsqueeze(-1) * B};
}

at::Tensor hippo_n_eigenvalues(int64_t n) {
  TORCH_CHECK(n >= 1, "torch_lru::hippo_n_eigenvalues: n must be positive, got ", n);
  const int64_t size = 2 * n;
  auto k = at::arange(size, at::kDouble);
  auto p = at::sqrt(k + 0.5);
  auto s = at::sqrt(2 * k + 1);
  // HiPPO-LegS: -sqrt(2i+1) sqrt(2j+1) below the diagonal, -(i+1) on it; plus p p^T, its normal part.
  auto legs = -at::tril(s.unsqueeze(1) * s.unsqueeze(0), -1) - at::diag(k + 1);
  auto eig = at::linalg_eigvals(legs + p.unsqueeze(1) * p.unsqueeze(0));
  eig = eig.index({at::imag(eig) > 0});
  return eig.index({at::argsort(at::imag(eig))}).slice(0, 0, n);
}

std::vector<std::string> diagonal_direction_names(const std::string& layer) {
  check_diagonal("torch_lru::diagonal_direction_names", layer);
  if (layer == "diag_complex") return {"lam_re", "lam_im", "B_re", "B_im"};
  if (layer == "diag_exp") return {"nu_log", "theta_log", "B_re", "B_im"};
  return {"a_log", "omega", "log_step", "B_re", "B_im"};
}

std::vector<std::string> layer_parameter_names(const std::string& layer, bool bidirectional) {
  check_drawn_layer("torch_lru::layer_parameter_names", layer);
  std::vector<std::string> names;
  if (layer == "linear_dense") {
    for (bool reverse : directions(bidirectional))
      for (const char* n : {"A", "B", "C"}) names.push_back(n + suffix(reverse));
    names.push_back("D");
    return names;
  }
  for (bool reverse : directions(bidirectional))
    for (const char* n : {"C_re", "C_im"}) names.push_back(n + suffix(reverse));
  names.push_back("D");
  for (bool reverse : directions(bidirectional))
    for (const auto& n : diagonal_direction_names(layer)) names.push_back(n + suffix(reverse));
  return names;
}

std::vector<at::Tensor> layer_init(const std::string& layer, int64_t d_model, int64_t d_state, double r_min,
                                   double r_max, double max_phase, bool bidirectional,
                                   std::optional<at::ScalarType> dtype, std::optional<at::Device> device,
                                   std::optional<at::Generator> generator) {
  const char* op = "torch_lru::layer_init";
  check_drawn_layer(op, layer);
  TORCH_CHECK(d_model > 0 && d_state > 0, op, ": d_model and d_state must be positive, got ", d_model, " and ",
              d_state);
  const auto type = dtype.value_or(at::kFloat);
  TORCH_CHECK(type == at::kFloat || type == at::kDouble, op, ": dtype must be float32 or float64, got ", type);
  const auto opts = at::TensorOptions().dtype(type).device(device.value_or(at::kCPU));
  const int64_t H = d_model, N = d_state;
  const double inv_sqrt_n = 1 / std::sqrt(static_cast<double>(N));
  std::vector<at::Tensor> out;
  if (layer == "linear_dense") {
    for (bool reverse : directions(bidirectional)) {
      (void)reverse;
      out.push_back(at::empty({N, N}, opts).normal_(0, std::sqrt(2.0 / (N + N)), generator));  // Glorot normal
      out.push_back(at::randn({N, H}, generator, opts) / std::sqrt(static_cast<double>(H)));
      out.push_back(at::randn({H, N}, generator, opts) / std::sqrt(static_cast<double>(N)));
    }
    out.push_back(at::randn({H}, generator, opts));
    return out;
  }
  // S5 draws its B before the C and D every diagonal layer draws; both directions share it.
  at::Tensor s5_b_re, s5_b_im;
  if (layer == "s5") {
    const double scale = 1 / std::sqrt(2.0 * H);
    s5_b_re = at::randn({N, H}, generator, opts) * scale;
    s5_b_im = at::randn({N, H}, generator, opts) * scale;
  }
  for (bool reverse : directions(bidirectional)) {
    (void)reverse;
    out.push_back(at::randn({H, N}, generator, opts) * inv_sqrt_n);
    out.push_back(at::randn({H, N}, generator, opts) * inv_sqrt_n);
  }
  out.push_back(at::randn({H}, generator, opts));
  for (bool reverse : directions(bidirectional)) {
    (void)reverse;
    if (layer == "diag_complex" || layer == "diag_exp") {
      // The LRU's ring draw (its gamma, C and D unused).
      auto drawn = lru_init(H, N, r_min, r_max, max_phase, type, device, generator);
      if (layer == "diag_complex") {
        auto lam = eigenvalues(drawn[0], drawn[1]);
        out.push_back(at::real(lam).clone());
        out.push_back(at::imag(lam).clone());
      } else {
        out.push_back(drawn[0]);
        out.push_back(drawn[1]);
      }
      out.push_back(drawn[3]);
      out.push_back(drawn[4]);
      continue;
    }
    at::Tensor Lambda, b_re, b_im;
    if (layer == "s5") {
      Lambda = hippo_n_eigenvalues(N).to(opts.device());
      b_re = s5_b_re, b_im = s5_b_im;
    } else {  // S4D-Lin: -1/2 + i pi n, B = 1 / sqrt(H)
      auto n = at::arange(N, opts.dtype(at::kDouble));
      Lambda = at::complex(at::full_like(n, -0.5), M_PI * n);
      b_re = at::ones({N, H}, opts) / std::sqrt(static_cast<double>(H));
      b_im = at::zeros({N, H}, opts);
    }
    auto log_step = at::rand({N}, generator, opts) * (std::log(kDtMax) - std::log(kDtMin)) + std::log(kDtMin);
    out.push_back(at::log(-at::real(Lambda)).to(type));
    out.push_back(at::imag(Lambda).to(type).clone());
    out.push_back(log_step);
    out.push_back(b_re.clone());
    out.push_back(b_im.clone());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_discretise(const std::string& layer,
                                                                   const std::vector<at::Tensor>& p) {
  const char* op = "torch_lru::diagonal_discretise";
  check_diagonal(op, layer);
  const size_t want = diagonal_direction_names(layer).size();
  TORCH_CHECK(p.size() == want, op, ": '", layer, "' takes ", want, " parameters per direction, got ", p.size());
  if (layer == "diag_complex") return {at::complex(p[0], p[1]), p[2], p[3]};
  if (layer == "diag_exp") return {eigenvalues(p[0], p[1]), p[2], p[3]};
  auto Lambda = at::complex(-at::exp(p[0]), p[1]);
  auto [lam, b_bar] = zoh(Lambda, p[2], at::complex(p[3], p[4]));
  return {lam, at::real(b_bar), at::imag(b_bar)};
}

at::Tensor diagonal_forward(const at::Tensor& u, const std::string& layer, const std::vector<at::Tensor>& params,
                            const at::Tensor& C_re, const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                            const std::optional<at::Tensor>& mask, bool reverse) {
  auto [lam, b_re, b_im] = diagonal_discretise(layer, params);
  return std::get<0>(diag_recurrence(u, lam, b_re, b_im, C_re, C_im, D, std::nullopt, mask, reverse));
}

at::Tensor dense_recurrence(const at::Tensor& u, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                            const std::optional<at::Tensor>& mask, bool reverse) {
  const char* op = "torch_lru::dense_recurrence";
  TORCH_CHECK(u.dim() == 3, op, ": u must have shape (B, L, H), got ", u.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == A.size(1) && B.dim() == 2 && B.size(0) == A.size(0) &&
                  B.size(1) == u.size(2) && C.dim() == 2 && C.size(0) == u.size(2) && C.size(1) == A.size(0),
              op, ": expected A (N, N), B (N, H), C (H, N) for H = ", u.size(2), ", got A ", A.sizes(), ", B ",
              B.sizes(), ", C ", C.sizes());
  const bool masked = mask.has_value() && mask->defined();
  auto u_in = masked ? u.masked_fill(~mask->unsqueeze(-1), 0) : u;
  auto bu = at::linear(u_in, B).unbind(1);
  const int64_t L = static_cast<int64_t>(bu.size());
  if (L == 0) return at::zeros_like(u);
  auto x = at::zeros({u.size(0), A.size(0)}, bu[0].options());
  std::vector<at::Tensor> states(L);
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = reverse ? L - 1 - i : i;
    x = at::linear(x, A) + bu[t];
    states[t] = x;
  }
  return at::linear(at::stack(states, 1), C);
}

at::Tensor tanh_rnn(const at::Tensor& u, const std::optional<at::Tensor>& mask, const std::vector<at::Tensor>& weights,
                    bool bidirectional, bool train, const at::Tensor& W_out, const at::Tensor& D) {
  const char* op = "torch_lru::tanh_rnn";
  const int64_t dirs = bidirectional ? 2 : 1;
  TORCH_CHECK(u.dim() == 3, op, ": u must have shape (B, L, H), got ", u.sizes());
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == 4 * dirs, op, ": expected ", 4 * dirs,
              " weights (w_ih, w_hh, b_ih, b_hh per direction), got ", weights.size());
  const int64_t batch = u.size(0), L = u.size(1), N = weights[1].size(0);
  auto hx = at::zeros({dirs, batch, N}, u.options());
  at::Tensor states;
  if (!(mask.has_value() && mask->defined())) {
    states = std::get<0>(at::rnn_tanh(u, hx, weights, /*has_biases=*/true, /*num_layers=*/1, /*dropout=*/0.0, train,
                                      bidirectional, /*batch_first=*/true));
  } else {
    auto lengths = mask->sum(1);
    auto prefix = at::arange(L, mask->options().dtype(at::kLong)).unsqueeze(0) < lengths.unsqueeze(1);
    TORCH_CHECK_VALUE(at::equal(prefix, *mask),
                      "tanh_rnn: the mask must mark a valid prefix of each row (padding at the end)");
    // Packed as torch's pack_padded_sequence(enforce_sorted=False) packs: rows by decreasing length.
    auto [sorted, order] = lengths.clamp_min(1).cpu().sort(0, /*descending=*/true);
    auto rows = order.to(u.device());
    auto [data, batch_sizes] = at::_pack_padded_sequence(u.index_select(0, rows), sorted, /*batch_first=*/true);
    auto run = std::get<0>(at::rnn_tanh(data, batch_sizes, hx, weights, /*has_biases=*/true, /*num_layers=*/1,
                                        /*dropout=*/0.0, train, bidirectional));
    auto padded = std::get<0>(at::_pad_packed_sequence(run, batch_sizes, /*batch_first=*/true, 0.0, L));
    states = padded.index_select(0, at::argsort(rows));
  }
  return at::linear(states, W_out) + D * u;
}

std::tuple<at::Tensor, at::Tensor> diagonal_step(const at::Tensor& u_t, const std::string& layer,
                                                 const std::vector<at::Tensor>& params, const at::Tensor& C_re,
                                                 const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                                 const std::optional<at::Tensor>& state) {
  auto [lam, b_re, b_im] = diagonal_discretise(layer, params);
  return diag_step(u_t, lam, b_re, b_im, C_re, C_im, D, state);
}

std::tuple<at::Tensor, at::Tensor> dense_step(const at::Tensor& u_t, const at::Tensor& A, const at::Tensor& B,
                                              const at::Tensor& C, const at::Tensor& D,
                                              const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::dense_step";
  TORCH_CHECK(u_t.dim() == 2 && A.dim() == 2 && B.dim() == 2 && B.size(1) == u_t.size(1) && B.size(0) == A.size(0), op,
              ": expected u_t (B, H) and B (N, H), got u_t ", u_t.sizes(), " and B ", B.sizes());
  auto x = at::linear(u_t, B);
  if (state.has_value() && state->defined()) {
    TORCH_CHECK(state->sizes() == x.sizes(), op, ": state must have shape (B, N) = ", x.sizes(), ", got ",
                state->sizes());
    x = at::linear(*state, A) + x;
  }
  return {at::linear(x, C) + D * u_t, x};
}

std::tuple<at::Tensor, at::Tensor> tanh_rnn_step(const at::Tensor& u_t, const std::vector<at::Tensor>& weights,
                                                 const at::Tensor& W_out, const at::Tensor& D,
                                                 const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::tanh_rnn_step";
  TORCH_CHECK(weights.size() == 4, op, ": expected w_ih, w_hh, b_ih, b_hh of one direction, got ", weights.size(),
              " weights");
  TORCH_CHECK(u_t.dim() == 2 && u_t.size(1) == weights[0].size(1), op, ": u_t must have shape (B, ", weights[0].size(1),
              "), got ", u_t.sizes());
  auto pre = at::linear(u_t, weights[0], weights[2]) + weights[3];
  if (state.has_value() && state->defined()) {
    TORCH_CHECK(state->sizes() == pre.sizes(), op, ": state must have shape (B, N) = ", pre.sizes(), ", got ",
                state->sizes());
    pre = pre + at::linear(*state, weights[1]);
  }
  auto h = at::tanh(pre);
  return {at::linear(h, W_out) + D * u_t, h};
}

namespace {

std::vector<at::Tensor> layer_init_op(c10::string_view layer, int64_t d_model, int64_t d_state, double r_min,
                                      double r_max, double max_phase, bool bidirectional,
                                      std::optional<at::ScalarType> dtype, std::optional<at::Device> device,
                                      std::optional<at::Generator> generator) {
  return layer_init(std::string(layer), d_model, d_state, r_min, r_max, max_phase, bidirectional, dtype, device,
                    generator);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_discretise_op(c10::string_view layer, at::TensorList params) {
  return diagonal_discretise(std::string(layer), params.vec());
}

at::Tensor diagonal_forward_op(const at::Tensor& u, c10::string_view layer, at::TensorList params,
                               const at::Tensor& C_re, const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                               const std::optional<at::Tensor>& mask, bool reverse) {
  return diagonal_forward(u, std::string(layer), params.vec(), C_re, C_im, D, mask, reverse);
}

at::Tensor tanh_rnn_op(const at::Tensor& u, const std::optional<at::Tensor>& mask, at::TensorList weights,
                       bool bidirectional, bool train, const at::Tensor& W_out, const at::Tensor& D) {
  return tanh_rnn(u, mask, weights.vec(), bidirectional, train, W_out, D);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def("layer_names() -> str[]", &layer_names);
  m.def("layer_parameter_names(str layer, bool bidirectional) -> str[]",
        [](c10::string_view layer, bool bidirectional) {
          return layer_parameter_names(std::string(layer), bidirectional);
        });
  m.def("diagonal_direction_names(str layer) -> str[]",
        [](c10::string_view layer) { return diagonal_direction_names(std::string(layer)); });
  m.def("hippo_n_eigenvalues(int n) -> Tensor", &hippo_n_eigenvalues);
  m.def(
      "layer_init(str layer, int d_model, int d_state, float r_min, float r_max, float max_phase, bool bidirectional, "
      "*, ScalarType? dtype=None, Device? device=None, Generator? generator=None) -> Tensor[]");
  m.def("zoh(Tensor Lambda, Tensor log_step, Tensor B) -> (Tensor, Tensor)");
  m.def("diagonal_discretise(str layer, Tensor[] params) -> (Tensor, Tensor, Tensor)");
  m.def(
      "diagonal_forward(Tensor u, str layer, Tensor[] params, Tensor C_re, Tensor C_im, Tensor? D, Tensor? mask, "
      "bool reverse) -> Tensor");
  m.def("dense_recurrence(Tensor u, Tensor A, Tensor B, Tensor C, Tensor? mask, bool reverse) -> Tensor");
  m.def(
      "diagonal_step(Tensor u_t, str layer, Tensor[] params, Tensor C_re, Tensor C_im, Tensor? D, "
      "Tensor? state=None) -> (Tensor, Tensor)");
  m.def("dense_step(Tensor u_t, Tensor A, Tensor B, Tensor C, Tensor D, Tensor? state=None) -> (Tensor, Tensor)");
  m.def("tanh_rnn_step(Tensor u_t, Tensor[] weights, Tensor W_out, Tensor D, Tensor? state=None) -> (Tensor, Tensor)");
  m.def(
      "tanh_rnn(Tensor u, Tensor? mask, Tensor[] weights, bool bidirectional, bool train, Tensor W_out, Tensor D) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeImplicitAutograd, m) {
  m.impl("layer_init", &layer_init_op);
  m.impl("zoh", &zoh);
  m.impl("diagonal_discretise", &diagonal_discretise_op);
  m.impl("diagonal_forward", &diagonal_forward_op);
  m.impl("dense_recurrence", &dense_recurrence);
  m.impl("tanh_rnn", &tanh_rnn_op);
  m.impl("diagonal_step",
         [](const at::Tensor& u_t, c10::string_view layer, at::TensorList params, const at::Tensor& C_re,
            const at::Tensor& C_im, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& state) {
           return diagonal_step(u_t, std::string(layer), params.vec(), C_re, C_im, D, state);
         });
  m.impl("dense_step", &dense_step);
  m.impl("tanh_rnn_step",
         [](const at::Tensor& u_t, at::TensorList weights, const at::Tensor& W_out, const at::Tensor& D,
            const std::optional<at::Tensor>& state) { return tanh_rnn_step(u_t, weights.vec(), W_out, D, state); });
}

}  // namespace torch_lru

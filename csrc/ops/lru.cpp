// The LRU layer's math and initialisation as ops (see torch_lru/lru.h). They are composite: written
// with ATen ops and the scan op, so autograd, autocast, torch.compile and every backend come from
// the ops they call; the recurrence itself is the scan op, the only complex kernel.
#include "torch_lru/lru.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "torch_lru/scan.h"

namespace torch_lru {
namespace {

struct Params {
  const at::Tensor& nu_log;
  const at::Tensor& theta_log;
  const at::Tensor& gamma_log;
  const at::Tensor& B_re;
  const at::Tensor& B_im;
  const at::Tensor& C_re;
  const at::Tensor& C_im;
  const std::optional<at::Tensor>& D;
};

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// `ref` (named ref_name) is the tensor whose dtype and device every parameter must share.
void check_param(const char* op, const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref,
                 c10::ArrayRef<c10::SymInt> shape, const char* shape_name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a defined tensor");
  TORCH_CHECK(t.sym_sizes() == shape, op, ": ", name, " must have shape ", shape_name, " = ", shape, ", got ",
              t.sym_sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
}

// The projections B (N, H) and C (H, N) and the skip D (H) against each other and `ref`; returns (H, N).
std::pair<c10::SymInt, c10::SymInt> check_projections(const char* op, const char* ref_name, const at::Tensor& ref,
                                                      const c10::SymInt& N, const Params& p) {
  TORCH_CHECK(ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble, op,
              ": the parameters must be float32 or float64, got ", ref_name, " ", ref.scalar_type());
  TORCH_CHECK(p.B_re.defined() && p.B_re.dim() == 2, op, ": B_re must have shape (N, H), got ",
              p.B_re.defined() ? p.B_re.sym_sizes() : c10::SymIntArrayRef());
  const c10::SymInt H = p.B_re.sym_size(1);
  const std::vector<c10::SymInt> nh{N, H}, hn{H, N}, h{H};
  check_param(op, "B_re", p.B_re, ref_name, ref, nh, "(N, H)");
  check_param(op, "B_im", p.B_im, ref_name, ref, nh, "(N, H)");
  check_param(op, "C_re", p.C_re, ref_name, ref, hn, "(H, N)");
  check_param(op, "C_im", p.C_im, ref_name, ref, hn, "(H, N)");
  if (has(p.D)) check_param(op, "D", *p.D, ref_name, ref, h, "(H,)");
  return {H, N};
}

// The LRU's parameters against each other; returns (H, N).
std::pair<c10::SymInt, c10::SymInt> check_params(const char* op, const Params& p) {
  TORCH_CHECK(p.nu_log.defined() && p.nu_log.dim() == 1, op, ": nu_log must have shape (N,), got ",
              p.nu_log.defined() ? p.nu_log.sym_sizes() : c10::SymIntArrayRef());
  const c10::SymInt N = p.nu_log.sym_size(0);
  const std::vector<c10::SymInt> n{N};
  auto sizes = check_projections(op, "nu_log", p.nu_log, N, p);
  check_param(op, "theta_log", p.theta_log, "nu_log", p.nu_log, n, "(N,)");
  check_param(op, "gamma_log", p.gamma_log, "nu_log", p.nu_log, n, "(N,)");
  return sizes;
}

// u (..., H) against the parameters: its width, device, and dtype (which may differ from the
// parameters' only under autocast, where the projections cast both).
void check_input(const char* op, const at::Tensor& u, const at::Tensor& ref, const c10::SymInt& H, int64_t rank,
                 const char* shape_name) {
  TORCH_CHECK(u.defined(), op, ": the input must be a defined tensor");
  TORCH_CHECK(u.dim() == rank, op, ": the input must have shape ", shape_name, ", got ", u.dim(), " dimensions ",
              u.sym_sizes());
  TORCH_CHECK(u.sym_size(-1) == H, op, ": the input's last dimension must be d_model = ", H, ", got shape ",
              u.sym_sizes());
  TORCH_CHECK(u.device() == ref.device(), op, ": the input is on ", u.device(), " but the parameters are on ",
              ref.device());
  TORCH_CHECK(at::isFloatingType(u.scalar_type()), op, ": the input must be real floating point, got ",
              u.scalar_type());
  TORCH_CHECK(u.scalar_type() == ref.scalar_type() || at::autocast::is_autocast_enabled(u.device().type()), op,
              ": the input's dtype ", u.scalar_type(), " differs from the parameters' ", ref.scalar_type(),
              " (cast one, or run under torch.autocast)");
}

void check_state(const char* op, const at::Tensor& state, const at::Tensor& ref, const c10::SymInt& batch,
                 const c10::SymInt& N) {
  const auto complex_type = c10::toComplexType(ref.scalar_type());
  TORCH_CHECK(state.scalar_type() == complex_type, op, ": state must be ", complex_type, " (the parameters are ",
              ref.scalar_type(), "), got ", state.scalar_type());
  TORCH_CHECK(state.device() == ref.device(), op, ": state is on ", state.device(), " but the parameters are on ",
              ref.device());
  TORCH_CHECK(state.dim() == 2 && state.sym_size(0) == batch && state.sym_size(1) == N, op,
              ": state must have shape (B, N) = (", batch, ", ", N, "), got ", state.sym_sizes());
}

at::Tensor eigenvalues_composite(const at::Tensor& nu_log, const at::Tensor& theta_log) {
  return at::polar(at::exp(-at::exp(nu_log)), at::exp(theta_log));
}

at::Tensor eigenvalues(const Params& p) { return eigenvalues_composite(p.nu_log, p.theta_log); }

// gain * B (gain (N,), or 1 when undefined) with the real and imaginary rows interleaved (2N, H):
// u @ W^T is then B u laid out as complex numbers, read as complex with no copy.
at::Tensor input_weight(const Params& p, const at::Tensor& gain, const c10::SymInt& H) {
  if (!gain.defined()) return at::stack({p.B_re, p.B_im}, 1).reshape_symint({-1, H});
  auto g = gain.unsqueeze(1);
  return at::stack({p.B_re * g, p.B_im * g}, 1).reshape_symint({-1, H});
}

// (H, 2N) such that Re(C x) = W @ (x as interleaved re, im pairs): the real and imaginary
// columns interleaved, the imaginary ones negated.
at::Tensor output_weight(const Params& p, const c10::SymInt& H) {
  return at::stack({p.C_re, -p.C_im}, 2).reshape_symint({H, -1});
}

// u @ w_in^T as a complex tensor of u's leading shape and N channels, in `real`'s complex dtype.
at::Tensor project_in(const at::Tensor& u, const at::Tensor& w_in, at::ScalarType real, const c10::SymInt& N) {
  auto bu = at::linear(u, w_in);
  if (bu.scalar_type() != real) bu = bu.to(real);  // from autocast
  return at::view_as_complex(bu.unflatten_symint(-1, {N, 2}));
}

at::Tensor project_out(const at::Tensor& x, const at::Tensor& u, const at::Tensor& w_out,
                       const std::optional<at::Tensor>& D) {
  auto y = at::linear(at::view_as_real(x).flatten(-2), w_out);
  return has(D) ? at::addcmul(y, u, *D) : y;
}

// The layer given its eigenvalues lam (N,) and interleaved projection weights: what the lru and
// diag_recurrence ops share. `ref` gives the parameters' real dtype and device.
std::tuple<at::Tensor, at::Tensor> run_recurrence(const char* op, const at::Tensor& u, const at::Tensor& lam,
                                                  const at::Tensor& w_in, const at::Tensor& w_out,
                                                  const std::optional<at::Tensor>& D,
                                                  const std::optional<at::Tensor>& state,
                                                  const std::optional<at::Tensor>& mask, bool reverse,
                                                  const at::Tensor& ref, const c10::SymInt& H, const c10::SymInt& N) {
  check_input(op, u, ref, H, 3, "(B, L, H)");
  const c10::SymInt batch = u.sym_size(0), L = u.sym_size(1);
  if (has(state)) check_state(op, *state, ref, batch, N);
  at::Tensor valid;
  if (has(mask)) {
    valid = *mask;
    TORCH_CHECK(valid.scalar_type() == at::kBool, op, ": mask must be bool (true at valid positions), got ",
                valid.scalar_type());
    TORCH_CHECK(valid.device() == u.device(), op, ": mask is on ", valid.device(), " but the input is on ", u.device());
    TORCH_CHECK(valid.dim() == 2 && valid.sym_size(0) == batch && valid.sym_size(1) == L, op,
                ": mask must have shape (B, L) = (", batch, ", ", L, "), got ", valid.sym_sizes());
  }

  // Zero inputs at padded positions: the state then passes through them unchanged in value
  // reaching the valid positions (zero before any valid input, decayed only after the last).
  const auto u_in = valid.defined() ? u.masked_fill(valid.logical_not().unsqueeze(-1), 0) : u;
  auto h = scan(lam, project_in(u_in, w_in, ref.scalar_type(), N), state, reverse);
  auto y = project_out(h, u, w_out, D);

  auto initial = has(state) ? *state : at::zeros_symint({batch, N}, h.options());
  at::Tensor final_state;
  if (L == 0) {
    final_state = initial.clone();
  } else if (!valid.defined()) {
    final_state = h.select_symint(1, reverse ? c10::SymInt(0) : L - 1).clone();
  } else {
    // Index of the last valid step taken: the last true position, or the first when reverse.
    auto positions = at::ones_like(valid, at::kLong).cumsum(1) - 1;
    auto idx = reverse ? at::where(valid, positions, L).amin(1) : at::where(valid, positions, -1).amax(1);
    auto any = valid.any(1);
    auto gathered = h.gather(1, idx.clamp(0, L - 1).view_symint({batch, 1, 1}).expand_symint({batch, 1, N}));
    final_state = at::where(any.unsqueeze(1), gathered.squeeze(1), initial);
  }
  return {y, final_state};
}

std::tuple<at::Tensor, at::Tensor> lru_composite(const at::Tensor& u, const at::Tensor& nu_log,
                                                 const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                                 const at::Tensor& B_re, const at::Tensor& B_im, const at::Tensor& C_re,
                                                 const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                                 const std::optional<at::Tensor>& state,
                                                 const std::optional<at::Tensor>& mask, bool reverse) {
  const char* op = "torch_lru::lru";
  const Params p{nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D};
  const auto [H, N] = check_params(op, p);
  return run_recurrence(op, u, eigenvalues(p), input_weight(p, at::exp(gamma_log), H), output_weight(p, H), D, state,
                        mask, reverse, nu_log, H, N);
}

const at::Tensor& none_tensor() {
  static const at::Tensor none;
  return none;
}

// Given eigenvalues lam (N,) against the projections of p (no LRU parameterisation); returns (H, N).
std::pair<c10::SymInt, c10::SymInt> check_diagonal(const char* op, const at::Tensor& lam, const Params& p) {
  TORCH_CHECK(lam.defined() && lam.dim() == 1, op, ": lam must have shape (N,), got ",
              lam.defined() ? lam.sym_sizes() : c10::SymIntArrayRef());
  TORCH_CHECK(p.B_re.defined(), op, ": B_re must be a defined tensor");
  const auto complex_type = c10::toComplexType(p.B_re.scalar_type());
  TORCH_CHECK(lam.scalar_type() == complex_type && lam.device() == p.B_re.device(), op, ": lam must be ", complex_type,
              " on ", p.B_re.device(), " (B_re is ", p.B_re.scalar_type(), "), got ", lam.scalar_type(), " on ",
              lam.device());
  return check_projections(op, "B_re", p.B_re, lam.sym_size(0), p);
}

std::tuple<at::Tensor, at::Tensor> diag_recurrence_composite(const at::Tensor& u, const at::Tensor& lam,
                                                             const at::Tensor& B_re, const at::Tensor& B_im,
                                                             const at::Tensor& C_re, const at::Tensor& C_im,
                                                             const std::optional<at::Tensor>& D,
                                                             const std::optional<at::Tensor>& state,
                                                             const std::optional<at::Tensor>& mask, bool reverse) {
  const char* op = "torch_lru::diag_recurrence";
  const Params p{none_tensor(), none_tensor(), none_tensor(), B_re, B_im, C_re, C_im, D};
  const auto [H, N] = check_diagonal(op, lam, p);
  return run_recurrence(op, u, lam, input_weight(p, at::Tensor(), H), output_weight(p, H), D, state, mask, reverse,
                        B_re, H, N);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lru_step_weights_composite(
    const at::Tensor& nu_log, const at::Tensor& theta_log, const at::Tensor& gamma_log, const at::Tensor& B_re,
    const at::Tensor& B_im, const at::Tensor& C_re, const at::Tensor& C_im) {
  const std::optional<at::Tensor> no_D;
  const Params p{nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, no_D};
  const auto [H, N] = check_params("torch_lru::lru_step_weights", p);
  return {eigenvalues(p), input_weight(p, at::exp(gamma_log), H), output_weight(p, H)};
}

std::tuple<at::Tensor, at::Tensor> lru_step_packed_composite(const at::Tensor& u_t, const at::Tensor& lam,
                                                             const at::Tensor& W_in, const at::Tensor& W_out,
                                                             const std::optional<at::Tensor>& D,
                                                             const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::lru_step_packed";
  TORCH_CHECK(lam.defined() && lam.dim() == 1 && lam.is_complex(), op, ": lam must be complex (N,), got ",
              lam.defined() ? lam.sym_sizes() : c10::SymIntArrayRef());
  const c10::SymInt N = lam.sym_size(0);
  TORCH_CHECK(W_in.defined() && W_in.dim() == 2 && W_in.sym_size(0) == 2 * N, op, ": W_in must have shape (2N, H) = (",
              2 * N, ", H), got ", W_in.defined() ? W_in.sym_sizes() : c10::SymIntArrayRef());
  const c10::SymInt H = W_in.sym_size(1);
  TORCH_CHECK(W_out.defined() && W_out.dim() == 2 && W_out.sym_size(0) == H && W_out.sym_size(1) == 2 * N, op,
              ": W_out must have shape (H, 2N) = (", H, ", ", 2 * N, "), got ",
              W_out.defined() ? W_out.sym_sizes() : c10::SymIntArrayRef());
  check_input(op, u_t, W_in, H, 2, "(B, H)");
  auto x = project_in(u_t, W_in, W_in.scalar_type(), N);
  if (has(state)) {
    check_state(op, *state, W_in, u_t.sym_size(0), N);
    x = lam * *state + x;
  }
  return {project_out(x, u_t, W_out, D), x};
}

std::tuple<at::Tensor, at::Tensor> lru_step_composite(const at::Tensor& u_t, const at::Tensor& nu_log,
                                                      const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                                      const at::Tensor& B_re, const at::Tensor& B_im,
                                                      const at::Tensor& C_re, const at::Tensor& C_im,
                                                      const std::optional<at::Tensor>& D,
                                                      const std::optional<at::Tensor>& state) {
  const Params p{nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D};
  const auto [H, N] = check_params("torch_lru::lru_step", p);
  auto [lam, W_in, W_out] = lru_step_weights_composite(nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im);
  return lru_step_packed_composite(u_t, lam, W_in, W_out, D, state);
}

std::tuple<at::Tensor, at::Tensor> diag_step_composite(const at::Tensor& u_t, const at::Tensor& lam,
                                                       const at::Tensor& B_re, const at::Tensor& B_im,
                                                       const at::Tensor& C_re, const at::Tensor& C_im,
                                                       const std::optional<at::Tensor>& D,
                                                       const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::diag_step";
  const Params p{none_tensor(), none_tensor(), none_tensor(), B_re, B_im, C_re, C_im, D};
  const auto [H, N] = check_diagonal(op, lam, p);
  check_input(op, u_t, B_re, H, 2, "(B, H)");
  auto x = project_in(u_t, input_weight(p, at::Tensor(), H), B_re.scalar_type(), N);
  if (has(state)) {
    check_state(op, *state, B_re, u_t.sym_size(0), N);
    x = lam * *state + x;
  }
  return {project_out(x, u_t, output_weight(p, H), D), x};
}

std::vector<at::Tensor> lru_init_composite(int64_t d_model, int64_t d_state, double r_min, double r_max,
                                           double max_phase, std::optional<at::ScalarType> dtype,
                                           std::optional<at::Device> device, std::optional<at::Generator> generator) {
  const char* op = "torch_lru::lru_init";
  TORCH_CHECK(d_model > 0, op, ": d_model must be positive, got ", d_model);
  TORCH_CHECK(d_state > 0, op, ": d_state must be positive, got ", d_state);
  TORCH_CHECK(0.0 <= r_min && r_min <= r_max && r_max <= 1.0, op,
              ": the ring needs 0 <= r_min <= r_max <= 1, got r_min = ", r_min, ", r_max = ", r_max);
  TORCH_CHECK(max_phase > 0.0, op, ": max_phase must be positive, got ", max_phase);
  const auto type = dtype.value_or(c10::typeMetaToScalarType(at::get_default_dtype()));
  TORCH_CHECK(type == at::kFloat || type == at::kDouble, op, ": dtype must be float32 or float64, got ", type);
  const auto opts = at::TensorOptions().dtype(type).device(device.value_or(at::kCPU));
  const int64_t H = d_model, N = d_state;

  auto u1 = at::rand({N}, generator, opts);
  auto u2 = at::rand({N}, generator, opts);
  // |lambda|^2 uniform on [r_min^2, r_max^2]: lambda uniform on the ring's area.
  auto modulus_sq = u1 * (r_max * r_max - r_min * r_min) + r_min * r_min;
  auto nu_log = at::log(-0.5 * at::log(modulus_sq));
  auto theta_log = at::log(max_phase * u2);
  // log sqrt(1 - |lambda|^2), with |lambda|^2 = exp(-2 exp(nu_log)); expm1 keeps it exact near |lambda| = 1.
  auto gamma_log = 0.5 * at::log(-at::expm1(-2.0 * at::exp(nu_log)));
  auto B_re = at::randn({N, H}, generator, opts) / std::sqrt(2.0 * H);
  auto B_im = at::randn({N, H}, generator, opts) / std::sqrt(2.0 * H);
  auto C_re = at::randn({H, N}, generator, opts) / std::sqrt(static_cast<double>(N));
  auto C_im = at::randn({H, N}, generator, opts) / std::sqrt(static_cast<double>(N));
  auto D = at::randn({H}, generator, opts);
  return {nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D};
}

}  // namespace

at::Tensor eigenvalues(const at::Tensor& nu_log, const at::Tensor& theta_log) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::eigenvalues", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(nu_log, theta_log);
}

std::vector<at::Tensor> lru_init(int64_t d_model, int64_t d_state, double r_min, double r_max, double max_phase,
                                 std::optional<at::ScalarType> dtype, std::optional<at::Device> device,
                                 std::optional<at::Generator> generator) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::lru_init", "").typed<decltype(lru_init)>();
  return op.call(d_model, d_state, r_min, r_max, max_phase, dtype, device, generator);
}

std::tuple<at::Tensor, at::Tensor> lru_forward(const at::Tensor& u, const at::Tensor& nu_log,
                                               const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                               const at::Tensor& B_re, const at::Tensor& B_im, const at::Tensor& C_re,
                                               const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                               const std::optional<at::Tensor>& state,
                                               const std::optional<at::Tensor>& mask, bool reverse) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::lru", "").typed<decltype(lru_forward)>();
  return op.call(u, nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D, state, mask, reverse);
}

std::tuple<at::Tensor, at::Tensor> diag_recurrence(const at::Tensor& u, const at::Tensor& lam, const at::Tensor& B_re,
                                                   const at::Tensor& B_im, const at::Tensor& C_re,
                                                   const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                                   const std::optional<at::Tensor>& state,
                                                   const std::optional<at::Tensor>& mask, bool reverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::diag_recurrence", "")
                       .typed<decltype(diag_recurrence)>();
  return op.call(u, lam, B_re, B_im, C_re, C_im, D, state, mask, reverse);
}

std::tuple<at::Tensor, at::Tensor> lru_step(const at::Tensor& u_t, const at::Tensor& nu_log,
                                            const at::Tensor& theta_log, const at::Tensor& gamma_log,
                                            const at::Tensor& B_re, const at::Tensor& B_im, const at::Tensor& C_re,
                                            const at::Tensor& C_im, const std::optional<at::Tensor>& D,
                                            const std::optional<at::Tensor>& state) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::lru_step", "").typed<decltype(lru_step)>();
  return op.call(u_t, nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D, state);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lru_step_weights(const at::Tensor& nu_log, const at::Tensor& theta_log,
                                                                const at::Tensor& gamma_log, const at::Tensor& B_re,
                                                                const at::Tensor& B_im, const at::Tensor& C_re,
                                                                const at::Tensor& C_im) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::lru_step_weights", "")
                       .typed<decltype(lru_step_weights)>();
  return op.call(nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im);
}

std::tuple<at::Tensor, at::Tensor> lru_step_packed(const at::Tensor& u_t, const at::Tensor& lam, const at::Tensor& W_in,
                                                   const at::Tensor& W_out, const std::optional<at::Tensor>& D,
                                                   const std::optional<at::Tensor>& state) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_lru::lru_step_packed", "")
                       .typed<decltype(lru_step_packed)>();
  return op.call(u_t, lam, W_in, W_out, D, state);
}

std::tuple<at::Tensor, at::Tensor> diag_step(const at::Tensor& u_t, const at::Tensor& lam, const at::Tensor& B_re,
                                             const at::Tensor& B_im, const at::Tensor& C_re, const at::Tensor& C_im,
                                             const std::optional<at::Tensor>& D,
                                             const std::optional<at::Tensor>& state) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_lru::diag_step", "").typed<decltype(diag_step)>();
  return op.call(u_t, lam, B_re, B_im, C_re, C_im, D, state);
}

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def("eigenvalues(Tensor nu_log, Tensor theta_log) -> Tensor");
  m.def(
      "lru_init(int d_model, int d_state, float r_min=0.0, float r_max=1.0, float max_phase=6.283185307179586, *, "
      "ScalarType? dtype=None, Device? device=None, Generator? generator=None) -> Tensor[]");
  m.def(
      "lru(Tensor u, Tensor nu_log, Tensor theta_log, Tensor gamma_log, Tensor B_re, Tensor B_im, Tensor C_re, "
      "Tensor C_im, Tensor? D, Tensor? state=None, Tensor? mask=None, bool reverse=False) -> (Tensor, Tensor)");
  m.def(
      "diag_recurrence(Tensor u, Tensor lam, Tensor B_re, Tensor B_im, Tensor C_re, Tensor C_im, Tensor? D, "
      "Tensor? state=None, Tensor? mask=None, bool reverse=False) -> (Tensor, Tensor)");
  m.def(
      "lru_step(Tensor u_t, Tensor nu_log, Tensor theta_log, Tensor gamma_log, Tensor B_re, Tensor B_im, "
      "Tensor C_re, Tensor C_im, Tensor? D, Tensor? state=None) -> (Tensor, Tensor)");
  m.def(
      "lru_step_weights(Tensor nu_log, Tensor theta_log, Tensor gamma_log, Tensor B_re, Tensor B_im, Tensor C_re, "
      "Tensor C_im) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lru_step_packed(Tensor u_t, Tensor lam, Tensor W_in, Tensor W_out, Tensor? D, Tensor? state=None) "
      "-> (Tensor, Tensor)");
  m.def(
      "diag_step(Tensor u_t, Tensor lam, Tensor B_re, Tensor B_im, Tensor C_re, Tensor C_im, Tensor? D, "
      "Tensor? state=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CompositeImplicitAutograd, m) {
  m.impl("eigenvalues", &eigenvalues_composite);
  m.impl("lru_init", &lru_init_composite);
  m.impl("lru", &lru_composite);
  m.impl("diag_recurrence", &diag_recurrence_composite);
  m.impl("lru_step", &lru_step_composite);
  m.impl("diag_step", &diag_step_composite);
  m.impl("lru_step_weights", &lru_step_weights_composite);
  m.impl("lru_step_packed", &lru_step_packed_composite);
}

}  // namespace torch_lru

// The LRU block's step for the CPU in one pass over its weights (torch_lru::lru_block_step_cpu,
// called by lru_block_step when it applies: float32, no autograd, a few rows). At one token a
// block is three matrix-vector products and a handful of elementwise ops on vectors of 128-512
// numbers; ATen spends as long dispatching those ops as computing them. Here the norm, the three
// products (four rows at a time, so that four independent sums hide the multiply-add latency),
// the complex recurrence, GELU, GLU and the residual run as plain loops on each row.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

namespace torch_lru {
namespace {

// out[r] = dot(W[r, :], v) for W (R, K) row-major. Inlined into a baseline x86-64 and an AVX2 + FMA
// caller, chosen at run time (as the scan's kernels are), so the loops vectorise for each.
__attribute__((always_inline)) inline void gemv_body(const float* W, const float* v, float* out, int64_t R, int64_t K) {
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const float *w0 = W + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < K; ++k) {
      const float x = v[k];
      a0 += w0[k] * x;
      a1 += w1[k] * x;
      a2 += w2[k] * x;
      a3 += w3[k] * x;
    }
    out[r] = a0, out[r + 1] = a1, out[r + 2] = a2, out[r + 3] = a3;
  }
  for (; r < R; ++r) {
    const float* w = W + r * K;
    float a = 0;
#pragma omp simd reduction(+ : a)
    for (int64_t k = 0; k < K; ++k) a += w[k] * v[k];
    out[r] = a;
  }
}

void gemv_baseline(const float* W, const float* v, float* out, int64_t R, int64_t K) { gemv_body(W, v, out, R, K); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,fma"))) void gemv_avx2(const float* W, const float* v, float* out, int64_t R, int64_t K) {
  gemv_body(W, v, out, R, K);
}
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
const bool kHasAvx2 = false;
void gemv_avx2(const float* W, const float* v, float* out, int64_t R, int64_t K) { gemv_body(W, v, out, R, K); }
#endif

void gemv(const float* W, const float* v, float* out, int64_t R, int64_t K, const float* bias) {
  if (kHasAvx2) {
    gemv_avx2(W, v, out, R, K);
  } else {
    gemv_baseline(W, v, out, R, K);
  }
  if (bias != nullptr) {
    for (int64_t i = 0; i < R; ++i) out[i] += bias[i];
  }
}

enum class Norm { kLayer, kRms, kBatch };

struct Weights {
  Norm norm;
  const float *norm_weight, *norm_bias, *mean, *var;
  float eps;
  bool prenorm;
  const float *lam, *W_in, *W_out, *D, *glu_weight, *glu_bias;
  int64_t H, N;
};

void normalise(const Weights& w, const float* x, float* out) {
  const int64_t H = w.H;
  if (w.norm == Norm::kBatch) {
    for (int64_t i = 0; i < H; ++i) {
      out[i] = (x[i] - w.mean[i]) / std::sqrt(w.var[i] + w.eps) * w.norm_weight[i] + w.norm_bias[i];
    }
    return;
  }
  double mean = 0, sq = 0;
  if (w.norm == Norm::kLayer) {
    for (int64_t i = 0; i < H; ++i) mean += x[i];
    mean /= H;
  }
  for (int64_t i = 0; i < H; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float scale = static_cast<float>(1.0 / std::sqrt(sq / H + w.eps));
  for (int64_t i = 0; i < H; ++i) {
    const float n = (x[i] - static_cast<float>(mean)) * scale * w.norm_weight[i];
    out[i] = w.norm == Norm::kLayer ? n + w.norm_bias[i] : n;
  }
}

// One row: x (H) -> out (H); state (2N) interleaved complex, updated in place.
void block_row(const Weights& w, const float* x, float* out, float* state, float* scratch) {
  const int64_t H = w.H, N = w.N;
  float* z = scratch;     // the LRU's input (H)
  float* bu = z + H;      // B u, interleaved (2N)
  float* y = bu + 2 * N;  // the LRU's output (H)
  float* v = y + H;       // the GLU's product (2H)
  if (w.prenorm) {
    normalise(w, x, z);
  } else {
    std::copy(x, x + H, z);
  }
  gemv(w.W_in, z, bu, 2 * N, H, nullptr);
  for (int64_t n = 0; n < N; ++n) {
    const float lr = w.lam[2 * n], li = w.lam[2 * n + 1], sr = state[2 * n], si = state[2 * n + 1];
    state[2 * n] = lr * sr - li * si + bu[2 * n];
    state[2 * n + 1] = lr * si + li * sr + bu[2 * n + 1];
  }
  gemv(w.W_out, state, y, H, 2 * N, nullptr);
  for (int64_t i = 0; i < H; ++i) {
    const float t = w.D != nullptr ? y[i] + z[i] * w.D[i] : y[i];
    y[i] = 0.5f * t * (1.0f + std::erf(t * static_cast<float>(M_SQRT1_2)));  // exact GELU
  }
  gemv(w.glu_weight, y, v, 2 * H, H, w.glu_bias);
  for (int64_t i = 0; i < H; ++i) out[i] = x[i] + v[i] / (1.0f + std::exp(-v[H + i]));
  if (!w.prenorm) {
    std::copy(out, out + H, z);
    normalise(w, z, out);
  }
}

const float* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<float>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_cpu(
    const at::Tensor& x_t, c10::string_view norm, const at::Tensor& norm_weight,
    const std::optional<at::Tensor>& norm_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps, bool prenorm, const at::Tensor& lam,
    const at::Tensor& W_in, const at::Tensor& W_out, const std::optional<at::Tensor>& D, const at::Tensor& glu_weight,
    const at::Tensor& glu_bias, const std::optional<at::Tensor>& state) {
  const char* op = "torch_lru::lru_block_step_cpu";
  const int64_t B = x_t.size(0), H = x_t.size(1), N = lam.size(0);
  auto is_f32 = [](const at::Tensor& t) { return t.scalar_type() == at::kFloat && t.is_contiguous(); };
  TORCH_CHECK(is_f32(x_t) && is_f32(norm_weight) && is_f32(W_in) && is_f32(W_out) && is_f32(glu_weight) &&
                  is_f32(glu_bias) && lam.scalar_type() == at::kComplexFloat && lam.is_contiguous(),
              op, ": takes contiguous float32 tensors (and complex64 lam)");
  TORCH_CHECK(W_in.sizes() == at::IntArrayRef({2 * N, H}) && W_out.sizes() == at::IntArrayRef({H, 2 * N}) &&
                  glu_weight.sizes() == at::IntArrayRef({2 * H, H}) && glu_bias.numel() == 2 * H,
              op, ": weights of the wrong shapes for H = ", H, ", N = ", N);
  Weights w{};
  const std::string kind(norm);
  w.norm = kind == "layer" ? Norm::kLayer : kind == "rms" ? Norm::kRms : Norm::kBatch;
  TORCH_CHECK(kind == "layer" || kind == "rms" || (kind == "batch" && running_mean && running_var), op,
              ": unsupported norm \"", kind, "\"");
  w.norm_weight = norm_weight.data_ptr<float>();
  w.norm_bias = data_or_null(norm_bias);
  w.mean = data_or_null(running_mean);
  w.var = data_or_null(running_var);
  w.eps = static_cast<float>(eps);
  w.prenorm = prenorm;
  w.lam = reinterpret_cast<const float*>(lam.data_ptr<c10::complex<float>>());
  w.W_in = W_in.data_ptr<float>();
  w.W_out = W_out.data_ptr<float>();
  w.D = data_or_null(D);
  w.glu_weight = glu_weight.data_ptr<float>();
  w.glu_bias = glu_bias.data_ptr<float>();
  w.H = H, w.N = N;

  auto out = at::empty_like(x_t);
  auto new_state =
      state.has_value() && state->defined() ? state->contiguous().clone() : at::zeros({B, N}, lam.options());
  TORCH_CHECK(new_state.sizes() == at::IntArrayRef({B, N}) && new_state.scalar_type() == at::kComplexFloat, op,
              ": state must be complex64 (B, N) = (", B, ", ", N, "), got ", new_state.scalar_type(), " ",
              new_state.sizes());
  std::vector<float> scratch(static_cast<size_t>(4 * H + 2 * N));
  auto* s = reinterpret_cast<float*>(new_state.data_ptr<c10::complex<float>>());
  for (int64_t b = 0; b < B; ++b) {
    block_row(w, x_t.data_ptr<float>() + b * H, out.data_ptr<float>() + b * H, s + b * 2 * N, scratch.data());
  }
  return {out, new_state};
}

std::tuple<at::Tensor, at::Tensor> lru_block_step_cpu_meta(const at::Tensor& x_t, c10::string_view, const at::Tensor&,
                                                           const std::optional<at::Tensor>&,
                                                           const std::optional<at::Tensor>&,
                                                           const std::optional<at::Tensor>&, double, bool,
                                                           const at::Tensor& lam, const at::Tensor&, const at::Tensor&,
                                                           const std::optional<at::Tensor>&, const at::Tensor&,
                                                           const at::Tensor&, const std::optional<at::Tensor>&) {
  return {at::empty_like(x_t), at::empty_symint({x_t.sym_size(0), lam.sym_size(0)}, lam.options())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torch_lru, m) {
  m.def(
      "lru_block_step_cpu(Tensor x_t, str norm, Tensor norm_weight, Tensor? norm_bias, Tensor? running_mean, "
      "Tensor? running_var, float eps, bool prenorm, Tensor lam, Tensor W_in, Tensor W_out, Tensor? D, "
      "Tensor glu_weight, Tensor glu_bias, Tensor? state=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) { m.impl("lru_block_step_cpu", &lru_block_step_cpu); }
TORCH_LIBRARY_IMPL(torch_lru, Meta, m) { m.impl("lru_block_step_cpu", &lru_block_step_cpu_meta); }

}  // namespace torch_lru

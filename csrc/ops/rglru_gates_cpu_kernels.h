// CPU kernels of the RG-LRU's gates (torch_lru::rglru_gates and its backward): the chain from the
// gate pre-activations to the recurrence's coefficient and input, one pass over the rows forward and
// one backward, instead of a dozen elementwise ATen ops (and twice as many in their backward), each
// of which reads and writes the whole (B, L, N) tensor.
//
// Compiled once per instruction set inside namespace TORCH_LRU_CPU_ISA, like scan_cpu_kernels.h.
// float32 uses the exp and expm1 below, written as plain arithmetic so that the loop over channels
// vectorises (the libm calls would not); float64 calls libm.
#pragma once

#ifndef TORCH_LRU_CPU_ISA
#error "define TORCH_LRU_CPU_ISA (the namespace of this instruction set) before including this file"
#endif

namespace torch_lru::cpu::TORCH_LRU_CPU_ISA {
namespace gates {

// exp(x) for float: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^7 (relative
// error below 6e-9, under float's half ulp), 2^n built in the exponent bits. x is clamped to where
// 2^n stays normal: exp(-87.3) = 1.2e-38 stands for anything smaller. NaN passes through.
inline float exp_f(float x) {
  const float v = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // Round to nearest by the 1.5 * 2^23 trick: plain arithmetic, which the baseline SSE2 vectorises.
  const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (v - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split in two (Cody and Waite)
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return x != x ? x : p * scale;
}

// expm1(y) for float: near zero its Taylor series to y^9 (relative error below 3e-10 for |y| < 1/2,
// with no cancellation), elsewhere exp(y) - 1, whose rounding error is then small against the result.
inline float expm1_f(float y) {
  float p = 1.0f / 362880.0f;
  p = p * y + 1.0f / 40320.0f;
  p = p * y + 1.0f / 5040.0f;
  p = p * y + 1.0f / 720.0f;
  p = p * y + 1.0f / 120.0f;
  p = p * y + 1.0f / 24.0f;
  p = p * y + 1.0f / 6.0f;
  p = p * y + 0.5f;
  p = p * y + 1.0f;
  const float near = p * y;
  const float far = exp_f(y) - 1.0f;
  return (y > -0.5f && y < 0.5f) ? near : far;
}

inline float exp_of(float x) { return exp_f(x); }
inline float expm1_of(float x) { return expm1_f(x); }
inline double exp_of(double x) { return std::exp(x); }
inline double expm1_of(double x) { return std::expm1(x); }

constexpr int64_t kRowsPerBlock = kGateRowsPerBlock;

// The forward chain at one element, shared by both kernels (the backward recomputes it).
template <typename T>
struct Chain {
  T r, i, a, one_minus_a2;  // 1 - a^2 before the clamp
  bool clamped;             // 1 - a^2 < tiny: sqrt's argument is tiny and its derivative is zero
  T mult;                   // sqrt(max(1 - a^2, tiny))

  static Chain of(T pre_a, T pre_x, T sp, T c, T tiny) {
    Chain g;
    g.r = T(1) / (T(1) + exp_of(-pre_a));
    g.i = T(1) / (T(1) + exp_of(-pre_x));
    const T log_a = -c * g.r * sp;
    g.a = exp_of(log_a);
    g.one_minus_a2 = -expm1_of(T(2) * log_a);
    g.clamped = g.one_minus_a2 < tiny;
    g.mult = std::sqrt(g.clamped ? tiny : g.one_minus_a2);
    return g;
  }
};

}  // namespace gates

// Forward over `rows` rows of N channels. sp = softplus(-Lambda) (N); valid (rows) or null: false
// where the step is padding (a = 1, input = 0). tiny: where 1 - a^2 is clamped (see rglru_gates.cpp).
template <typename T>
void rglru_gates_forward_kernel(const T* x, const T* pre_a, const T* pre_x, const T* sp, const bool* valid, T c, T tiny,
                                T* a, T* input, int64_t rows, int64_t N) {
  at::parallel_for(0, (rows + gates::kRowsPerBlock - 1) / gates::kRowsPerBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t row = b0 * gates::kRowsPerBlock; row < std::min(rows, b1 * gates::kRowsPerBlock); ++row) {
      const int64_t o = row * N;
      if (valid != nullptr && !valid[row]) {
        std::fill_n(a + o, N, T(1));
        std::fill_n(input + o, N, T(0));
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) {
        const auto g = gates::Chain<T>::of(pre_a[o + j], pre_x[o + j], sp[j], c, tiny);
        a[o + j] = g.a;
        input[o + j] = x[o + j] * g.i * g.mult;
      }
    }
  });
}

// Backward of the forward above for the cotangents ga (of a) and gi (of input): writes gx, gpa and
// gpx (like x) and, unless glam_blocks is null, per block of rows the sum over its rows of
// dL/d(log a) * (-c r), which is dL/d softplus(-Lambda); the caller sums the blocks in order and
// applies softplus's derivative.
template <typename T>
void rglru_gates_backward_kernel(const T* ga, const T* gi, const T* x, const T* pre_a, const T* pre_x, const T* sp,
                                 const bool* valid, T c, T tiny, T* gx, T* gpa, T* gpx, T* glam_blocks, int64_t rows,
                                 int64_t N) {
  at::parallel_for(0, (rows + gates::kRowsPerBlock - 1) / gates::kRowsPerBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      T* acc = glam_blocks != nullptr ? glam_blocks + blk * N : nullptr;
      if (acc != nullptr) std::fill_n(acc, N, T(0));
      for (int64_t row = blk * gates::kRowsPerBlock; row < std::min(rows, (blk + 1) * gates::kRowsPerBlock); ++row) {
        const int64_t o = row * N;
        if (valid != nullptr && !valid[row]) {  // a and input were constants there
          std::fill_n(gx + o, N, T(0));
          std::fill_n(gpa + o, N, T(0));
          std::fill_n(gpx + o, N, T(0));
          continue;
        }
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) {
          const auto ch = gates::Chain<T>::of(pre_a[o + j], pre_x[o + j], sp[j], c, tiny);
          const T r = ch.r, i = ch.i, a_j = ch.a, mult = ch.mult;
          const bool clamped = ch.clamped;
          const T g_in = gi[o + j];
          const T xv = x[o + j];
          gx[o + j] = g_in * i * mult;
          gpx[o + j] = g_in * xv * mult * i * (T(1) - i);
          // d mult / d log a = -a^2 / mult where 1 - a^2 is not clamped (zero where it is).
          const T g_mult = g_in * xv * i;
          const T g_log_a = ga[o + j] * a_j - (clamped ? T(0) : g_mult * a_j * a_j / mult);
          gpa[o + j] = g_log_a * (-c * sp[j]) * r * (T(1) - r);
          if (acc != nullptr) acc[j] += g_log_a * (-c * r);
        }
      }
    }
  });
}

}  // namespace torch_lru::cpu::TORCH_LRU_CPU_ISA

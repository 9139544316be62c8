// Entry points of the CPU kernels, compiled once per instruction set (see scan_cpu_kernels.h and
// rglru_gates_cpu_kernels.h). All tensors are contiguous (B, L, N), lam (N,) or (B, L, N) as
// kPerStep says; optional outputs and h0 are null when absent. The RG-LRU gates see (B, L) as rows.
#pragma once

#include <cstdint>

namespace torch_lru::cpu {
// The RG-LRU gate kernels hand out rows in blocks of this many and sum the time-invariant
// grad_Lambda per block, the blocks then in order: the result does not depend on the thread count.
constexpr int64_t kGateRowsPerBlock = 256;
}  // namespace torch_lru::cpu

#define TORCH_LRU_DECLARE_CPU_KERNELS(isa)                                                                            \
  namespace torch_lru::cpu::isa {                                                                                     \
  template <typename T, bool kPerStep>                                                                                \
  void scan_forward_kernel(const T* lam, const T* x, const T* h0, T* h, int64_t B, int64_t L, int64_t N,              \
                           bool reverse);                                                                             \
  template <typename T, bool kPerStep>                                                                                \
  void scan_backward_kernel(const T* g, const T* lam, const T* h, const T* h0, T* gx, T* glam, T* gh0, int64_t B,     \
                            int64_t L, int64_t N, bool reverse);                                                      \
  template <typename T>                                                                                               \
  void rglru_gates_forward_kernel(const T* x, const T* pre_a, const T* pre_x, const T* sp, const bool* valid, T c,    \
                                  T tiny, T* a, T* input, int64_t rows, int64_t N);                                   \
  template <typename T>                                                                                               \
  void rglru_gates_backward_kernel(const T* ga, const T* gi, const T* x, const T* pre_a, const T* pre_x, const T* sp, \
                                   const bool* valid, T c, T tiny, T* gx, T* gpa, T* gpx, T* glam_blocks,             \
                                   int64_t rows, int64_t N);                                                          \
  }

TORCH_LRU_DECLARE_CPU_KERNELS(baseline)
TORCH_LRU_DECLARE_CPU_KERNELS(avx2)
TORCH_LRU_DECLARE_CPU_KERNELS(avx512)

// Explicit instantiations for every dtype, used by each scan_cpu_isa_*.cpp.
#define TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(T)                                                                     \
  template void scan_forward_kernel<T, false>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, bool);    \
  template void scan_forward_kernel<T, true>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, bool);     \
  template void scan_backward_kernel<T, false>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, \
                                               int64_t, bool);                                                       \
  template void scan_backward_kernel<T, true>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,  \
                                              int64_t, bool);
#define TORCH_LRU_INSTANTIATE_GATE_KERNELS_FOR(T)                                                                \
  template void rglru_gates_forward_kernel<T>(const T*, const T*, const T*, const T*, const bool*, T, T, T*, T*, \
                                              int64_t, int64_t);                                                 \
  template void rglru_gates_backward_kernel<T>(const T*, const T*, const T*, const T*, const T*, const T*,       \
                                               const bool*, T, T, T*, T*, T*, T*, int64_t, int64_t);
#define TORCH_LRU_INSTANTIATE_CPU_KERNELS                    \
  TORCH_LRU_INSTANTIATE_GATE_KERNELS_FOR(float)              \
  TORCH_LRU_INSTANTIATE_GATE_KERNELS_FOR(double)             \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(float)               \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(double)              \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(c10::complex<float>) \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(c10::complex<double>)

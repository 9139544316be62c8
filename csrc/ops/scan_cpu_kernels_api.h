// Entry points of the CPU kernels, compiled once per instruction set (see scan_cpu_kernels.h).
// All tensors are contiguous (B, L, N), lam (N,) or (B, L, N) as kPerStep says; optional outputs
// and h0 are null when absent.
#pragma once

#include <cstdint>

#define TORCH_LRU_DECLARE_CPU_KERNELS(isa)                                                                        \
  namespace torch_lru::cpu::isa {                                                                                 \
  template <typename T, bool kPerStep>                                                                            \
  void scan_forward_kernel(const T* lam, const T* x, const T* h0, T* h, int64_t B, int64_t L, int64_t N,          \
                           bool reverse);                                                                         \
  template <typename T, bool kPerStep>                                                                            \
  void scan_backward_kernel(const T* g, const T* lam, const T* h, const T* h0, T* gx, T* glam, T* gh0, int64_t B, \
                            int64_t L, int64_t N, bool reverse);                                                  \
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
#define TORCH_LRU_INSTANTIATE_CPU_KERNELS                    \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(float)               \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(double)              \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(c10::complex<float>) \
  TORCH_LRU_INSTANTIATE_CPU_KERNELS_FOR(c10::complex<double>)

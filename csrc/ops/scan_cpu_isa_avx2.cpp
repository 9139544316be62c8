// The CPU kernels compiled for AVX2 + FMA (chosen at run time when the processor has both): twice
// the vector width of baseline x86-64, which keeps one core ahead of memory on complex data.
// Everything included before the pragma is compiled for the baseline, so only this namespace's
// kernels use the wider instructions.
#include <ATen/Parallel.h>
#include <c10/util/complex.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>  // streaming stores and masked loads (Pairs)
#endif

#include "ops/scan_combine.h"
#include "ops/scan_cpu_kernels_api.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#define TORCH_LRU_CPU_HAS_AVX2 1
#endif

#define TORCH_LRU_CPU_ISA avx2
#include "ops/rglru_gates_cpu_kernels.h"
#include "ops/scan_cpu_kernels.h"

namespace torch_lru::cpu::avx2 {
TORCH_LRU_INSTANTIATE_CPU_KERNELS
}  // namespace torch_lru::cpu::avx2

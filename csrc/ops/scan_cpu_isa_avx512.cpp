// The CPU kernels compiled for AVX-512 (F, DQ, VL, BW; chosen at run time when the processor has
// them), with 512-bit vectors preferred: in cache the backward with grad_lam ran about 1.4x faster
// than the AVX2 build, which leaves each core more time to wait on memory (docs/perf.md).
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
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512")
#define TORCH_LRU_CPU_HAS_AVX512 1
#endif

#define TORCH_LRU_CPU_ISA avx512
#include "ops/rglru_gates_cpu_kernels.h"
#include "ops/scan_cpu_kernels.h"

namespace torch_lru::cpu::avx512 {
TORCH_LRU_INSTANTIATE_CPU_KERNELS
}  // namespace torch_lru::cpu::avx512

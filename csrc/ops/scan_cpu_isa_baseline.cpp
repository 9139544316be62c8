// The CPU kernels for the baseline x86-64 (SSE2) or any other architecture.
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

#define TORCH_LRU_CPU_ISA baseline
#include "ops/rglru_gates_cpu_kernels.h"
#include "ops/scan_cpu_kernels.h"

namespace torch_lru::cpu::baseline {
TORCH_LRU_INSTANTIATE_CPU_KERNELS
}  // namespace torch_lru::cpu::baseline

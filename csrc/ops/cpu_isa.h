// The choice among the builds of the CPU kernels (scan_cpu_isa_*.cpp): AVX-512, else AVX2 + FMA,
// when the processor has them, else the baseline.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace torch_lru::cpu {

// The widest kernel build the processor runs, or a narrower one named by the environment variable
// TORCH_LRU_CPU_ISA (baseline, avx2, avx512; read once), to compare builds or test each of them.
enum class Isa { baseline, avx2, avx512 };

inline Isa best_isa() {
  static const Isa isa = [] {
    Isa best = Isa::baseline;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) {
      best = Isa::avx512;
    }
#endif
    const char* want = std::getenv("TORCH_LRU_CPU_ISA");
    if (want == nullptr || *want == '\0') return best;
    const std::string name(want);
    const Isa cap = name == "baseline" ? Isa::baseline : name == "avx2" ? Isa::avx2 : Isa::avx512;
    TORCH_CHECK(name == "baseline" || name == "avx2" || name == "avx512",
                "TORCH_LRU_CPU_ISA must be baseline, avx2 or avx512, got '", name, "'");
    return std::min(best, cap);
  }();
  return isa;
}

// The entry of the build best_isa() names, among the same kernel compiled for each build.
template <typename Kernel>
inline Kernel of_best_isa(Kernel avx512, Kernel avx2, Kernel baseline) {
  switch (best_isa()) {
    case Isa::avx512:
      return avx512;
    case Isa::avx2:
      return avx2;
    default:
      return baseline;
  }
}

}  // namespace torch_lru::cpu

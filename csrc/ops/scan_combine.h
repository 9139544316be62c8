// Host/device math of the linear scan h_t = a_t * h_{t-1} + x_t.
//
// A step is the affine map h -> a * h + b. Composing maps is associative, which is what lets the
// scan run in parallel: chunks are reduced to one map each, the maps are combined in order to get
// every chunk's carry-in, and each chunk is then scanned from its carry. The CPU kernels use these
// functions for their chunked path, so the CPU tests exercise the same logic the CUDA kernels use.
#pragma once

#include <cstdint>

#include <c10/macros/Macros.h>
#include <c10/util/complex.h>

namespace torch_lru {

// Complex conjugate that is the identity for real types: the backward of the scan runs with
// conj(a) (PyTorch's conjugate-Wirtinger convention), which for real dtypes is a itself.
template <typename T>
C10_HOST_DEVICE inline T conj_value(T v) {
  return v;
}
template <typename T>
C10_HOST_DEVICE inline c10::complex<T> conj_value(c10::complex<T> v) {
  return c10::complex<T>(v.real(), -v.imag());
}

// a to the power n >= 0 by repeated squaring: the product of a constant coefficient over n steps.
template <typename T>
C10_HOST_DEVICE inline T power(T a, int64_t n) {
  T result(1);
  for (; n > 0; n >>= 1, a = a * a) {
    if (n & 1) result = result * a;
  }
  return result;
}

// The affine map h -> a * h + b.
template <typename T>
struct Affine {
  T a;
  T b;

  C10_HOST_DEVICE static Affine identity() { return {T(1), T(0)}; }
  C10_HOST_DEVICE T apply(T h) const { return a * h + b; }
};

// The map "first, then second": h -> second.a * (first.a * h + first.b) + second.b.
template <typename T>
C10_HOST_DEVICE inline Affine<T> combine(const Affine<T>& first, const Affine<T>& second) {
  return {second.a * first.a, second.a * first.b + second.b};
}

// Split of L steps into chunks: a first one of `lead` steps (0: chunk_len), then chunks of
// chunk_len (the last may be shorter). Chunk c covers the logical steps [begin(c), end(c)) of the
// scan's direction of travel.
struct ChunkPlan {
  int64_t length;     // L
  int64_t chunk_len;  // steps per chunk, >= 1
  int64_t lead = 0;   // steps of the first chunk; 0: chunk_len

  C10_HOST_DEVICE int64_t lead_len() const { return lead > 0 ? lead : chunk_len; }
  C10_HOST_DEVICE int64_t num_chunks() const {
    const int64_t first = lead_len();
    return length <= first ? 1 : 1 + (length - first + chunk_len - 1) / chunk_len;
  }
  C10_HOST_DEVICE int64_t begin(int64_t c) const { return c == 0 ? 0 : lead_len() + (c - 1) * chunk_len; }
  C10_HOST_DEVICE int64_t end(int64_t c) const {
    int64_t e = begin(c + 1);
    return e < length ? e : length;
  }
  // The chunk holding logical step s.
  C10_HOST_DEVICE int64_t chunk_of(int64_t s) const {
    const int64_t first = lead_len();
    return s < first ? 0 : 1 + (s - first) / chunk_len;
  }
};

// Physical time index of logical step s when the scan travels backwards (reverse) or forwards.
C10_HOST_DEVICE inline int64_t time_index(int64_t s, int64_t length, bool reverse) {
  return reverse ? length - 1 - s : s;
}

}  // namespace torch_lru

// The tiled, single-pass scan of the CUDA kernels, as host/device code: tile geometry, the two
// problems the kernel solves (forward and backward) and the per-thread phases. The CUDA kernel
// (cuda/scan_cuda.cu) adds only what is CUDA's own: the thread mapping, shared memory and the
// status flags it spins on. The GoogleTest suite runs these same functions on the CPU in an
// emulation of the kernel (tiles in a shuffled order, each predecessor's status chosen at random),
// so the index math and the look-back algebra are tested on machines without a GPU.
//
// The scan h_s = a_s * h_{s-1} + x_s over logical steps s of a (B, L, N) problem is cut into tiles
// of kChannels channels by kSegments * kItems steps. A tile's thread (lane, seg) holds kItems
// consecutive steps of one channel in registers and reduces them to one affine map; the maps of
// the segments give each segment's carry within the tile. The tile's carry-in comes from the
// tiles before it along L (its chain) by decoupled look-back: every tile publishes its aggregate
// map as soon as it has it, and its end state (an inclusive prefix) once its carry-in is known; a
// tile folds its predecessors' aggregates until it meets a published end state. Tiles are claimed
// in order from a counter, so a tile waits only on tiles that are already running.
#pragma once

#include <cstdint>

#include "torch_lru/scan_combine.h"

namespace torch_lru {

// Compile-time shape of a tile. kChannels is the warp size so a warp reads kChannels consecutive
// channels of one step (coalesced); fewer items for wide types keep the registers in bounds.
template <typename T>
struct ScanTileTraits {
  static constexpr int kChannels = 32;
  static constexpr int kSegments = 8;
  static constexpr int kItems = sizeof(T) >= 16 ? 8 : 16;
  static constexpr int kThreads = kChannels * kSegments;
  static constexpr int kSteps = kSegments * kItems;  // steps per tile
};

// Status of a tile's publication, per channel.
enum TileStatus : int { kTileEmpty = 0, kTileAggregate = 1, kTilePrefix = 2 };

// The tiles of a (B, L, N) problem. A chain is one (batch row, block of kChannels channels); tile
// ids are chunk-major, so a tile's predecessor in its chain has the id `chains()` smaller and was
// claimed before it.
struct TileGrid {
  int64_t B, L, N;
  int64_t channels;  // per tile
  int64_t steps;     // per tile

  C10_HOST_DEVICE int64_t channel_tiles() const { return (N + channels - 1) / channels; }
  C10_HOST_DEVICE int64_t chains() const { return B * channel_tiles(); }
  C10_HOST_DEVICE int64_t chunks() const { return (L + steps - 1) / steps; }
  C10_HOST_DEVICE int64_t tiles() const { return chains() * chunks(); }
};

// Where tile `id` sits.
struct TileCoords {
  int64_t id, chunk, batch, channel0;

  C10_HOST_DEVICE static TileCoords of(const TileGrid& g, int64_t id) {
    const int64_t chain = id % g.chains();
    return {id, id / g.chains(), chain / g.channel_tiles(), (chain % g.channel_tiles()) * g.channels};
  }
  C10_HOST_DEVICE int64_t predecessor(const TileGrid& g) const { return id - g.chains(); }
  // First logical step of segment `seg` of this tile, for `items` steps per segment.
  C10_HOST_DEVICE int64_t segment_begin(const TileGrid& g, int seg, int items) const {
    return chunk * g.steps + static_cast<int64_t>(seg) * items;
  }
};

// Forward: h_s = lam_s h_{s-1} + x_s, from h0 (or zero); writes h. Steps run forwards in time, or
// backwards when reverse.
template <typename T, bool kPerStep>
struct ForwardSteps {
  static constexpr bool kReducesLam = false;
  static constexpr bool kTimeInvariant = !kPerStep;  // coefficients are re-read, not held
  const T* lam;                                      // (B, L, N) when kPerStep, else (N,)
  const T* x;
  const T* h0;  // (B, N) or null
  T* h;
  int64_t L, N;
  bool reverse;

  C10_HOST_DEVICE int64_t offset(int64_t b, int64_t s, int64_t n) const {
    return (b * L + time_index(s, L, reverse)) * N + n;
  }
  C10_HOST_DEVICE T initial(int64_t b, int64_t n) const { return h0 != nullptr ? h0[b * N + n] : T(0); }
  C10_HOST_DEVICE T coefficient(int64_t b, int64_t s, int64_t n) const {
    return kPerStep ? lam[offset(b, s, n)] : lam[n];
  }
  C10_HOST_DEVICE T input(int64_t b, int64_t s, int64_t n) const { return x[offset(b, s, n)]; }
  // Stores the state after step s; returns this step's share of a reduced grad_lam (none here).
  C10_HOST_DEVICE T output(int64_t b, int64_t s, int64_t n, T state) const {
    h[offset(b, s, n)] = state;
    return T(0);
  }
};

// Backward, in its own direction of travel (the forward's reversed): d_s = conj(lam_{s-1}) d_{s-1}
// + g_s with the coefficient of the step before in travel order (zero at s = 0: nothing comes
// after the forward's last step). grad_x = d; grad_lam at a step = conj(h of the forward's step
// before) * d, written per step or returned for a per-(b, n) reduction; grad_h0 = conj(lam of the
// forward's first step) * d there.
template <typename T, bool kPerStep>
struct BackwardSteps {
  static constexpr bool kReducesLam = !kPerStep;
  static constexpr bool kTimeInvariant = !kPerStep;
  const T* g;
  const T* lam;
  const T* h;
  const T* h0;  // or null
  T* grad_x;
  T* grad_lam;  // per step (B, L, N), or null; a reduced grad_lam is the kernel's (want_lam)
  T* grad_h0;   // or null
  int64_t L, N;
  bool reverse;  // the forward's
  bool want_lam;

  C10_HOST_DEVICE int64_t offset(int64_t b, int64_t s, int64_t n) const {
    return (b * L + time_index(s, L, !reverse)) * N + n;
  }
  C10_HOST_DEVICE T initial(int64_t, int64_t) const { return T(0); }
  C10_HOST_DEVICE T lam_at(int64_t b, int64_t s, int64_t n) const { return kPerStep ? lam[offset(b, s, n)] : lam[n]; }
  C10_HOST_DEVICE T coefficient(int64_t b, int64_t s, int64_t n) const {
    return s == 0 ? T(0) : conj_value(lam_at(b, s - 1, n));
  }
  C10_HOST_DEVICE T input(int64_t b, int64_t s, int64_t n) const { return g[offset(b, s, n)]; }
  C10_HOST_DEVICE T output(int64_t b, int64_t s, int64_t n, T d) const {
    const int64_t off = offset(b, s, n);
    grad_x[off] = d;
    const bool first = s == L - 1;  // the forward's first step
    if (first && grad_h0 != nullptr) grad_h0[b * N + n] = conj_value(lam_at(b, s, n)) * d;
    if (!want_lam) return T(0);
    const T before = first ? (h0 != nullptr ? h0[b * N + n] : T(0)) : h[offset(b, s + 1, n)];
    const T ga = conj_value(before) * d;
    if (kPerStep) {
      grad_lam[off] = ga;
      return T(0);
    }
    return ga;
  }
};

// Phase 1 of a thread: loads its kItems steps (past L: the identity step) and returns their map.
// A time-invariant coefficient is not kept in `a` (phase 3 reads it again, from cache): that frees
// kItems registers.
template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline Affine<T> load_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, T (&a)[kItems],
                                              T (&x)[kItems]) {
  Affine<T> map = Affine<T>::identity();
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    const bool live = s < steps.L;
    const T ai = live ? steps.coefficient(b, s, n) : T(1);
    if (!Steps::kTimeInvariant) a[i] = ai;
    x[i] = live ? steps.input(b, s, n) : T(0);
    map = combine(map, Affine<T>{ai, x[i]});
  }
  return map;
}

// The carry-in of segment `seg`: the tile's carry-in run through the segments before it.
template <typename T, typename SegmentMaps>
C10_HOST_DEVICE inline T segment_carry(T tile_carry, const SegmentMaps& maps, int seg) {
  for (int j = 0; j < seg; ++j) tile_carry = maps(j).apply(tile_carry);
  return tile_carry;
}

// One predecessor met on the look-back walk. `acc` holds the maps of the tiles between it and the
// tile looking back, in order. Returns true, with the carry-in, when the predecessor had its end
// state; otherwise folds its aggregate into acc and the walk goes on to the tile before it.
template <typename T>
C10_HOST_DEVICE inline bool lookback_fold(int status, const Affine<T>& aggregate, T end_state, Affine<T>& acc,
                                          T& carry_in) {
  if (status == kTilePrefix) {
    carry_in = acc.apply(end_state);
    return true;
  }
  acc = combine(aggregate, acc);
  return false;
}

// Phase 3 of a thread: runs its steps from the segment's carry-in and writes them; returns the sum
// of the steps' grad_lam shares (backward, time-invariant lam) in step order.
template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline T scan_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, const T (&a)[kItems],
                                      const T (&x)[kItems], T state) {
  T lam_share(0);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    if (s < steps.L) {
      state = (Steps::kTimeInvariant ? steps.coefficient(b, s, n) : a[i]) * state + x[i];
      const T share = steps.output(b, s, n, state);
      if (Steps::kReducesLam) lam_share += share;
    }
  }
  return lam_share;
}

}  // namespace torch_lru

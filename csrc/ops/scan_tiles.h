// The tiled, single-pass scan of the CUDA kernels, as host/device code: tile geometry, the two
// problems the kernel solves (forward and backward) and the per-thread phases. The CUDA kernel
// (cuda/scan_cuda.cu) adds only what is CUDA's own: the thread mapping, shared memory and the
// memory operations on the status flags. The GoogleTest suite runs these same functions on the
// CPU, in an emulation of the kernel (tiles in claim order, each predecessor's status chosen at
// random) and in a stress of the protocol (CPU threads claiming tiles from an atomic counter, with
// release/acquire flags and random delays), so the index math, the look-back algebra and the
// publication order are tested on machines without a GPU.
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

#include "ops/scan_combine.h"

namespace torch_lru {

// Compile-time shape of the tiles of a problem (ForwardSteps or BackwardSteps below). kChannels is
// the warp size so a warp reads kChannels consecutive channels of one step (coalesced). A thread
// holds kItems steps in each of the problem's kArrays register arrays: up to 16 (8 for 16-byte
// types), fewer where the arrays would pass 256 bytes, which keeps registers near 128 a thread
// (two blocks an SM). The look-back reads the statuses of kLookbackWindow predecessors at once,
// then their values at once (two trips to L2 a window instead of two a predecessor); the window
// holds 32 bytes of maps.
template <typename Steps>
struct ScanTileTraits {
  using T = typename Steps::value_type;
  static constexpr int kChannels = 32;
  static constexpr int kSegments = 8;
  static constexpr int kMaxItems = sizeof(T) >= 16 ? 8 : 16;
  static constexpr int kFit = 256 / (Steps::kArrays * static_cast<int>(sizeof(T)));
  static constexpr int kItems = kFit >= kMaxItems ? kMaxItems : (kFit >= 8 ? 8 : 4);
  static constexpr int kThreads = kChannels * kSegments;
  static constexpr int kSteps = kSegments * kItems;  // steps per tile
  static constexpr int kLookbackWindow = sizeof(T) >= 16 ? 2 : (sizeof(T) >= 8 ? 4 : 8);
};

// Status of a tile's publication, per channel.
enum TileStatus : int { kTileEmpty = 0, kTileAggregate = 1, kTilePrefix = 2 };

// The tiles of a (B, L, N) problem. A chain is one (batch row, block of kChannels channels); tile
// ids are chunk-major, so a tile's predecessor in its chain has the id `chains()` smaller and was
// claimed before it. The launcher keeps tiles() below 2^31, so tile arithmetic is 32-bit.
struct TileGrid {
  int64_t B, L, N;
  int64_t channels;  // per tile
  int64_t steps;     // per tile
  // Counted once on the host: a 64-bit division is a software routine on the GPU.
  int64_t n_channel_tiles, n_chunks;

  C10_HOST_DEVICE TileGrid(int64_t B_, int64_t L_, int64_t N_, int64_t channels_, int64_t steps_)
      : B(B_),
        L(L_),
        N(N_),
        channels(channels_),
        steps(steps_),
        n_channel_tiles((N_ + channels_ - 1) / channels_),
        n_chunks((L_ + steps_ - 1) / steps_) {}
  C10_HOST_DEVICE int64_t channel_tiles() const { return n_channel_tiles; }
  C10_HOST_DEVICE int64_t chains() const { return B * n_channel_tiles; }
  C10_HOST_DEVICE int64_t chunks() const { return n_chunks; }
  C10_HOST_DEVICE int64_t tiles() const { return chains() * n_chunks; }
};

// Where tile `id` sits.
struct TileCoords {
  int64_t id, chunk, batch, channel0;

  C10_HOST_DEVICE static TileCoords of(const TileGrid& g, int64_t id) {
    // 32-bit divisions: a 64-bit one is a software routine of some 70 instructions on the GPU.
    const auto i = static_cast<uint32_t>(id), chains = static_cast<uint32_t>(g.chains());
    const auto channel_tiles = static_cast<uint32_t>(g.channel_tiles());
    const uint32_t chain = i % chains;
    return {id, i / chains, chain / channel_tiles, static_cast<int64_t>(chain % channel_tiles) * g.channels};
  }
  C10_HOST_DEVICE int64_t predecessor(const TileGrid& g) const { return id - g.chains(); }
  // First logical step of segment `seg` of this tile, for `items` steps per segment.
  C10_HOST_DEVICE int64_t segment_begin(const TileGrid& g, int seg, int items) const {
    return chunk * g.steps + static_cast<int64_t>(seg) * items;
  }
};

// The two problems. Each gives a thread's steps two ways: by (b, s, n) with bounds, for segments
// at the ends of the sequence, and, for a full segment (every step inside, none at an end), as
// pointers at its first step and a stride of +-N: step i lies i * stride elements on, offsets that
// fit in 32 bits (the launcher checks (kItems + 1) * N does). A time-invariant coefficient is read
// once per thread (channel_coefficient) and passed in as a_n.
//
// `aux` is a per-step value loaded with the inputs in phase 1 and handed to `output` in phase 3:
// the backward's forward state before the step, for grad_lam. Loading it with the inputs, before
// any store, keeps every load of a segment in flight at once.

// Forward: h_s = lam_s h_{s-1} + x_s, from h0 (or zero); writes h. Steps run forwards in time, or
// backwards when reverse.
template <typename T, bool kPerStep>
struct ForwardSteps {
  using value_type = T;
  static constexpr bool kReducesLam = false;
  static constexpr bool kTimeInvariant = !kPerStep;
  static constexpr int kArrays = kPerStep ? 2 : 1;  // a thread's register arrays: (lam,) x
  const T* lam;                                     // (B, L, N) when kPerStep, else (N,)
  const T* x;
  const T* h0;  // (B, N) or null
  T* h;
  int64_t L, N;
  bool reverse;

  C10_HOST_DEVICE int64_t offset(int64_t b, int64_t s, int64_t n) const {
    return (b * L + time_index(s, L, reverse)) * N + n;
  }
  C10_HOST_DEVICE T initial(int64_t b, int64_t n) const { return h0 != nullptr ? h0[b * N + n] : T(0); }
  C10_HOST_DEVICE T channel_coefficient(int64_t n) const { return lam[n]; }
  C10_HOST_DEVICE T coefficient(int64_t b, int64_t s, int64_t n, T a_n) const {
    return kPerStep ? lam[offset(b, s, n)] : a_n;
  }
  C10_HOST_DEVICE T input(int64_t b, int64_t s, int64_t n) const { return x[offset(b, s, n)]; }
  C10_HOST_DEVICE T aux(int64_t, int64_t, int64_t) const { return T(0); }
  // Stores the state after step s; returns this step's share of a reduced grad_lam (none here).
  C10_HOST_DEVICE T output(int64_t b, int64_t s, int64_t n, T state, T) const {
    h[offset(b, s, n)] = state;
    return T(0);
  }

  C10_HOST_DEVICE bool full(int64_t s0, int items) const { return s0 + items <= L; }
  struct Segment {
    const T* lam;
    const T* x;
    T* h;
    int stride;
    C10_HOST_DEVICE T coefficient(int i) const { return lam[i * stride]; }
    C10_HOST_DEVICE T input(int i) const { return x[i * stride]; }
    C10_HOST_DEVICE T aux(int) const { return T(0); }
    C10_HOST_DEVICE T output(int i, T state, T) const {
      h[i * stride] = state;
      return T(0);
    }
  };
  C10_HOST_DEVICE Segment segment(int64_t b, int64_t s0, int64_t n) const {
    const int64_t o = offset(b, s0, n);
    return {kPerStep ? lam + o : lam, x + o, h + o, static_cast<int>(reverse ? -N : N)};
  }
};

// Backward, in its own direction of travel (the forward's reversed): d_s = conj(lam_{s-1}) d_{s-1}
// + g_s with the coefficient of the step before in travel order (zero at s = 0: nothing comes
// after the forward's last step). grad_x = d; grad_lam at a step = conj(h of the forward's step
// before) * d, written per step or returned for a per-(b, n) reduction; grad_h0 = conj(lam of the
// forward's first step) * d there.
template <typename T, bool kPerStep>
struct BackwardSteps {
  using value_type = T;
  static constexpr bool kReducesLam = !kPerStep;
  static constexpr bool kTimeInvariant = !kPerStep;
  static constexpr int kArrays = kPerStep ? 3 : 2;  // (lam,) grad_h, h before
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
  C10_HOST_DEVICE T channel_coefficient(int64_t n) const { return conj_value(lam[n]); }
  C10_HOST_DEVICE T coefficient(int64_t b, int64_t s, int64_t n, T a_n) const {
    return s == 0 ? T(0) : (kPerStep ? conj_value(lam_at(b, s - 1, n)) : a_n);
  }
  C10_HOST_DEVICE T input(int64_t b, int64_t s, int64_t n) const { return g[offset(b, s, n)]; }
  // The forward's state before step s (h0, or zero, before its first step s = L - 1).
  C10_HOST_DEVICE T aux(int64_t b, int64_t s, int64_t n) const {
    if (!want_lam) return T(0);
    if (s == L - 1) return h0 != nullptr ? h0[b * N + n] : T(0);
    return h[offset(b, s + 1, n)];
  }
  C10_HOST_DEVICE T output(int64_t b, int64_t s, int64_t n, T d, T before) const {
    const int64_t off = offset(b, s, n);
    grad_x[off] = d;
    if (s == L - 1 && grad_h0 != nullptr) grad_h0[b * N + n] = conj_value(lam_at(b, s, n)) * d;
    if (!want_lam) return T(0);
    const T ga = conj_value(before) * d;
    if (kPerStep) {
      grad_lam[off] = ga;
      return T(0);
    }
    return ga;
  }

  // Full: neither the first step of travel (no coefficient) nor the forward's first (h0, grad_h0).
  C10_HOST_DEVICE bool full(int64_t s0, int items) const { return s0 >= 1 && s0 + items < L; }
  struct Segment {
    const T* lam;  // at step 0 of the segment (per step), or unused
    const T* g;
    const T* h;
    T* grad_x;
    T* grad_lam;  // per step, or null
    int stride;
    bool want_lam;
    C10_HOST_DEVICE T coefficient(int i) const { return conj_value(lam[(i - 1) * stride]); }
    C10_HOST_DEVICE T input(int i) const { return g[i * stride]; }
    C10_HOST_DEVICE T aux(int i) const { return want_lam ? h[(i + 1) * stride] : T(0); }
    C10_HOST_DEVICE T output(int i, T d, T before) const {
      grad_x[i * stride] = d;
      if (!want_lam) return T(0);
      const T ga = conj_value(before) * d;
      if (kPerStep) {
        grad_lam[i * stride] = ga;
        return T(0);
      }
      return ga;
    }
  };
  C10_HOST_DEVICE Segment segment(int64_t b, int64_t s0, int64_t n) const {
    const int64_t o = offset(b, s0, n);
    return {kPerStep ? lam + o : lam,
            g + o,
            h + o,
            grad_x + o,
            kPerStep && grad_lam != nullptr ? grad_lam + o : nullptr,
            static_cast<int>(reverse ? N : -N),
            want_lam};
  }
};

// A thread's registers between phase 1 and phase 3.
template <typename T, int kItems>
struct SegmentRegisters {
  T a[kItems];    // per-step coefficients (unused when time-invariant)
  T x[kItems];    // inputs
  T aux[kItems];  // the problem's per-step extra (the backward's states before each step)
};

// Phase 1 of a thread: loads its kItems steps and returns their map (past L: identity steps).
template <int kItems, bool kTimeInvariant, typename Segment, typename T>
C10_HOST_DEVICE inline Affine<T> load_full_segment(const Segment& seg, T a_n, SegmentRegisters<T, kItems>& r) {
  Affine<T> map = Affine<T>::identity();
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const T ai = kTimeInvariant ? a_n : seg.coefficient(i);
    if (!kTimeInvariant) r.a[i] = ai;
    r.x[i] = seg.input(i);
    r.aux[i] = seg.aux(i);
    map = combine(map, Affine<T>{ai, r.x[i]});
  }
  return map;
}

template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline Affine<T> load_edge_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, T a_n,
                                                   SegmentRegisters<T, kItems>& r) {
  Affine<T> map = Affine<T>::identity();
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    const bool live = s < steps.L;
    const T ai = live ? steps.coefficient(b, s, n, a_n) : T(1);
    if (!Steps::kTimeInvariant) r.a[i] = ai;
    r.x[i] = live ? steps.input(b, s, n) : T(0);
    r.aux[i] = live ? steps.aux(b, s, n) : T(0);
    map = combine(map, Affine<T>{ai, r.x[i]});
  }
  return map;
}

template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline Affine<T> load_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, T a_n,
                                              SegmentRegisters<T, kItems>& r) {
  if (steps.full(s0, kItems)) return load_full_segment<kItems, Steps::kTimeInvariant>(steps.segment(b, s0, n), a_n, r);
  return load_edge_segment<kItems>(steps, b, n, s0, a_n, r);
}

// The carry-in of segment `seg`: the tile's carry-in run through the segments before it.
template <typename T, typename SegmentMaps>
C10_HOST_DEVICE inline T segment_carry(T tile_carry, const SegmentMaps& maps, int seg) {
  for (int j = 0; j < seg; ++j) tile_carry = maps(j).apply(tile_carry);
  return tile_carry;
}

// Phase 2, one lane of one tile: how tiles publish to their successors and read their
// predecessors, per (tile, lane) slot, through `Statuses`. The kernel's (cuda/scan_cuda.cu) uses
// device-scope atomics on the flags and cache-global loads of the values; the GoogleTest suite's
// uses std::atomic from several CPU threads. It provides
//   int status(int64_t slot)            a relaxed load of the flag
//   void acquire()                      an acquire fence: what was published before a flag seen
//                                       above is visible after it
//   Affine<T> aggregate(int64_t slot), T end_state(int64_t slot)
//   void set_aggregate(int64_t slot, const Affine<T>&), void set_end_state(int64_t slot, T)
//   void publish(int64_t slot, int status)   a release store of the flag
//   void wait(int64_t slot, int round)  backs off after finding `slot` unpublished (round: the
//                                       waits so far); may stop the program past a deadline

// The carry-in of a tile past chunk 0, by decoupled look-back: reads the statuses of a window of
// the nearest predecessors not yet folded, folds the leading run of aggregates, and stops at the
// first end state; a predecessor not published yet is waited for and read again. In deterministic
// mode only the nearest predecessor's end state is taken, so every carry forms the same way.
template <int kWindow, typename T, typename Statuses>
C10_HOST_DEVICE inline T look_back(Statuses& st, const TileGrid& g, const TileCoords& tile, int lane,
                                   bool deterministic) {
  const int64_t chains = g.chains();
  const auto slot = [&](int64_t chunk) { return (tile.id - (tile.chunk - chunk) * chains) * g.channels + lane; };
  Affine<T> acc = Affine<T>::identity();  // the maps of the tiles folded so far, earliest first
  int64_t chunk = tile.chunk - 1;         // the nearest predecessor not folded yet
  for (int round = 0;;) {
    // Never past chunk 0: it publishes its end state only.
    const int count = deterministic ? 1 : (chunk + 1 < kWindow ? static_cast<int>(chunk + 1) : kWindow);
    int status[kWindow];
#pragma unroll
    for (int k = 0; k < kWindow; ++k) status[k] = k < count ? st.status(slot(chunk - k)) : kTileEmpty;
    int folds = 0;  // the leading run of aggregates
    bool ended = false, found = false;
#pragma unroll
    for (int k = 0; k < kWindow; ++k) {
      if (ended || k >= count) continue;
      if (status[k] == kTileAggregate && !deterministic) {
        ++folds;
      } else {
        ended = true;
        found = status[k] == kTilePrefix;
      }
    }
    st.acquire();
    Affine<T> aggregate[kWindow];
#pragma unroll
    for (int k = 0; k < kWindow; ++k) aggregate[k] = k < folds ? st.aggregate(slot(chunk - k)) : Affine<T>::identity();
    const T end = found ? st.end_state(slot(chunk - folds)) : T(0);
#pragma unroll
    for (int k = 0; k < kWindow; ++k)
      if (k < folds) acc = combine(aggregate[k], acc);
    if (found) return acc.apply(end);
    chunk -= folds;
    if (folds < count) st.wait(slot(chunk), round++);  // not published yet: read it again
  }
}

// Phase 2 of lane `lane` of a tile whose segments reduce to `total`: publishes what its successor
// needs (its aggregate at once, its end state once its carry-in is known; the last tile of a chain
// has no successor, and the deterministic mode no aggregates) and returns its carry-in.
template <int kWindow, typename T, typename Statuses>
C10_HOST_DEVICE inline T resolve_carry(Statuses& st, const TileGrid& g, const TileCoords& tile, int lane,
                                       const Affine<T>& total, T initial, bool deterministic) {
  const int64_t slot = tile.id * g.channels + lane;
  const bool has_successor = tile.chunk + 1 < g.chunks();
  T carry_in = initial;
  if (tile.chunk > 0) {
    if (has_successor && !deterministic) {
      st.set_aggregate(slot, total);
      st.publish(slot, kTileAggregate);
    }
    carry_in = look_back<kWindow, T>(st, g, tile, lane, deterministic);
  }
  if (has_successor) {
    st.set_end_state(slot, total.apply(carry_in));
    st.publish(slot, kTilePrefix);
  }
  return carry_in;
}

// Phase 3 of a thread: runs its steps from the segment's carry-in and writes them; returns the sum
// of the steps' grad_lam shares (backward, time-invariant lam) in step order.
template <int kItems, bool kTimeInvariant, bool kReducesLam, typename Segment, typename T>
C10_HOST_DEVICE inline T scan_full_segment(const Segment& seg, T a_n, const SegmentRegisters<T, kItems>& r, T state) {
  T lam_share(0);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    state = (kTimeInvariant ? a_n : r.a[i]) * state + r.x[i];
    const T share = seg.output(i, state, r.aux[i]);
    if (kReducesLam) lam_share += share;
  }
  return lam_share;
}

template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline T scan_edge_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, T a_n,
                                           const SegmentRegisters<T, kItems>& r, T state) {
  T lam_share(0);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t s = s0 + i;
    if (s < steps.L) {
      state = (Steps::kTimeInvariant ? steps.coefficient(b, s, n, a_n) : r.a[i]) * state + r.x[i];
      const T share = steps.output(b, s, n, state, r.aux[i]);
      if (Steps::kReducesLam) lam_share += share;
    }
  }
  return lam_share;
}

template <int kItems, typename Steps, typename T>
C10_HOST_DEVICE inline T scan_segment(const Steps& steps, int64_t b, int64_t n, int64_t s0, T a_n,
                                      const SegmentRegisters<T, kItems>& r, T state) {
  if (steps.full(s0, kItems)) {
    return scan_full_segment<kItems, Steps::kTimeInvariant, Steps::kReducesLam>(steps.segment(b, s0, n), a_n, r, state);
  }
  return scan_edge_segment<kItems>(steps, b, n, s0, a_n, r, state);
}

}  // namespace torch_lru

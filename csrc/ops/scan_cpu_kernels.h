// CPU kernels of the scan ops: the exact reference for the CUDA kernels.
//
// This header is compiled once per instruction set (scan_cpu_isa_*.cpp), each time inside its own
// namespace, TORCH_LRU_CPU_ISA; scan_cpu.cpp picks one at run time. It includes nothing itself:
// the including file brings ATen and the shared scan math in first.
//
// Work is split into units of (batch row, block of channels); channels are the contiguous axis, and
// a block is a whole row whenever N allows, so a unit streams through contiguous memory and the
// inner loop over channels vectorises (complex state is kept interleaved, as the tensors hold it:
// Row, Lanes). When threads outnumber units two to one or more (small B, long L) L is split into
// chunks, chained as in a decoupled look-back scan (run_partitioned). Up to 16 MB, where the data
// stays in the L3, there is one chunk per thread, the first the longest, as it needs no reduction;
// past that chunks are sized to stay in a core's L2 between reduction and scan, so memory traffic
// stays near one read of x and one write of h, unless rows of 4 KB or more can be shared among the
// threads instead (make_partition). Each step is one pass over its row (the backward's
// grad_x and grad_lam terms included), with the rows a few steps ahead prefetched and the channels
// walked in the direction of travel; outputs over 8 MB (with their input, half the L3) are written
// with streaming stores (Row::streams). Tensors that stay in the caches, and rows shared among
// threads past them, take their steps a tile at a time, the state held in registers through the
// tile (Row::steps_with, Row::steps_out, Row::steps_reduce).
#pragma once

#ifndef TORCH_LRU_CPU_ISA
#error "define TORCH_LRU_CPU_ISA (the namespace of this instruction set) before including this file"
#endif

namespace torch_lru::cpu::TORCH_LRU_CPU_ISA {

constexpr int64_t kMaxBlock = 1024;             // channels per unit; the unit's state lives on the stack
constexpr int64_t kPageBytes = 4096;            // what the hardware prefetchers follow a stream within
constexpr int64_t kMinSplitBytes = kPageBytes;  // fewest bytes of a row given to one unit when rows are split
constexpr int64_t kMinSplitDownBytes = 256;     // the same for a scan stepping down through the caches
// The same past the caches where whole rows would take no lead split (Partition::reduce_previous):
// rows of a page shared in halves, four steps a tile, beat the chunks sized for L2 in every case
// measured, 1.0-1.5x (docs/perf.md, 2026-12-07, late, after); parts of 1 KB lost with a coefficient
// per step.
constexpr int64_t kMinSplitPastCachesBytes = 2048;
constexpr int64_t kChunkBytes = 256 * 1024;  // bytes of x per chunk of the L-split path: stays in L2
constexpr int64_t kMinChunkLen = 64;
// The lead split of a single sequence (Partition::reduce_previous): a step of its reduction costs
// about this much of a step of the scan, measured on two threads (docs/perf.md, 2026-12-07):
// 0.55-0.68 with a constant coefficient, or with one per step where the scan also writes grad_lam
// per step, and 0.78-0.95 with one per step otherwise, timed on halves of L. In the caches a split
// planned at 0.6 for a coefficient per step still beat one thread by 1.2-1.3x (2026-12-07, night),
// so kReduceCostPerStep serves past the caches only. The split is taken where it promises
// kMinLeadSpeedup over one thread, on tensors of kMinLeadSplitBytes or more (below, starting the
// second thread cost more than it saved; on two threads, 1.4x against 1.2x) and up to
// kMaxLeadSplitBytes: there the reducing worker finds the chunk it reads in the L3, at 32 MB it
// read it from memory and lost.
constexpr double kReduceCost = 0.6;
constexpr double kReduceCostPerStep = 0.8;  // past the caches, one coefficient per step, no grad_lam
constexpr double kMinLeadSpeedup = 1.3;
constexpr int64_t kMinLeadSplitBytes = 1024 * 1024;
constexpr int64_t kMaxLeadSplitBytes = 16 * 1024 * 1024;
// Tensors up to this size stay in the caches: the loops are bound by their arithmetic there.
constexpr int64_t kCachedBytes = 4 * 1024 * 1024;
// Outputs larger than this are written with streaming stores where the rows allow (Row::streams):
// with its input such an output fills half the L3 or more, and ordinary stores, each line read
// before it is written, cost float32 1x4096x1024 (16 MB) a third of its time (docs/perf.md,
// 2026-12-07, evening).
constexpr int64_t kStreamBytes = 8 * 1024 * 1024;
// Bytes of a row in one tile of steps of the tiled loops (Row::steps_with, Row::steps_out).
constexpr int64_t kTileBytes = 4096;
// Steps per tile past the caches where a unit is part of a row (at B=1, rows of two pages or more,
// or of one page where no lead split is taken: make_partition): a step at a time read one page of
// each stream, then the page a row further on, each new page starting cold, and complex64
// 1x4096x1024 ran at half its floor; four rows in flight took 0.5-0.7 of the time, as 8 did,
// while 16 lost again with a coefficient per step (docs/perf.md, 2026-12-07, late).
constexpr int64_t kSharedRowTileSteps = 4;

// How a (B, L, N) problem is divided among threads.
struct Partition {
  int64_t block = 1;       // channels per unit
  int64_t blocks = 1;      // units per batch row
  int64_t units = 0;       // B * blocks
  ChunkPlan chunks{0, 1};  // the split of L (one chunk: no split)
  int64_t bytes = 0;       // of one (B, L, N) tensor

  bool split() const { return chunks.num_chunks() > 1; }
  bool cached() const { return bytes <= kCachedBytes; }
  // How the L split finds a chunk's carry-in (run_partitioned): in chunks sized for L2 the worker
  // of a chunk reduces that chunk, then scans it from its cache; in the lead split (a single
  // sequence up to kMaxLeadSplitBytes) it reduces the chunk before it, which another worker is
  // scanning meanwhile, so the first chunk needs no reduction and can be the longest: only this
  // split gives the first chunk a length of its own.
  bool reduce_previous() const { return chunks.lead > 0 && split(); }
  bool streamed() const { return bytes > kStreamBytes; }  // outputs written with streaming stores
  // Steps per tile of the tiled loops (Row::steps_with, Row::steps_out) on rows of `row_bytes`: a
  // tile of a row spans about a page in cache. Past the caches whole rows take one step, their
  // steps one stream already: a tile's order of lines (a part of each row, then the next part) lost
  // the prefetchers' track, and the 1x2^20x64 backward ran 1.5x slower (docs/perf.md, 2026-12-04);
  // units that are parts of rows take kSharedRowTileSteps.
  int64_t tile_steps(int64_t row_bytes) const {
    if (cached()) return std::max<int64_t>(1, kTileBytes / std::max<int64_t>(row_bytes, 1));
    return blocks > 1 ? kSharedRowTileSteps : 1;
  }
};

// per_step_reduce: the L split's reduction multiplies a coefficient per step and the scan writes
// nothing beside its output (kReduceCostPerStep past the caches); descending: the scan steps from
// row t to row t-1 (walk_down).
Partition make_partition(int64_t B, int64_t L, int64_t N, int64_t elem_size, bool per_step_reduce, bool descending) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  Partition p;
  p.bytes = B * L * N * elem_size;
  // Whole rows: splitting a row among threads would turn one contiguous stream into many strided
  // ones, which the prefetchers follow badly; below one unit per thread, L is split instead. Wide
  // rows may still be shared among threads in runs of at least a page, each thread's part a stream
  // of its own pages: halves of 4 KB rows (1x4096x1024 float32) left two threads slower than one,
  // and the L split beat them 1.4-1.7x on the backward; in the caches two threads writing the
  // halves of 512 B rows (1x2048x64 complex64) took 15-60 µs a call where one thread took 31 µs,
  // while two rows, one per thread, took 17 µs every time (docs/perf.md, 2026-12-07). A scan that
  // steps down through the caches suffered less (the same forward reversed, 29-37 µs against
  // 47-59), and its rows shared in runs of 256 B beat the L split on the backward with a
  // coefficient per step, so it keeps them. Past the caches, rows shared among threads take their
  // steps a few at a time (tile_steps), and where the lead split (below) is not taken rows are
  // shared in runs of kMinSplitPastCachesBytes rather than split along L in chunks sized for L2.
  p.block = std::min(N, kMaxBlock);
  const double reduce_cost = per_step_reduce && !p.cached() ? kReduceCostPerStep : kReduceCost;
  // The lead split's promise over one thread, and whether L is split so, with `units` units.
  auto lead_speedup = [&](int64_t units) { return 1.0 + double(threads / units - 1) * (1.0 - reduce_cost); };
  auto lead_split = [&](int64_t units) {
    return threads / units >= 2 && lead_speedup(units) >= kMinLeadSpeedup && p.bytes >= kMinLeadSplitBytes &&
           p.bytes <= kMaxLeadSplitBytes;
  };
  const int64_t whole_rows = B * ((N + p.block - 1) / p.block);
  const int64_t min_bytes = p.cached()               ? (descending ? kMinSplitDownBytes : kMinSplitBytes)
                            : lead_split(whole_rows) ? kMinSplitBytes
                                                     : kMinSplitPastCachesBytes;
  const int64_t min_split = std::max<int64_t>(1, min_bytes / elem_size);
  const int64_t want = std::min((threads + B - 1) / B, N / min_split);
  if (whole_rows < threads && want > 1) {
    p.block = std::min(p.block, (N + want - 1) / want);
  }
  p.blocks = (N + p.block - 1) / p.block;
  p.units = B * p.blocks;
  // Up to kMaxLeadSplitBytes L may be split in one chunk per thread (reduce_previous()): the first
  // chunk is never reduced and is the longest, L / speedup steps, the others equal, so that every
  // worker (its reduction of the chunk before, then its own scan) finishes at the same time. Below
  // kMinLeadSplitBytes a tensor runs unsplit; past the caches, where the split promises too little,
  // it takes chunks sized for L2 (below).
  const int64_t parts = threads / p.units;
  if (lead_split(p.units)) {
    const int64_t lead = std::max<int64_t>(1, std::llround(double(L) / lead_speedup(p.units)));
    p.chunks = ChunkPlan{L, std::max<int64_t>(1, (L - lead + parts - 2) / (parts - 1)), lead};
    return p;
  }
  if (p.cached()) {
    p.chunks = ChunkPlan{L, std::max<int64_t>(L, 1)};
    return p;
  }
  const int64_t chunk_len = std::max(kMinChunkLen, kChunkBytes / (p.block * elem_size));
  // The split does about twice the arithmetic of a plain scan (reduce, then scan), which two
  // threads on one unit repay: B=1, L=2^20, N=64 complex64 ran 1.3-1.8x faster split on two cores
  // than on one thread (docs/perf.md, 2026-12-02).
  const bool split = threads >= 2 * p.units && L >= 2 * chunk_len;
  p.chunks = ChunkPlan{L, split ? chunk_len : std::max<int64_t>(L, 1)};
  return p;
}

// Runs a scan over logical steps [0, L) of every unit.
//   aggregate(unit, s0, s1, Affine<T>* maps): the map of steps [s0, s1), per channel of the unit
//   scan(unit, s0, s1, T* state): runs steps [s0, s1) from state (per channel), leaving the end
//     state in it
// `state` holds one row of p.block values per unit: the initial state in, the final state out.
//
// With L split, chunks are claimed in order from a shared counter (unit-interleaved). In chunks
// sized for L2 a worker reduces its chunk to a map while the chunk before it is still in flight,
// waits for that chunk's carry, publishes its own carry-out (map applied to carry-in) for the next
// chunk at once, and then scans its chunk from the carry-in, reading the data it just brought into
// its cache. In the lead split (p.reduce_previous()) a worker instead reduces the chunk before its
// own, which another worker is scanning meanwhile, applies that map to the earlier chunk's carry-in
// to get its own, publishes it and scans: the first chunk is never reduced. Either way chunks are
// claimed in order and a claimed chunk only waits for earlier ones, so any number of workers, one
// included, makes progress; the arithmetic does not depend on which worker takes which chunk.
template <typename T, typename AggregateFn, typename ScanFn>
void run_partitioned(const Partition& p, int64_t L, std::vector<T>& state, const AggregateFn& aggregate,
                     const ScanFn& scan) {
  if (!p.split()) {
    at::parallel_for(0, p.units, 1, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) scan(u, 0, L, &state[u * p.block]);
    });
    return;
  }
  const int64_t C = p.chunks.num_chunks();
  const int64_t total = p.units * C;
  std::vector<T> carry(total * p.block);  // carry-in of chunk i = c * units + u
  std::unique_ptr<std::atomic<bool>[]> ready(new std::atomic<bool>[total]);
  for (int64_t i = 0; i < total; ++i) ready[i].store(i < p.units, std::memory_order_relaxed);
  for (int64_t u = 0; u < p.units; ++u) std::copy_n(&state[u * p.block], p.block, &carry[u * p.block]);
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), total);
  if (p.reduce_previous()) {
    // Chunk i's carry-in is the map of the chunk before it applied to that chunk's carry-in, which
    // stays in `carry` for the next chunk's worker: the scan runs from a copy.
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      std::vector<Affine<T>> map(p.block);
      std::vector<T> run(p.block);
      for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
        const int64_t u = i % p.units, c = i / p.units;
        T* in = &carry[i * p.block];
        if (c > 0) {
          aggregate(u, p.chunks.begin(c - 1), p.chunks.end(c - 1), map.data());
          while (!ready[i - p.units].load(std::memory_order_acquire)) std::this_thread::yield();
          const T* before = &carry[(i - p.units) * p.block];
          for (int64_t j = 0; j < p.block; ++j) in[j] = map[j].apply(before[j]);
          ready[i].store(true, std::memory_order_release);
        }
        std::copy_n(in, p.block, run.data());
        scan(u, p.chunks.begin(c), p.chunks.end(c), run.data());
        if (c == C - 1) std::copy_n(run.data(), p.block, &state[u * p.block]);
      }
    });
    return;
  }
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<Affine<T>> map(p.block);
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
      const int64_t u = i % p.units, c = i / p.units;
      const int64_t s0 = p.chunks.begin(c), s1 = p.chunks.end(c);
      const bool last = c == C - 1;
      if (!last) aggregate(u, s0, s1, map.data());
      while (!ready[i].load(std::memory_order_acquire)) std::this_thread::yield();
      T* in = &carry[i * p.block];
      if (!last) {
        T* out = &carry[(i + p.units) * p.block];
        for (int64_t j = 0; j < p.block; ++j) out[j] = map[j].apply(in[j]);
        ready[i + p.units].store(true, std::memory_order_release);
      }
      scan(u, s0, s1, in);
      if (last) std::copy_n(in, p.block, &state[u * p.block]);
    }
  });
}

// Where a unit's data lives in a contiguous (B, L, N) tensor, and how logical steps map to rows.
struct UnitLayout {
  int64_t L, N;
  int64_t blocks, block;
  bool reverse;  // logical step s is time L-1-s

  int64_t batch(int64_t u) const { return u / blocks; }
  int64_t channel0(int64_t u) const { return (u % blocks) * block; }
  int64_t width(int64_t u) const { return std::min(block, N - channel0(u)); }
  // Element offset of channel0(u) at logical step s.
  int64_t offset(int64_t u, int64_t s) const { return (batch(u) * L + time_index(s, L, reverse)) * N + channel0(u); }
  // Element distance between consecutive logical steps.
  int64_t step() const { return reverse ? -N : N; }
};

// The order of one pass over a row cut into `groups` whole groups and a rest: groups upwards, then
// the rest; or (kDown) the rest, then the groups from the top down. Walking down serves scans that
// step from row t to row t-1 through rows shorter than a page: the addresses of the whole pass then
// fall steadily and the hardware prefetchers follow them (see walk_down below).
template <bool kDown, typename Group, typename Rest>
inline void in_row_order(int64_t groups, Group&& group, Rest&& rest) {
  if (kDown) {
    rest();
    for (int64_t g = groups - 1; g >= 0; --g) group(g);
  } else {
    for (int64_t g = 0; g < groups; ++g) group(g);
    rest();
  }
}

// A vector of kW reals (GCC/Clang vector extensions, so each instruction-set build gets its own
// instructions), with the shuffles of complex values kept interleaved. A complex product a * v is
// re(a) * v + im(a) * swap(v) with the sign folded into the coefficient: one shuffle per vector,
// where de-interleaving rows into real and imaginary arrays cost about six, which kept a core from
// overlapping its arithmetic with memory (docs/perf.md, 2026-12-03).
template <typename R>
struct Pairs {
#if defined(TORCH_LRU_CPU_HAS_AVX512)
  static constexpr int64_t kBytes = 64;  // 32 ran 1.3-1.4x slower in cache (docs/perf.md, 2026-12-04)
#elif defined(TORCH_LRU_CPU_HAS_AVX2)
  static constexpr int64_t kBytes = 32;
#else
  static constexpr int64_t kBytes = 16;  // SSE2
#endif
  static constexpr int64_t kW = kBytes / int64_t(sizeof(R));
  typedef R V __attribute__((vector_size(kBytes)));
  using I = std::conditional_t<sizeof(R) == 4, int32_t, int64_t>;
  typedef I M __attribute__((vector_size(kBytes)));

  static V load(const R* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(R* p, V v) { __builtin_memcpy(p, &v, sizeof v); }
  // The first n reals of a vector (0 < n < kW: the end of a row that does not fill one); the rest
  // zero. Masked where the instruction set has masks: a memcpy of a variable length was a library
  // call, which on rows ending in a partial vector took most of each step (float32 rows of 8
  // values, AVX-512, ran 2.5x slower than with a scalar loop; docs/perf.md, 2026-12-04).
#if defined(TORCH_LRU_CPU_HAS_AVX512)
  static auto mask(int64_t n) {
    return static_cast<std::conditional_t<sizeof(R) == 4, __mmask16, __mmask8>>((1u << n) - 1);
  }
  static V load(const R* p, int64_t n) {
    if constexpr (sizeof(R) == 4) {
      return (V)_mm512_maskz_loadu_ps(mask(n), p);
    } else {
      return (V)_mm512_maskz_loadu_pd(mask(n), p);
    }
  }
  static void store(R* p, V v, int64_t n) {
    if constexpr (sizeof(R) == 4) {
      _mm512_mask_storeu_ps(p, mask(n), (__m512)v);
    } else {
      _mm512_mask_storeu_pd(p, mask(n), (__m512d)v);
    }
  }
#elif defined(TORCH_LRU_CPU_HAS_AVX2)
  static __m256i mask(int64_t n) {  // lanes below n all ones
    M lane;
    for (int64_t k = 0; k < kW; ++k) lane[k] = I(k);
    return (__m256i)(lane < I(n));
  }
  static V load(const R* p, int64_t n) {
    if constexpr (sizeof(R) == 4) {
      return (V)_mm256_maskload_ps(p, mask(n));
    } else {
      return (V)_mm256_maskload_pd(p, mask(n));
    }
  }
  static void store(R* p, V v, int64_t n) {
    if constexpr (sizeof(R) == 4) {
      _mm256_maskstore_ps(p, mask(n), (__m256)v);
    } else {
      _mm256_maskstore_pd(p, mask(n), (__m256d)v);
    }
  }
#else
  // A fixed trip count, so that the compiler unrolls the copy instead of calling memcpy.
  static V load(const R* p, int64_t n) {
    V v{};
    for (int64_t k = 0; k < kW - 1; ++k) {
      if (k < n) v[k] = p[k];
    }
    return v;
  }
  static void store(R* p, V v, int64_t n) {
    for (int64_t k = 0; k < kW - 1; ++k) {
      if (k < n) p[k] = v[k];
    }
  }
#endif
  // A streaming store to p (aligned to kBytes): the line goes to memory without being read first.
  // An ordinary store reads each line it writes, so a pass that writes a tensor larger than the
  // caches moves its bytes twice (docs/perf.md, 2026-12-04). fence() orders these stores before
  // any later one, so that other threads see them once the pass is over.
  static void stream(R* p, V v) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(TORCH_LRU_CPU_HAS_AVX512)
    if constexpr (sizeof(R) == 4)
      _mm512_stream_ps(p, (__m512)v);
    else
      _mm512_stream_pd(p, (__m512d)v);
#elif defined(TORCH_LRU_CPU_HAS_AVX2)
    if constexpr (sizeof(R) == 4)
      _mm256_stream_ps(p, (__m256)v);
    else
      _mm256_stream_pd(p, (__m256d)v);
#else
    if constexpr (sizeof(R) == 4)
      _mm_stream_ps(p, (__m128)v);
    else
      _mm_stream_pd(p, (__m128d)v);
#endif
#else
    store(p, v);
#endif
  }
  static void fence() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    _mm_sfence();
#endif
  }
  // Lane i takes lane (i ^ 1) (kMode 0: swap each pair), (i & ~1) (1: the real part twice) or
  // (i | 1) (2: the imaginary part twice).
  template <int kMode, size_t... i>
  static V shuffle(V v, std::index_sequence<i...>) {
    constexpr auto lane = [](size_t k) { return kMode == 0 ? k ^ 1 : kMode == 1 ? k & ~size_t(1) : k | 1; };
#if defined(__clang__)
    return __builtin_shufflevector(v, v, lane(i)...);
#else
    return __builtin_shuffle(v, M{I(lane(i))...});
#endif
  }
  static V swap(V v) { return shuffle<0>(v, std::make_index_sequence<kW>{}); }
  static V real_twice(V v) { return shuffle<1>(v, std::make_index_sequence<kW>{}); }
  static V imag_twice(V v) { return shuffle<2>(v, std::make_index_sequence<kW>{}); }
  // {even, odd, even, odd, ...}
  static V alternate(R even, R odd) {
    V v;
    for (int64_t k = 0; k < kW; ++k) v[k] = k % 2 == 0 ? even : odd;
    return v;
  }
  // The coefficients (re, im) of a * v = re * v + im * swap(v) for a vector of a (conj(a) when kConj).
  template <bool kConj>
  static void split(V a, V& re, V& im) {
    re = real_twice(a);
    im = imag_twice(a) * alternate(kConj ? R(1) : R(-1), kConj ? R(-1) : R(1));
  }
};

// How values of T sit in vectors of reals, and their product by a coefficient: a real value is
// one lane, its product a plain one; a complex value is an interleaved pair of lanes, its product
// re(a) * v + im(a) * swap(v) with the sign folded into the coefficient (Pairs::split).
template <typename T>
struct Lanes {
  using R = T;
  using P = Pairs<R>;
  using V = typename P::V;
  static constexpr bool kComplex = false;
  static constexpr int64_t kPer = 1;  // reals per value
  // The coefficient of a vector of a (conj(a) when kConj; the same for real values).
  template <bool kConj>
  static void split(V a, V& re, V& im) {
    re = a, im = V{};  // unused: set so that no lane is read uninitialised
  }
  static V mul(V re, V, V s) { return re * s; }
  static V mul_add(V re, V, V s, V x) { return re * s + x; }
  static V one() { return V{} + R(1); }
};

template <typename R_>
struct Lanes<c10::complex<R_>> {
  using R = R_;
  using P = Pairs<R>;
  using V = typename P::V;
  static constexpr bool kComplex = true;
  static constexpr int64_t kPer = 2;
  template <bool kConj>
  static void split(V a, V& re, V& im) {
    P::template split<kConj>(a, re, im);
  }
  static V mul(V re, V im, V s) { return re * s + im * P::swap(s); }
  static V mul_add(V re, V im, V s, V x) { return re * s + (im * P::swap(s) + x); }
  static V one() { return P::alternate(R(1), R(0)); }
};

// The state of one unit: `nb` channels of T, real or complex, kept as the tensors' rows hold them
// (complex values interleaved) and handled a vector of reals at a time (Lanes). Each loop reads and
// writes rows of the (B, L, N) tensors (`nb` consecutive values of T), visiting the channels
// downwards when kDown (in_row_order).
template <typename T, bool kDown>
struct Row {
  using Ln = Lanes<T>;
  using R = typename Ln::R;
  using P = typename Ln::P;
  using V = typename Ln::V;
  static constexpr bool kComplex = Ln::kComplex;
  static constexpr int64_t kPer = Ln::kPer;
  static constexpr int64_t kW = P::kW;
  static constexpr int64_t kReals = kPer * kMaxBlock;  // of one row's state
  alignas(64) R v[kReals];

  static const R* flat(const T* p) { return reinterpret_cast<const R*>(p); }
  static R* flat(T* p) { return reinterpret_cast<R*>(p); }
  // body(k, n, full): the vector of reals [k, k + n) of a row of nb values; full (a
  // std::integral_constant) when n is kW. Visited in groups of 256 B, in row order (in_row_order).
  template <typename Body>
  static void each(int64_t nb, Body&& body) {
    constexpr int64_t kGroup = 256 / P::kBytes;  // vectors
    const int64_t n = kPer * nb, full = n / kW, groups = full / kGroup;
    auto vec = [&](int64_t q) { body(q * kW, kW, std::true_type{}); };
    auto group = [&](int64_t g) {
      const int64_t q0 = g * kGroup;
      for (int64_t q = q0; q < q0 + kGroup; ++q) vec(q);
    };
    auto rest = [&] {
      for (int64_t q = groups * kGroup; q < full; ++q) vec(q);
      if (full * kW < n) body(full * kW, n - full * kW, std::false_type{});
    };
    in_row_order<kDown>(groups, group, rest);
  }
  // A vector of a tensor's row at real offset k (n reals when it is the row's last, partial one).
  template <typename Full>
  static V read(const R* p, int64_t k, int64_t n, Full) {
    return Full::value ? P::load(p + k) : P::load(p + k, n);
  }
  // kStream: whole vectors with streaming stores (the row's last, partial one never).
  template <bool kStream, typename Full>
  static void write(R* p, int64_t k, int64_t n, Full, V x) {
    if constexpr (!Full::value) {
      P::store(p + k, x, n);
    } else if constexpr (kStream) {
      P::stream(p + k, x);
    } else {
      P::store(p + k, x);
    }
  }
  // Whether the rows of an output, `step` values apart from the row at `out` on, can be written
  // with streaming stores: every whole vector of every row falls on a vector boundary.
  static bool streams(const T* out, int64_t step) {
    const auto bytes = [](int64_t v) { return v * int64_t(sizeof(T)); };
    return reinterpret_cast<uintptr_t>(out) % P::kBytes == 0 && bytes(step < 0 ? -step : step) % P::kBytes == 0;
  }
  static void fence() { P::fence(); }

  // A coefficient constant over the steps, stored as Lanes::split leaves it (im: complex only).
  struct Coef {
    alignas(64) R re[kReals], im[kComplex ? kReals : 1];
    template <bool kConj>
    void load_as(const T* src, int64_t nb) {
      each(nb, [&](int64_t k, int64_t n, auto full) {
        V r, i;
        Ln::template split<kConj>(read(flat(src), k, n, full), r, i);
        P::store(re + k, r);
        if constexpr (kComplex) P::store(im + k, i);
      });
    }
    void load(const T* src, int64_t nb) { load_as<false>(src, nb); }
    void load_conj(const T* src, int64_t nb) { load_as<true>(src, nb); }
    void fill(T value, int64_t nb) {
      for (int64_t j = 0; j < nb; ++j) {
        if constexpr (kComplex) {
          re[2 * j] = re[2 * j + 1] = value.real();
          im[2 * j] = -value.imag(), im[2 * j + 1] = value.imag();
        } else {
          re[j] = value;
        }
      }
    }
    V re_at(int64_t k) const { return P::load(re + k); }
    V im_at(int64_t k) const {
      if constexpr (kComplex) return P::load(im + k);
      return V{};
    }
  };
  // The sum over steps of conj(p) * v: for complex values the sums of p * v and p * swap(v) lane
  // by lane (ps: complex only).
  struct Acc {
    alignas(64) R pv[kReals], ps[kComplex ? kReals : 1];
    void fill(T value, int64_t nb) {  // so that get(j) is value
      for (int64_t j = 0; j < nb; ++j) {
        if constexpr (kComplex) {
          pv[2 * j] = value.real(), ps[2 * j] = value.imag();
          pv[2 * j + 1] = ps[2 * j + 1] = R(0);
        } else {
          pv[j] = value;
        }
      }
    }
    T get(int64_t j) const {
      if constexpr (kComplex) {
        return T(pv[2 * j] + pv[2 * j + 1], ps[2 * j] - ps[2 * j + 1]);
      } else {
        return pv[j];
      }
    }
    V pv_at(int64_t k) const { return P::load(pv + k); }
    V ps_at(int64_t k) const {
      if constexpr (kComplex) return P::load(ps + k);
      return V{};
    }
    void put(int64_t k, V sum_pv, V sum_ps) {
      P::store(pv + k, sum_pv);
      if constexpr (kComplex) P::store(ps + k, sum_ps);
    }
    // The sums after one more step: q the row of p, s the state's.
    static void add_to(V& sum_pv, V& sum_ps, V q, V s) {
      sum_pv = sum_pv + q * s;
      if constexpr (kComplex) sum_ps = sum_ps + q * P::swap(s);
    }
    void add(int64_t k, V q, V s) {
      V a = pv_at(k), b = ps_at(k);
      add_to(a, b, q, s);
      put(k, a, b);
    }
  };

  void load(const T* src, int64_t nb) { std::copy_n(flat(src), kPer * nb, v); }
  void load_conj(const T* src, int64_t nb) {
    for (int64_t j = 0; j < nb; ++j) {
      if constexpr (kComplex) {
        v[2 * j] = src[j].real(), v[2 * j + 1] = -src[j].imag();
      } else {
        v[j] = src[j];
      }
    }
  }
  void fill(T value, int64_t nb) {
    if constexpr (kComplex) {
      for (int64_t j = 0; j < nb; ++j) v[2 * j] = value.real(), v[2 * j + 1] = value.imag();
    } else {
      std::fill_n(v, nb, value);
    }
  }
  void store(T* dst, int64_t nb) const { std::copy_n(v, kPer * nb, flat(dst)); }
  T get(int64_t j) const {
    if constexpr (kComplex) {
      return T(v[2 * j], v[2 * j + 1]);
    } else {
      return v[j];
    }
  }

  // v = a^n per channel (conj(a)^n when kConj), a a tensor's row: by repeated squaring, a vector of
  // the row at a time. The L split's chunk maps need it for a constant coefficient; a scalar power
  // per channel took 4 µs a call at 1x4096x64 complex64, a tenth of the whole scan.
  template <bool kConj>
  void power(const T* a, int64_t n, int64_t nb) {
    each(nb, [&](int64_t k, int64_t w, auto full) {
      V base = read(flat(a), k, w, full), acc = Ln::one(), r, i;
      for (int64_t m = n; m > 0; m >>= 1) {
        if (m & 1) Ln::template split<kConj>(base, r, i), acc = Ln::mul(r, i, acc);
        if (m > 1) Ln::template split<false>(base, r, i), base = Ln::mul(r, i, base);
      }
      P::store(v + k, acc);
    });
  }
  // v = a * v + x and out = v, a per step (conjugated when kConj); when kGrad also the backward's
  // grad_lam term of the step, conj(p) * v, written to pout.
  template <bool kConj, bool kGrad, bool kStream = false>
  void step_out(const T* a, const T* x, T* out, const T* p, T* pout, int64_t nb) {
    each(nb, [&](int64_t k, int64_t n, auto full) {
      V r, i;
      Ln::template split<kConj>(read(flat(a), k, n, full), r, i);
      const V s = Ln::mul_add(r, i, P::load(v + k), read(flat(x), k, n, full));
      P::store(v + k, s);
      write<kStream>(flat(out), k, n, full, s);
      if (kGrad) {
        Ln::template split<true>(read(flat(p), k, n, full), r, i);
        write<kStream>(flat(pout), k, n, full, Ln::mul(r, i, s));
      }
    });
  }
  // The same with a constant coefficient; when kGrad the grad_lam term is added to *acc.
  template <bool kGrad, bool kStream = false>
  void step_out_with(const Coef& a, const T* x, T* out, const T* p, Acc* acc, int64_t nb) {
    each(nb, [&](int64_t k, int64_t n, auto full) {
      const V s = Ln::mul_add(a.re_at(k), a.im_at(k), P::load(v + k), read(flat(x), k, n, full));
      P::store(v + k, s);
      write<kStream>(flat(out), k, n, full, s);
      if (kGrad) acc->add(k, read(flat(p), k, n, full), s);
    });
  }

  // `steps` steps of step_out_with (kOut; without it only v = a * v + x), the rows of x, out and p
  // `stride` values apart. The row is walked a tile at a time: kTile vectors of it, whose state,
  // coefficient and sums stay in registers through all the steps, then the next kTile. A step of
  // the row at a time keeps them in the arrays above, which cost a core 5 loads and 3 stores per
  // vector and step beside the data's 2 and 1 (docs/perf.md, 2026-12-04). Each channel's arithmetic
  // is step_out_with's, in the same order: the results are the same bits (tests/test_scan.py).
#if defined(TORCH_LRU_CPU_HAS_AVX512)
  static constexpr int64_t kTile = 4;  // 5 registers a vector with the sums: 20 of the 32
#else
  static constexpr int64_t kTile = 2;  // of 16 registers
#endif
  template <bool kOut, bool kGrad, bool kStream = false>
  void steps_with(const Coef& a, int64_t steps, int64_t stride, const T* x, T* out, const T* p, Acc* acc, int64_t nb) {
    if (kOut && steps == 1) {  // one step (whole rows past the caches): step_out_with, a vector at a time
      step_out_with<kGrad, kStream>(a, x, out, p, acc, nb);
      return;
    }
    for_tiles(nb, [&](auto kg, int64_t k, int64_t width, auto full) {
      tile<decltype(kg)::value, kOut, kGrad, kStream>(k, width, full, a, steps, kPer * stride, x, out, p, acc);
    });
  }

  // `steps` steps of step_out (a per step), the rows of a, x, out, p and pout `stride` values
  // apart, a tile at a time like steps_with: the state stays in registers through the tile.
  template <bool kConj, bool kGrad, bool kStream = false>
  void steps_out(const T* a, int64_t steps, int64_t stride, const T* x, T* out, const T* p, T* pout, int64_t nb) {
    if (steps == 1) {  // one step (whole rows past the caches): step_out, a vector at a time
      step_out<kConj, kGrad, kStream>(a, x, out, p, pout, nb);
      return;
    }
    for_tiles(nb, [&](auto kg, int64_t k, int64_t width, auto full) {
      tile_per_step<decltype(kg)::value, kConj, kGrad, kStream>(k, width, full, a, steps, kPer * stride, x, out, p,
                                                                pout);
    });
  }

  // `steps` steps of the L split's reduction with a per step (conjugated when kConj): prod = a * prod
  // and v = a * v + x, the rows of a and x `stride` values apart, a tile at a time with both states
  // in registers. A step of the whole row at a time kept them in the arrays and cost more than the
  // scan itself (docs/perf.md, 2026-12-07).
  template <bool kConj>
  void steps_reduce(Row& prod, const T* a, int64_t steps, int64_t stride, const T* x, int64_t nb) {
    for_tiles(nb, [&](auto kg, int64_t k, int64_t width, auto full) {
      tile_per_step<decltype(kg)::value, kConj, false, false, true>(k, width, full, a, steps, kPer * stride, x, nullptr,
                                                                    nullptr, nullptr, &prod);
    });
  }

 private:
  // Visits a row of nb values a tile's width at a time, in row order (in_row_order): body(kG, k,
  // n, full) for kG (a std::integral_constant) vectors from real offset k on, n reals in each;
  // kTile at a time, then the rest one by one, the last, partial one (full false) alone.
  template <typename Body>
  static void for_tiles(int64_t nb, Body&& body) {
    const int64_t n = kPer * nb, full = n / kW, groups = full / kTile;
    auto group = [&](int64_t g) {
      body(std::integral_constant<int64_t, kTile>{}, g * kTile * kW, kW, std::true_type{});
    };
    auto rest = [&] {
      for (int64_t q = groups * kTile; q < full; ++q) {
        body(std::integral_constant<int64_t, 1>{}, q * kW, kW, std::true_type{});
      }
      if (full * kW < n) body(std::integral_constant<int64_t, 1>{}, full * kW, n - full * kW, std::false_type{});
    };
    in_row_order<kDown>(groups, group, rest);
  }

  // The tile of steps_out and, when kReduce, of steps_reduce (prod, whose state is the product of the
  // coefficients; nothing written): kG vectors from real offset k on (n reals in each when not Full:
  // then kG is 1) through `steps` rows `stride` reals apart. Each channel's arithmetic is
  // step_out's; when kReduce, q = a * q, then s = a * s + x.
  template <int64_t kG, bool kConj, bool kGrad, bool kStream, bool kReduce = false, typename Full>
  void tile_per_step(int64_t k, int64_t n, Full full, const T* a, int64_t steps, int64_t stride, const T* x, T* out,
                     const T* p, T* pout, Row* prod = nullptr) {
    V s[kG], q[kG];
    for (int64_t i = 0; i < kG; ++i) {
      s[i] = P::load(v + k + i * kW);
      if constexpr (kReduce) q[i] = P::load(prod->v + k + i * kW);
    }
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t o = t * stride;
      for (int64_t i = 0; i < kG; ++i) {
        const int64_t ki = k + i * kW;
        V r, im;
        Ln::template split<kConj>(read(flat(a) + o, ki, n, full), r, im);
        if constexpr (kReduce) q[i] = Ln::mul(r, im, q[i]);
        s[i] = Ln::mul_add(r, im, s[i], read(flat(x) + o, ki, n, full));
        if constexpr (kReduce) continue;
        write<kStream>(flat(out) + o, ki, n, full, s[i]);
        if constexpr (kGrad) {
          Ln::template split<true>(read(flat(p) + o, ki, n, full), r, im);
          write<kStream>(flat(pout) + o, ki, n, full, Ln::mul(r, im, s[i]));
        }
      }
    }
    for (int64_t i = 0; i < kG; ++i) {
      P::store(v + k + i * kW, s[i]);
      if constexpr (kReduce) P::store(prod->v + k + i * kW, q[i]);
    }
  }
  // kG vectors from real offset k on (n reals in each when not Full: then kG is 1) through `steps`
  // rows `stride` reals apart.
  template <int64_t kG, bool kOut, bool kGrad, bool kStream, typename Full>
  void tile(int64_t k, int64_t n, Full full, const Coef& a, int64_t steps, int64_t stride, const T* x, T* out,
            const T* p, Acc* acc) {
    V s[kG], re[kG], im[kG], pv[kG], ps[kG];
    for (int64_t i = 0; i < kG; ++i) {
      const int64_t ki = k + i * kW;
      s[i] = P::load(v + ki), re[i] = a.re_at(ki), im[i] = a.im_at(ki);
      if constexpr (kGrad) pv[i] = acc->pv_at(ki), ps[i] = acc->ps_at(ki);
    }
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t o = t * stride;
      for (int64_t i = 0; i < kG; ++i) {
        const int64_t ki = k + i * kW;
        s[i] = Ln::mul_add(re[i], im[i], s[i], read(flat(x) + o, ki, n, full));
        if constexpr (kOut) write<kStream>(flat(out) + o, ki, n, full, s[i]);
        if constexpr (kGrad) Acc::add_to(pv[i], ps[i], read(flat(p) + o, ki, n, full), s[i]);
      }
    }
    for (int64_t i = 0; i < kG; ++i) {
      P::store(v + k + i * kW, s[i]);
      if constexpr (kGrad) acc->put(k + i * kW, pv[i], ps[i]);
    }
  }
};

// Whether a scan walks each row's channels downwards: when it steps to lower addresses (from row t to
// row t-1) and its unit is a whole row, or a part of one shorter than a page. A whole row walked
// down makes the pass one falling stream: on 4 KB rows (1x4096x1024 float32, one thread) twice as
// fast as walking each row up (docs/perf.md, 2026-12-07). Measured on 2 KB rows (8x4096x256
// complex64), walking down was 1.2-1.45x faster; on units of 4 KB that share a row (two per row of
// 1x4096x1024 complex64) walking up was 1.2x faster, the prefetchers training on each page walked
// upwards (docs/perf.md, 2026-12-02).
inline bool walk_down(bool descending, const Partition& p, int64_t elem_size) {
  return descending && (p.blocks == 1 || p.block * elem_size < kPageBytes);
}

// Asks for the rows that the loop over steps reads `rows` steps ahead. On the Intel machine the
// hardware prefetchers alone left a scan 1.2-1.6x slower than an elementwise op over the same
// bytes (docs/perf.md, 2026-12-02); on the AMD one the same prefetching made the backward 1.2-1.6x
// slower (2026-12-03), so it is asked for on Intel processors only.
struct RowPrefetch {
  int64_t rows;  // steps ahead, about kPrefetchBytes of each stream; 0: off
  int64_t step;  // element distance between consecutive steps

  static constexpr int64_t kPrefetchBytes = 4 * 1024;

  static bool pays() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool intel = __builtin_cpu_is("intel");
    return intel;
#else
    return true;
#endif
  }
  // Off for tensors that stay in the caches (p.cached()), where prefetching only costs instructions.
  template <typename T>
  static RowPrefetch make(const Partition& p, const UnitLayout& lay, int64_t nb) {
    const int64_t row = nb * int64_t(sizeof(T));
    const bool on = !p.cached() && pays();
    return {on ? std::max<int64_t>(1, kPrefetchBytes / row) : 0, lay.step()};
  }
  // Prefetches the row of `nb` values that is `rows` steps after p, if step s + rows < s1.
  template <typename T>
  void operator()(const T* p, int64_t nb, int64_t s, int64_t s1) const {
    if (rows == 0 || s + rows >= s1) return;
    const char* c = reinterpret_cast<const char*>(p + rows * step);
    for (int64_t b = 0; b < nb * int64_t(sizeof(T)); b += 64) __builtin_prefetch(c + b);
  }
};

// The reduction of steps [s, s1) of one unit to a map, shared by the forward's and the backward's
// aggregate: Bv = a * Bv + x and, with a per step, A = a * A (a conjugated when kConj), from the
// rows at xs and as on, consecutive steps lay.step() values apart.
template <bool kPerStep, bool kConj, typename RowT, typename T>
void reduce_steps(const Partition& p, const UnitLayout& lay, RowT& A, RowT& Bv, const T* xs, const T* as, int64_t s,
                  int64_t s1, int64_t nb) {
  const int64_t step = lay.step();
  const auto ahead = RowPrefetch::make<T>(p, lay, nb);
  const int64_t tile = p.tile_steps(nb * int64_t(sizeof(T)));
  if (kPerStep) {
    while (s < s1) {
      const int64_t n = std::min(tile, s1 - s);
      for (int64_t t = 0; t < n; ++t) ahead(xs + t * step, nb, s + t, s1), ahead(as + t * step, nb, s + t, s1);
      Bv.template steps_reduce<kConj>(A, as, n, step, xs, nb);
      s += n, xs += n * step, as += n * step;
    }
    return;
  }
  typename RowT::Coef c;  // the constant coefficient, prepared once
  if (kConj) {
    c.load_conj(as, nb);
  } else {
    c.load(as, nb);
  }
  while (s < s1) {
    const int64_t n = std::min(tile, s1 - s);
    for (int64_t t = 0; t < n; ++t) ahead(xs + t * step, nb, s + t, s1);
    Bv.template steps_with<false, false>(c, n, step, xs, nullptr, nullptr, nullptr, nb);
    s += n, xs += n * step;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: h_t = a_t * h_{t-1} + x_t.

// kDown: each row's channels are walked downwards (walk_down).
template <typename T, bool kPerStep, bool kDown>
void scan_forward_rows(const Partition& p, const T* lam, const T* x, const T* h0, T* h, int64_t L, int64_t N,
                       bool reverse) {
  using RowT = Row<T, kDown>;
  const UnitLayout lay{L, N, p.blocks, p.block, reverse};
  const int64_t step = lay.step();
  // Per-channel coefficient of unit u at logical step s.
  auto coef = [&](int64_t u, int64_t s) { return kPerStep ? lam + lay.offset(u, s) : lam + lay.channel0(u); };

  auto aggregate = [&](int64_t u, int64_t s0, int64_t s1, Affine<T>* maps) {
    const int64_t nb = lay.width(u);
    RowT A, Bv;  // A, the product of the coefficients: tracked when they vary per step, else a power
    if (kPerStep) A.fill(T(1), nb);
    Bv.fill(T(0), nb);
    reduce_steps<kPerStep, false>(p, lay, A, Bv, x + lay.offset(u, s0), coef(u, s0), s0, s1, nb);
    if (!kPerStep) A.template power<false>(coef(u, 0), s1 - s0, nb);
    for (int64_t j = 0; j < nb; ++j) maps[j] = {A.get(j), Bv.get(j)};
  };

  // kStream (a std::bool_constant): h written with streaming stores.
  auto scan_steps = [&](auto stream_tag, int64_t u, int64_t s0, int64_t s1, T* state) {
    constexpr bool kStream = decltype(stream_tag)::value;
    const int64_t nb = lay.width(u);
    RowT carry;
    carry.load(state, nb);
    const T* xs = x + lay.offset(u, s0);
    const T* as = coef(u, s0);
    T* hs = h + lay.offset(u, s0);
    const auto ahead = RowPrefetch::make<T>(p, lay, nb);
    const int64_t tile = p.tile_steps(nb * int64_t(sizeof(T)));
    if (kPerStep) {
      for (int64_t s = s0; s < s1;) {
        const int64_t n = std::min(tile, s1 - s);
        for (int64_t t = 0; t < n; ++t) ahead(xs + t * step, nb, s + t, s1), ahead(as + t * step, nb, s + t, s1);
        carry.template steps_out<false, false, kStream>(as, n, step, xs, hs, nullptr, nullptr, nb);
        s += n, xs += n * step, hs += n * step, as += n * step;
      }
    } else {
      typename RowT::Coef a;  // the constant coefficient, prepared once
      a.load(as, nb);
      for (int64_t s = s0; s < s1;) {
        const int64_t n = std::min(tile, s1 - s);
        for (int64_t t = 0; t < n; ++t) ahead(xs + t * step, nb, s + t, s1);
        carry.template steps_with<true, false, kStream>(a, n, step, xs, hs, nullptr, nullptr, nb);
        s += n, xs += n * step, hs += n * step;
      }
    }
    if (kStream) RowT::fence();
    carry.store(state, nb);
  };
  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    if (p.streamed() && RowT::streams(h + lay.offset(u, s0), step)) {
      scan_steps(std::true_type{}, u, s0, s1, state);
    } else {
      scan_steps(std::false_type{}, u, s0, s1, state);
    }
  };

  std::vector<T> state(p.units * p.block, T(0));
  if (h0 != nullptr) {
    for (int64_t u = 0; u < p.units; ++u) {
      std::copy_n(h0 + lay.batch(u) * N + lay.channel0(u), lay.width(u), &state[u * p.block]);
    }
  }
  run_partitioned<T>(p, L, state, aggregate, scan);
}

template <typename T, bool kPerStep>
void scan_forward_kernel(const T* lam, const T* x, const T* h0, T* h, int64_t B, int64_t L, int64_t N, bool reverse) {
  const Partition p = make_partition(B, L, N, sizeof(T), kPerStep, reverse);
  if (walk_down(reverse, p, sizeof(T))) {
    scan_forward_rows<T, kPerStep, true>(p, lam, x, h0, h, L, N, reverse);
  } else {
    scan_forward_rows<T, kPerStep, false>(p, lam, x, h0, h, L, N, reverse);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward. With k the forward's logical step, d_k = g_k + conj(a_{k+1}) d_{k+1} (d_{L-1} = g_{L-1})
// is a scan in the opposite direction whose coefficient at a step is conj(a) of the step visited
// just before it. Then grad_x = d, grad_a_k = conj(h_{k-1}) d_k (h_{-1} = h0 or 0), and
// grad_h0 = conj(a_0) d_0. kDown: each row's channels are walked downwards (walk_down).

template <typename T, bool kPerStep, bool kDown>
void scan_backward_rows(const Partition& p, const T* g, const T* lam, const T* h, const T* h0, T* gx, T* glam, T* gh0,
                        int64_t L, int64_t N, bool reverse) {
  using RowT = Row<T, kDown>;
  // Backward logical step s is the forward's step L-1-s: the layout runs the other way.
  const UnitLayout lay{L, N, p.blocks, p.block, !reverse};
  const int64_t step = lay.step();
  const bool grad_lam = glam != nullptr;
  // Time-invariant grad_lam: one partial sum per (unit, chunk) row, reduced in a fixed order.
  std::vector<T> partial(!kPerStep && grad_lam ? p.units * p.chunks.num_chunks() * p.block : 0, T(0));
  auto coef = [&](int64_t u, int64_t s) { return kPerStep ? lam + lay.offset(u, s) : lam + lay.channel0(u); };

  // The coefficient of step s is conj(a) at step s-1; step 0 starts from a zero carry, so its
  // coefficient is never needed (and its a_{k+1} does not exist): it is taken as zero.
  auto aggregate = [&](int64_t u, int64_t s0, int64_t s1, Affine<T>* maps) {
    const int64_t nb = lay.width(u);
    RowT A, Bv;
    const T* gs = g + lay.offset(u, s0);
    int64_t s = s0;
    if (s == 0) {
      A.fill(T(0), nb);
      Bv.load(gs, nb);
      ++s, gs += step;
    } else {
      if (kPerStep) A.fill(T(1), nb);
      Bv.fill(T(0), nb);
    }
    reduce_steps<kPerStep, true>(p, lay, A, Bv, gs, coef(u, s - 1), s, s1, nb);
    // Without a per-step coefficient the product over the steps that scale the carry is a power.
    if (!kPerStep && s0 > 0) A.template power<true>(coef(u, 0), s1 - s, nb);
    for (int64_t j = 0; j < nb; ++j) maps[j] = {A.get(j), Bv.get(j)};
  };

  // Steps [s0, s1) of unit u from the carry in `state`; kGrad: grad_lam wanted; kStream: the
  // outputs written with streaming stores. Each step is one pass over its row: d = conj(a) d + g,
  // grad_x = d and the grad_lam term conj(h_{k-1}) d.
  auto scan_steps = [&](auto grad_tag, auto stream_tag, int64_t u, int64_t s0, int64_t s1, T* state) {
    constexpr bool kGrad = decltype(grad_tag)::value;
    constexpr bool kStream = decltype(stream_tag)::value;
    const int64_t nb = lay.width(u);
    RowT d;
    typename RowT::Acc acc;
    d.load(state, nb);
    if (kGrad && !kPerStep) acc.fill(T(0), nb);
    const int64_t off = lay.offset(u, s0);
    const T* gs = g + off;
    T* gxs = gx + off;
    const T* hs = h + off;  // h at this step; h_{k-1} is one step further along
    T* gas = kPerStep && kGrad ? glam + off : nullptr;
    // Step 0 (d_{L-1} = g_{L-1}, from the zero carry) runs with a zero coefficient; the last
    // step's h_{k-1} is h0, or zero.
    const std::vector<T> zeros(nb, T(0));
    const T* h_first = h0 != nullptr ? h0 + lay.batch(u) * N + lay.channel0(u) : zeros.data();
    auto previous_h = [&](int64_t s_, const T* h_s) { return !kGrad ? nullptr : s_ == L - 1 ? h_first : h_s + step; };
    const auto ahead = RowPrefetch::make<T>(p, lay, nb);
    const int64_t tile = p.tile_steps(nb * int64_t(sizeof(T)));
    if (kPerStep) {
      // a at step s, the coefficient of step s + 1: step s's is the row before (step 0's is zero).
      const T* a_here = coef(u, s0);
      int64_t s = s0;
      while (s < s1) {
        // Step 0 (zero coefficient) and, with grad_lam, the last step (h_{k-1} is h_first) alone.
        const bool alone = s == 0 || (kGrad && s == L - 1);
        const int64_t n = alone ? 1 : std::min({tile, s1 - s, kGrad ? L - 1 - s : s1 - s});
        for (int64_t t = 0; t < n; ++t) {
          ahead(gs + t * step, nb, s + t, s1);
          ahead(a_here + t * step, nb, s + t, s1);
          if (kGrad) ahead(hs + (t + 1) * step, nb, s + t + 1, s1);
        }
        if (alone) {
          d.template step_out<true, kGrad, kStream>(s == 0 ? zeros.data() : a_here - step, gs, gxs, previous_h(s, hs),
                                                    gas, nb);
        } else {
          d.template steps_out<true, kGrad, kStream>(a_here - step, n, step, gs, gxs, kGrad ? hs + step : nullptr, gas,
                                                     nb);
        }
        s += n, gs += n * step, gxs += n * step, hs += n * step, a_here += n * step;
        if (kGrad) gas += n * step;
      }
    } else {
      typename RowT::Coef a, zero;  // conj of the constant coefficient, prepared once
      a.load_conj(coef(u, 0), nb);
      int64_t s = s0;
      if (s == 0) {
        zero.fill(T(0), nb);
        d.template step_out_with<kGrad, kStream>(zero, gs, gxs, previous_h(s, hs), &acc, nb);
        ++s, gs += step, gxs += step, hs += step;
      }
      while (s < s1) {
        if (kGrad && s == L - 1) {  // h_{k-1} is h_first, not the next row: a step of its own
          d.template step_out_with<kGrad, kStream>(a, gs, gxs, h_first, &acc, nb);
          ++s, gs += step, gxs += step, hs += step;
          continue;
        }
        const int64_t n = std::min({tile, s1 - s, kGrad ? L - 1 - s : s1 - s});
        for (int64_t t = 0; t < n; ++t) {
          ahead(gs + t * step, nb, s + t, s1);
          if (kGrad) ahead(hs + (t + 1) * step, nb, s + t + 1, s1);
        }
        d.template steps_with<true, kGrad, kStream>(a, n, step, gs, gxs, kGrad ? hs + step : nullptr, &acc, nb);
        s += n, gs += n * step, gxs += n * step, hs += n * step;
      }
    }
    if (kStream) RowT::fence();
    d.store(state, nb);
    if (!kPerStep && kGrad) {
      // One row per (unit, chunk), summed below in a fixed order: deterministic.
      T* row = &partial[(u * p.chunks.num_chunks() + p.chunks.chunk_of(s0)) * p.block];
      for (int64_t j = 0; j < nb; ++j) row[j] = acc.get(j);
    }
  };
  auto streams = [&](int64_t u, int64_t s0) {
    const int64_t off = lay.offset(u, s0);
    return p.streamed() && RowT::streams(gx + off, step) && (!kPerStep || !grad_lam || RowT::streams(glam + off, step));
  };
  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    const bool nt = streams(u, s0);
    if (grad_lam && nt) {
      scan_steps(std::true_type{}, std::true_type{}, u, s0, s1, state);
    } else if (grad_lam) {
      scan_steps(std::true_type{}, std::false_type{}, u, s0, s1, state);
    } else if (nt) {
      scan_steps(std::false_type{}, std::true_type{}, u, s0, s1, state);
    } else {
      scan_steps(std::false_type{}, std::false_type{}, u, s0, s1, state);
    }
  };

  std::vector<T> state(p.units * p.block, T(0));
  run_partitioned<T>(p, L, state, aggregate, scan);

  if (gh0 != nullptr) {
    // d_0 is the final state; a_0 is the coefficient at the forward's first step.
    for (int64_t u = 0; u < p.units; ++u) {
      const T* a0 = kPerStep ? lam + lay.offset(u, L - 1) : lam + lay.channel0(u);
      T* out = gh0 + lay.batch(u) * N + lay.channel0(u);
      for (int64_t j = 0; j < lay.width(u); ++j) out[j] = conj_value(a0[j]) * state[u * p.block + j];
    }
  }
  if (!kPerStep && grad_lam) {
    std::fill_n(glam, N, T(0));
    for (int64_t u = 0; u < p.units; ++u) {
      for (int64_t c = 0; c < p.chunks.num_chunks(); ++c) {
        const T* row = &partial[(u * p.chunks.num_chunks() + c) * p.block];
        for (int64_t j = 0; j < lay.width(u); ++j) glam[lay.channel0(u) + j] += row[j];
      }
    }
  }
}

template <typename T, bool kPerStep>
void scan_backward_kernel(const T* g, const T* lam, const T* h, const T* h0, T* gx, T* glam, T* gh0, int64_t B,
                          int64_t L, int64_t N, bool reverse) {
  // With grad_lam per step the scan writes one more tensor, so its reduction costs less beside it.
  const Partition p = make_partition(B, L, N, sizeof(T), kPerStep && glam == nullptr, !reverse);
  if (walk_down(!reverse, p, sizeof(T))) {
    scan_backward_rows<T, kPerStep, true>(p, g, lam, h, h0, gx, glam, gh0, L, N, reverse);
  } else {
    scan_backward_rows<T, kPerStep, false>(p, g, lam, h, h0, gx, glam, gh0, L, N, reverse);
  }
}

}  // namespace torch_lru::cpu::TORCH_LRU_CPU_ISA

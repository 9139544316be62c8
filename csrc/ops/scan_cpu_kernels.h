// CPU kernels of the scan ops: the exact reference for the CUDA kernels.
//
// This header is compiled once per instruction set (scan_cpu_isa_*.cpp), each time inside its own
// namespace, TORCH_LRU_CPU_ISA; scan_cpu.cpp picks one at run time. It includes nothing itself:
// the including file brings ATen and the shared scan math in first.
//
// Work is split into units of (batch row, block of channels); channels are the contiguous axis, and
// a block is a whole row whenever N allows, so a unit streams through contiguous memory and the
// inner loop over channels vectorises (complex state is kept as separate real and imaginary arrays
// for that). When threads outnumber units three to one or more (small B, long L) L is split into
// chunks, chained as in a decoupled look-back scan (run_partitioned). Chunks are sized to stay in
// a core's L2 between reduction and scan, so memory traffic stays near one read of x and one write
// of h.
#pragma once

#ifndef TORCH_LRU_CPU_ISA
#error "define TORCH_LRU_CPU_ISA (the namespace of this instruction set) before including this file"
#endif

namespace torch_lru::cpu::TORCH_LRU_CPU_ISA {

constexpr int64_t kMaxBlock = 1024;          // channels per unit; the unit's state lives on the stack
constexpr int64_t kMinSplit = 256;           // fewest channels of a row given to one unit when rows are split
constexpr int64_t kChunkBytes = 256 * 1024;  // bytes of x per chunk of the L-split path: stays in L2
constexpr int64_t kMinChunkLen = 64;

// How a (B, L, N) problem is divided among threads.
struct Partition {
  int64_t block = 1;       // channels per unit
  int64_t blocks = 1;      // units per batch row
  int64_t units = 0;       // B * blocks
  ChunkPlan chunks{0, 1};  // the split of L (one chunk: no split)

  bool split() const { return chunks.num_chunks() > 1; }
  // Index of the chunk holding logical step s.
  int64_t chunk_of(int64_t s) const { return s / chunks.chunk_len; }
};

Partition make_partition(int64_t B, int64_t L, int64_t N, int64_t elem_size) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  Partition p;
  // Whole rows: splitting a row among threads would turn one contiguous stream into many strided
  // ones, which the prefetchers follow badly; below one unit per thread, L is split instead.
  p.block = std::min(N, kMaxBlock);
  // Wide rows may still be shared among threads in runs of at least kMinSplit channels (2 KB of
  // complex64), long enough for the prefetchers.
  const int64_t want = std::min((threads + B - 1) / B, N / kMinSplit);
  if (B * ((N + p.block - 1) / p.block) < threads && want > 1) {
    p.block = std::min(p.block, (N + want - 1) / want);
  }
  p.blocks = (N + p.block - 1) / p.block;
  p.units = B * p.blocks;
  const int64_t chunk_len = std::max(kMinChunkLen, kChunkBytes / (p.block * elem_size));
  // The split does about twice the arithmetic of a plain scan (reduce, then scan); measured on two
  // cores it was slower than one thread per unit, so it is used from three threads per unit on.
  const bool split = threads >= 3 * p.units && L >= 2 * chunk_len;
  p.chunks = ChunkPlan{L, split ? chunk_len : std::max<int64_t>(L, 1)};
  return p;
}

// Runs a scan over logical steps [0, L) of every unit.
//   aggregate(unit, s0, s1, Affine<T>* maps): the map of steps [s0, s1), per channel of the unit
//   scan(unit, s0, s1, T* state): runs steps [s0, s1) from state (per channel), leaving the end
//     state in it
// `state` holds one row of p.block values per unit: the initial state in, the final state out.
//
// With L split, chunks are claimed in order from a shared counter (unit-interleaved). A worker
// reduces its chunk to a map while the chunk before it is still in flight, waits for that chunk's
// carry, publishes its own carry-out (map applied to carry-in) for the next chunk at once, and
// then scans its chunk from the carry-in, reading the data it just brought into its cache. Chunks
// are claimed in order and a claimed chunk only waits for earlier ones, so any number of workers,
// one included, makes progress; the arithmetic does not depend on which worker takes which chunk.
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

// The state of one unit: `nb` channels, kept so that the loops over channels vectorise. Each loop
// reads and writes rows of the (B, L, N) tensors (`nb` consecutive values of T).
template <typename T>
struct Row {
  T v[kMaxBlock];

  void load(const T* src, int64_t nb) { std::copy_n(src, nb, v); }
  void fill(T value, int64_t nb) { std::fill_n(v, nb, value); }
  void store(T* dst, int64_t nb) const { std::copy_n(v, nb, dst); }
  T get(int64_t j) const { return v[j]; }
  // v = a * v + x (a conjugated when kConj), and out = v when out is given.
  template <bool kConj>
  void step(const T* a, const T* x, T* out, int64_t nb) {
    for (int64_t j = 0; j < nb; ++j) v[j] = (kConj ? conj_value(a[j]) : a[j]) * v[j] + x[j];
    if (out != nullptr) std::copy_n(v, nb, out);
  }
  // v = a * v + x with a constant coefficient held in a Row, and out = v.
  void step_with(const Row& a, const T* x, T* out, int64_t nb) {
    for (int64_t j = 0; j < nb; ++j) v[j] = a.v[j] * v[j] + x[j];
    std::copy_n(v, nb, out);
  }
  template <bool kConj>
  void scale(const T* a, int64_t nb) {
    for (int64_t j = 0; j < nb; ++j) v[j] = (kConj ? conj_value(a[j]) : a[j]) * v[j];
  }
  // out = conj(p) * v, or acc += conj(p) * v.
  void conj_times(const T* p, T* out, int64_t nb) const {
    for (int64_t j = 0; j < nb; ++j) out[j] = conj_value(p[j]) * v[j];
  }
  void accumulate_conj_times(const T* p, Row& acc, int64_t nb) const {
    for (int64_t j = 0; j < nb; ++j) acc.v[j] += conj_value(p[j]) * v[j];
  }
};

// Complex state as separate real and imaginary arrays: the interleaved rows are read and written
// with stride-2 accesses, which the compiler vectorises, where c10::complex arithmetic is not.
template <typename R>
struct Row<c10::complex<R>> {
  using T = c10::complex<R>;
  R re[kMaxBlock], im[kMaxBlock];

  static const R* flat(const T* p) { return reinterpret_cast<const R*>(p); }
  static R* flat(T* p) { return reinterpret_cast<R*>(p); }

  void load(const T* src, int64_t nb) {
    const R* s = flat(src);
    for (int64_t j = 0; j < nb; ++j) re[j] = s[2 * j], im[j] = s[2 * j + 1];
  }
  void fill(T value, int64_t nb) {
    std::fill_n(re, nb, value.real());
    std::fill_n(im, nb, value.imag());
  }
  void store(T* dst, int64_t nb) const {
    R* d = flat(dst);
    for (int64_t j = 0; j < nb; ++j) d[2 * j] = re[j], d[2 * j + 1] = im[j];
  }
  T get(int64_t j) const { return T(re[j], im[j]); }
  template <bool kConj>
  void step(const T* a_, const T* x_, T* out_, int64_t nb) {
    const R* a = flat(a_);
    const R* x = flat(x_);
    constexpr R sign = kConj ? R(-1) : R(1);
    auto body = [&](int64_t j) {
      const R ar = a[2 * j], ai = sign * a[2 * j + 1];
      const R r = ar * re[j] - ai * im[j] + x[2 * j];
      const R i = ar * im[j] + ai * re[j] + x[2 * j + 1];
      re[j] = r, im[j] = i;
    };
    if (out_ == nullptr) {
      for (int64_t j = 0; j < nb; ++j) body(j);
    } else {
      R* out = flat(out_);
      for (int64_t j = 0; j < nb; ++j) body(j), out[2 * j] = re[j], out[2 * j + 1] = im[j];
    }
  }
  void step_with(const Row& a, const T* x_, T* out_, int64_t nb) {
    const R* x = flat(x_);
    R* out = flat(out_);
    for (int64_t j = 0; j < nb; ++j) {
      const R r = a.re[j] * re[j] - a.im[j] * im[j] + x[2 * j];
      const R i = a.re[j] * im[j] + a.im[j] * re[j] + x[2 * j + 1];
      re[j] = r, im[j] = i;
      out[2 * j] = r, out[2 * j + 1] = i;
    }
  }
  template <bool kConj>
  void scale(const T* a_, int64_t nb) {
    const R* a = flat(a_);
    constexpr R sign = kConj ? R(-1) : R(1);
    for (int64_t j = 0; j < nb; ++j) {
      const R ar = a[2 * j], ai = sign * a[2 * j + 1];
      const R r = ar * re[j] - ai * im[j];
      im[j] = ar * im[j] + ai * re[j], re[j] = r;
    }
  }
  void conj_times(const T* p_, T* out_, int64_t nb) const {
    const R* p = flat(p_);
    R* out = flat(out_);
    for (int64_t j = 0; j < nb; ++j) {
      const R pr = p[2 * j], pi = p[2 * j + 1];
      out[2 * j] = pr * re[j] + pi * im[j];
      out[2 * j + 1] = pr * im[j] - pi * re[j];
    }
  }
  void accumulate_conj_times(const T* p_, Row& acc, int64_t nb) const {
    const R* p = flat(p_);
    for (int64_t j = 0; j < nb; ++j) {
      const R pr = p[2 * j], pi = p[2 * j + 1];
      acc.re[j] += pr * re[j] + pi * im[j];
      acc.im[j] += pr * im[j] - pi * re[j];
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Forward: h_t = a_t * h_{t-1} + x_t.

template <typename T, bool kPerStep>
void scan_forward_kernel(const T* lam, const T* x, const T* h0, T* h, int64_t B, int64_t L, int64_t N, bool reverse) {
  const Partition p = make_partition(B, L, N, sizeof(T));
  const UnitLayout lay{L, N, p.blocks, p.block, reverse};
  const int64_t step = lay.step();
  // Per-channel coefficient of unit u at logical step s.
  auto coef = [&](int64_t u, int64_t s) { return kPerStep ? lam + lay.offset(u, s) : lam + lay.channel0(u); };

  auto aggregate = [&](int64_t u, int64_t s0, int64_t s1, Affine<T>* maps) {
    const int64_t nb = lay.width(u);
    Row<T> A, Bv;  // A, the product of the coefficients, is tracked only when they vary per step
    if (kPerStep) A.fill(T(1), nb);
    Bv.fill(T(0), nb);
    const T* xs = x + lay.offset(u, s0);
    const T* as = coef(u, s0);
    for (int64_t s = s0; s < s1; ++s, xs += step, as += kPerStep ? step : 0) {
      if (kPerStep) A.template scale<false>(as, nb);
      Bv.template step<false>(as, xs, nullptr, nb);
    }
    const T* a = coef(u, s0);
    for (int64_t j = 0; j < nb; ++j) maps[j] = {kPerStep ? A.get(j) : power(a[j], s1 - s0), Bv.get(j)};
  };

  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    const int64_t nb = lay.width(u);
    Row<T> carry;
    carry.load(state, nb);
    const T* xs = x + lay.offset(u, s0);
    const T* as = coef(u, s0);
    T* hs = h + lay.offset(u, s0);
    if (kPerStep) {
      for (int64_t s = s0; s < s1; ++s, xs += step, hs += step, as += step) carry.template step<false>(as, xs, hs, nb);
    } else {
      Row<T> a;  // the constant coefficient, laid out like the state (no per-step de-interleaving)
      a.load(as, nb);
      for (int64_t s = s0; s < s1; ++s, xs += step, hs += step) carry.step_with(a, xs, hs, nb);
    }
    carry.store(state, nb);
  };

  std::vector<T> state(p.units * p.block, T(0));
  if (h0 != nullptr) {
    for (int64_t u = 0; u < p.units; ++u) {
      std::copy_n(h0 + lay.batch(u) * N + lay.channel0(u), lay.width(u), &state[u * p.block]);
    }
  }
  run_partitioned<T>(p, L, state, aggregate, scan);
}

// ---------------------------------------------------------------------------------------------
// Backward. With k the forward's logical step, d_k = g_k + conj(a_{k+1}) d_{k+1} (d_{L-1} = g_{L-1})
// is a scan in the opposite direction whose coefficient at a step is conj(a) of the step visited
// just before it. Then grad_x = d, grad_a_k = conj(h_{k-1}) d_k (h_{-1} = h0 or 0), and
// grad_h0 = conj(a_0) d_0.

template <typename T, bool kPerStep>
void scan_backward_kernel(const T* g, const T* lam, const T* h, const T* h0, T* gx, T* glam, T* gh0, int64_t B,
                          int64_t L, int64_t N, bool reverse) {
  const Partition p = make_partition(B, L, N, sizeof(T));
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
    Row<T> A, Bv;
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
    const int64_t scaled = s1 - s;  // steps whose coefficient multiplies the carry
    const T* as = coef(u, s - 1);
    for (; s < s1; ++s, gs += step, as += kPerStep ? step : 0) {
      if (kPerStep) A.template scale<true>(as, nb);
      Bv.template step<true>(as, gs, nullptr, nb);
    }
    const T* a = coef(u, 0);
    for (int64_t j = 0; j < nb; ++j) {
      const T prod = s0 == 0 ? T(0) : power(conj_value(a[j]), scaled);
      maps[j] = {kPerStep ? A.get(j) : prod, Bv.get(j)};
    }
  };

  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    const int64_t nb = lay.width(u);
    Row<T> d, acc;
    d.load(state, nb);
    acc.fill(T(0), nb);
    const int64_t off = lay.offset(u, s0);
    const T* gs = g + off;
    T* gxs = gx + off;
    const T* hs = h + off;  // h at this step; h_{k-1} is one step further along
    T* gas = kPerStep && grad_lam ? glam + off : nullptr;
    std::vector<T> zeros(h0 == nullptr && grad_lam ? nb : 0, T(0));
    const T* h_first = h0 != nullptr ? h0 + lay.batch(u) * N + lay.channel0(u) : zeros.data();
    // At step 0 `as` already points at the coefficient of step 1, so it only advances after.
    const T* as = coef(u, std::max<int64_t>(s0 - 1, 0));
    for (int64_t s = s0; s < s1; ++s, gs += step, gxs += step, hs += step) {
      if (s == 0) {
        d.load(gs, nb);
        d.store(gxs, nb);
      } else {
        d.template step<true>(as, gs, gxs, nb);
        if (kPerStep) as += step;
      }
      if (grad_lam) {
        const T* hp = s == L - 1 ? h_first : hs + step;
        if (kPerStep) {
          d.conj_times(hp, gas, nb);
          gas += step;
        } else {
          d.accumulate_conj_times(hp, acc, nb);
        }
      }
    }
    d.store(state, nb);
    if (!kPerStep && grad_lam) {
      // One row per (unit, chunk), summed below in a fixed order: deterministic.
      T* row = &partial[(u * p.chunks.num_chunks() + p.chunk_of(s0)) * p.block];
      for (int64_t j = 0; j < nb; ++j) row[j] = acc.get(j);
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

}  // namespace torch_lru::cpu::TORCH_LRU_CPU_ISA

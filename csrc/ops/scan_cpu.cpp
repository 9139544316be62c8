// CPU kernels of the scan ops: the exact reference for the CUDA kernels.
//
// Work is split into units of (batch row, block of channels); channels are the contiguous axis, so
// each step of a unit touches `block` consecutive elements and the inner loop vectorises. When
// there are fewer units than threads (B = 1 with few channels, long L) the L axis is split as well:
// L is walked in tiles of `chunks` chunks; each chunk is first reduced to one affine map, the maps
// give every chunk its carry-in, and each chunk is then scanned from its carry. Chunks are sized to
// stay in a core's L2 between the two passes, so memory traffic stays near one read of x and one
// write of h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ops/scan_checks.h"
#include "torch_lru/scan_combine.h"

namespace torch_lru {
namespace {

constexpr int64_t kMaxBlock = 256;           // channels per unit; the unit's state lives on the stack
constexpr int64_t kMinBlock = 16;            // at least a cache line of channels per step
constexpr int64_t kChunkBytes = 128 * 1024;  // bytes of x per chunk of the L-split path
constexpr int64_t kMinChunkLen = 64;

// How a (B, L, N) problem is divided among threads.
struct Partition {
  int64_t block = 1;    // channels per unit
  int64_t blocks = 1;   // units per batch row
  int64_t units = 0;    // B * blocks
  int64_t chunks = 1;   // chunks per unit in each tile (1: no split along L)
  int64_t chunk_len = 1;

  int64_t tile_len(int64_t L) const { return chunks == 1 ? L : chunks * chunk_len; }
};

Partition make_partition(int64_t B, int64_t L, int64_t N, int64_t elem_size) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  Partition p;
  p.block = std::min(N, kMaxBlock);
  // Narrow the blocks (down to a cache line) until every thread has a unit.
  while (B * ((N + p.block - 1) / p.block) < threads && p.block > kMinBlock) {
    p.block = std::max(kMinBlock, (p.block / 2 + kMinBlock - 1) / kMinBlock * kMinBlock);
  }
  p.blocks = (N + p.block - 1) / p.block;
  p.units = B * p.blocks;
  p.chunk_len = std::max(kMinChunkLen, kChunkBytes / (p.block * elem_size));
  if (p.units < threads && L >= 2 * p.chunk_len) {
    p.chunks = (threads + p.units - 1) / p.units;
  }
  return p;
}

// Runs a scan over logical steps [0, L) of every unit, splitting L when the partition says so.
//   aggregate(unit, s0, s1, Affine<T>* maps): the map of steps [s0, s1), per channel of the unit
//   scan(unit, s0, s1, T* state): runs steps [s0, s1) from state (per channel), leaving the end
//     state in it
// `state` holds one row of p.block values per unit: the initial state in, the final state out.
template <typename T, typename AggregateFn, typename ScanFn>
void run_partitioned(const Partition& p, int64_t L, std::vector<T>& state, const AggregateFn& aggregate,
                     const ScanFn& scan) {
  const int64_t C = p.chunks;
  const int64_t jobs = p.units * C;
  std::vector<Affine<T>> maps(C > 1 ? jobs * p.block : 0);
  std::vector<T> carry(jobs * p.block);
  for (int64_t t0 = 0; t0 < L; t0 += p.tile_len(L)) {
    const int64_t t1 = std::min(L, t0 + p.tile_len(L));
    auto bounds = [&](int64_t c) {
      const int64_t s0 = std::min(t1, t0 + c * p.chunk_len);
      return std::make_pair(s0, c == C - 1 ? t1 : std::min(t1, s0 + p.chunk_len));
    };
    if (C > 1) {
      // Pass 1: every chunk but each unit's last reduced to its map.
      at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
        for (int64_t job = begin; job < end; ++job) {
          const int64_t c = job % C;
          const auto [s0, s1] = bounds(c);
          if (c != C - 1) aggregate(job / C, s0, s1, &maps[job * p.block]);
        }
      });
    }
    // Carry-in of every chunk, from its unit's state and the maps of the chunks before it.
    for (int64_t u = 0; u < p.units; ++u) {
      T* row = &carry[u * C * p.block];
      std::copy_n(&state[u * p.block], p.block, row);
      for (int64_t c = 1; c < C; ++c) {
        const Affine<T>* m = &maps[(u * C + c - 1) * p.block];
        for (int64_t j = 0; j < p.block; ++j) row[c * p.block + j] = m[j].apply(row[(c - 1) * p.block + j]);
      }
    }
    // Pass 2: every chunk scanned from its carry-in.
    at::parallel_for(0, jobs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const auto [s0, s1] = bounds(job % C);
        if (s0 < s1) scan(job / C, s0, s1, &carry[job * p.block]);
      }
    });
    for (int64_t u = 0; u < p.units; ++u) {
      std::copy_n(&carry[(u * C + C - 1) * p.block], p.block, &state[u * p.block]);
    }
  }
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
  int64_t offset(int64_t u, int64_t s) const {
    return (batch(u) * L + time_index(s, L, reverse)) * N + channel0(u);
  }
  // Element distance between consecutive logical steps.
  int64_t step() const { return reverse ? -N : N; }
};

// ---------------------------------------------------------------------------------------------
// Forward: h_t = a_t * h_{t-1} + x_t.

template <typename T, bool kPerStep>
void scan_forward_kernel(const T* lam, const T* x, const T* h0, T* h, int64_t B, int64_t L, int64_t N,
                         bool reverse) {
  const Partition p = make_partition(B, L, N, sizeof(T));
  const UnitLayout lay{L, N, p.blocks, p.block, reverse};
  const int64_t step = lay.step();
  // Per-channel coefficient of unit u at logical step s.
  auto coef = [&](int64_t u, int64_t s) { return kPerStep ? lam + lay.offset(u, s) : lam + lay.channel0(u); };

  auto aggregate = [&](int64_t u, int64_t s0, int64_t s1, Affine<T>* maps) {
    const int64_t nb = lay.width(u);
    T A[kMaxBlock], Bv[kMaxBlock];
    std::fill_n(A, nb, T(1));
    std::fill_n(Bv, nb, T(0));
    const T* xs = x + lay.offset(u, s0);
    const T* as = coef(u, s0);
    for (int64_t s = s0; s < s1; ++s, xs += step, as += kPerStep ? step : 0) {
      for (int64_t j = 0; j < nb; ++j) {
        A[j] = as[j] * A[j];
        Bv[j] = as[j] * Bv[j] + xs[j];
      }
    }
    for (int64_t j = 0; j < nb; ++j) maps[j] = {A[j], Bv[j]};
  };

  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    const int64_t nb = lay.width(u);
    T carry[kMaxBlock];
    std::copy_n(state, nb, carry);
    const T* xs = x + lay.offset(u, s0);
    const T* as = coef(u, s0);
    T* hs = h + lay.offset(u, s0);
    for (int64_t s = s0; s < s1; ++s, xs += step, hs += step, as += kPerStep ? step : 0) {
      for (int64_t j = 0; j < nb; ++j) {
        carry[j] = as[j] * carry[j] + xs[j];
        hs[j] = carry[j];
      }
    }
    std::copy_n(carry, nb, state);
  };

  std::vector<T> state(p.units * p.block, T(0));
  if (h0 != nullptr) {
    for (int64_t u = 0; u < p.units; ++u) {
      std::copy_n(h0 + lay.batch(u) * N + lay.channel0(u), lay.width(u), &state[u * p.block]);
    }
  }
  run_partitioned<T>(p, L, state, aggregate, scan);
}

at::Tensor& scan_out_cpu(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                         bool reverse, at::Tensor& h) {
  check_scan_inputs("torch_lru::scan", lam, x, h0);
  check_scan_out(h, x);
  if (h.numel() == 0) return h;
  const auto lam_c = lam.contiguous();
  const auto x_c = x.contiguous();
  const auto h0_c = h0.has_value() && h0->defined() ? h0->contiguous() : at::Tensor();
  const int64_t B = x.size(0), L = x.size(1), N = x.size(2);
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(x.scalar_type(), "torch_lru::scan", [&] {
    const scalar_t* h0_ptr = h0_c.defined() ? h0_c.const_data_ptr<scalar_t>() : nullptr;
    auto run = lam_is_per_step(lam) ? &scan_forward_kernel<scalar_t, true> : &scan_forward_kernel<scalar_t, false>;
    run(lam_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(), h0_ptr, h.mutable_data_ptr<scalar_t>(), B,
        L, N, reverse);
  });
  return h;
}

at::Tensor scan_cpu(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0,
                    bool reverse) {
  auto h = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  return scan_out_cpu(lam, x, h0, reverse, h);
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
  std::vector<T> partial(!kPerStep && grad_lam ? p.units * p.chunks * p.block : 0, T(0));
  auto coef = [&](int64_t u, int64_t s) { return kPerStep ? lam + lay.offset(u, s) : lam + lay.channel0(u); };

  // The coefficient of step s is conj(a) at step s-1; step 0 starts from a zero carry, so its
  // coefficient is never needed (and its a_{k+1} does not exist): it is taken as zero.
  auto aggregate = [&](int64_t u, int64_t s0, int64_t s1, Affine<T>* maps) {
    const int64_t nb = lay.width(u);
    T A[kMaxBlock], Bv[kMaxBlock];
    const T* gs = g + lay.offset(u, s0);
    int64_t s = s0;
    if (s == 0) {
      for (int64_t j = 0; j < nb; ++j) A[j] = T(0), Bv[j] = gs[j];
      ++s, gs += step;
    } else {
      std::fill_n(A, nb, T(1));
      std::fill_n(Bv, nb, T(0));
    }
    const T* as = coef(u, s - 1);
    for (; s < s1; ++s, gs += step, as += kPerStep ? step : 0) {
      for (int64_t j = 0; j < nb; ++j) {
        const T c = conj_value(as[j]);
        A[j] = c * A[j];
        Bv[j] = c * Bv[j] + gs[j];
      }
    }
    for (int64_t j = 0; j < nb; ++j) maps[j] = {A[j], Bv[j]};
  };

  auto scan = [&](int64_t u, int64_t s0, int64_t s1, T* state) {
    const int64_t nb = lay.width(u);
    T d[kMaxBlock], acc[kMaxBlock];
    std::copy_n(state, nb, d);
    std::fill_n(acc, nb, T(0));
    const int64_t off = lay.offset(u, s0);
    const T* gs = g + off;
    T* gxs = gx + off;
    const T* hs = h + off;  // h at this step; h_{k-1} is one step further along
    T* gas = kPerStep && grad_lam ? glam + off : nullptr;
    const T* h0u = h0 != nullptr ? h0 + lay.batch(u) * N + lay.channel0(u) : nullptr;
    // At step 0 `as` already points at the coefficient of step 1, so it only advances after.
    const T* as = coef(u, std::max<int64_t>(s0 - 1, 0));
    for (int64_t s = s0; s < s1; ++s, gs += step, gxs += step, hs += step) {
      if (s == 0) {
        std::copy_n(gs, nb, d);
      } else {
        for (int64_t j = 0; j < nb; ++j) d[j] = conj_value(as[j]) * d[j] + gs[j];
        if (kPerStep) as += step;
      }
      std::copy_n(d, nb, gxs);
      if (grad_lam) {
        const bool first_forward_step = s == L - 1;
        for (int64_t j = 0; j < nb; ++j) {
          const T hp = first_forward_step ? (h0u != nullptr ? h0u[j] : T(0)) : hs[step + j];
          const T ga = conj_value(hp) * d[j];
          if (kPerStep) {
            gas[j] = ga;
          } else {
            acc[j] += ga;
          }
        }
        if (kPerStep) gas += step;
      }
    }
    std::copy_n(d, nb, state);
    if (!kPerStep && grad_lam) {
      // Chunk c of unit u always owns row (u, c): tiles run one after another, so no race.
      const int64_t c = (s0 % p.tile_len(L)) / p.chunk_len;
      T* row = &partial[(u * p.chunks + std::min(c, p.chunks - 1)) * p.block];
      for (int64_t j = 0; j < nb; ++j) row[j] += acc[j];
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
      for (int64_t c = 0; c < p.chunks; ++c) {
        const T* row = &partial[(u * p.chunks + c) * p.block];
        for (int64_t j = 0; j < lay.width(u); ++j) glam[lay.channel0(u) + j] += row[j];
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cpu(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                 const at::Tensor& h,
                                                                 const std::optional<at::Tensor>& h0, bool reverse,
                                                                 std::array<bool, 3> mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  const bool has_h0 = h0.has_value() && h0->defined();
  const auto contiguous = at::MemoryFormat::Contiguous;
  auto gx = at::empty(h.sizes(), h.options().memory_format(contiguous));
  auto glam = mask[0] ? at::empty(lam.sizes(), lam.options().memory_format(contiguous)) : at::Tensor();
  auto gh0 = mask[2] && has_h0 ? at::empty(h0->sizes(), h0->options().memory_format(contiguous)) : at::Tensor();
  const int64_t B = h.size(0), L = h.size(1), N = h.size(2);
  if (B * L * N == 0) {
    // No steps: nothing flows to lam, and h0 passes through untouched by any step.
    if (glam.defined()) glam.zero_();
    if (gh0.defined()) gh0.zero_();
    return {glam, mask[1] ? gx : at::Tensor(), gh0};
  }
  const auto g_c = grad_h.contiguous();
  const auto lam_c = lam.contiguous();
  const auto h_c = h.contiguous();
  const auto h0_c = has_h0 ? h0->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    auto run =
        lam_is_per_step(lam) ? &scan_backward_kernel<scalar_t, true> : &scan_backward_kernel<scalar_t, false>;
    run(g_c.const_data_ptr<scalar_t>(), lam_c.const_data_ptr<scalar_t>(), h_c.const_data_ptr<scalar_t>(),
        has_h0 ? h0_c.const_data_ptr<scalar_t>() : nullptr, gx.mutable_data_ptr<scalar_t>(),
        glam.defined() ? glam.mutable_data_ptr<scalar_t>() : nullptr,
        gh0.defined() ? gh0.mutable_data_ptr<scalar_t>() : nullptr, B, L, N, reverse);
  });
  return {glam, mask[1] ? gx : at::Tensor(), gh0};
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CPU, m) {
  m.impl("scan", &scan_cpu);
  m.impl("scan.out", &scan_out_cpu);
  m.impl("scan_backward", &scan_backward_cpu);
}

}  // namespace torch_lru

// The CUDA kernels' tiled scan, run on the CPU: the shared tile code (csrc/ops/scan_tiles.h)
// driven as cuda/scan_cuda.cu drives it, in two ways.
// - Emulation: tiles one after another in claim order, each finished predecessor met on the
//   look-back as it could be met on a GPU (end state published, or only its aggregate so far),
//   chosen at random. Results must match the CPU op to rounding.
// - Stress of the protocol: CPU threads, fewer than the tiles, claim tile ids from an atomic
//   counter and run whole tiles at once, publishing through release/acquire atomics with random
//   delays between every store, so tiles really wait on each other, meet half-published
//   predecessors and fold windows of aggregates. Results must match a loop written from the
//   equations. Reversing the order in which resolve_carry stores a value and its flag makes this
//   test fail (the reader then takes an unwritten NaN).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <atomic>
#include <chrono>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ops/scan_tiles.h"
#include "torch_lru/scan.h"

namespace {

using torch_lru::Affine;
using torch_lru::TileCoords;
using torch_lru::TileGrid;

template <typename T>
T nan_value() {
  return T(std::numeric_limits<double>::quiet_NaN());
}

// One whole tile, as the kernel's 256 threads run it: phase 1 for every (segment, lane), phase 2
// for every lane through `statuses`, phase 3, and the tile's grad_lam partial sums.
template <typename Steps, typename Statuses, typename T = typename Steps::value_type>
void run_tile(const Steps& steps, const TileGrid& grid, int64_t id, Statuses& statuses, T* lam_partial,
              bool deterministic) {
  using Traits = torch_lru::ScanTileTraits<Steps>;
  constexpr int C = Traits::kChannels, S = Traits::kSegments, I = Traits::kItems;
  const auto tile = TileCoords::of(grid, id);
  std::vector<torch_lru::SegmentRegisters<T, I>> regs(S * C);
  std::vector<Affine<T>> maps(S * C, Affine<T>::identity());
  std::vector<T> carry(C), a_n(C, T(0)), shares(S * C, T(0));
  auto live = [&](int lane) { return tile.channel0 + lane < grid.N; };
  for (int lane = 0; lane < C; ++lane)
    if (live(lane) && Steps::kTimeInvariant) a_n[lane] = steps.channel_coefficient(tile.channel0 + lane);
  for (int seg = 0; seg < S; ++seg)
    for (int lane = 0; lane < C; ++lane) {
      if (!live(lane)) continue;
      maps[seg * C + lane] = torch_lru::load_segment<I>(
          steps, tile.batch, tile.channel0 + lane, tile.segment_begin(grid, seg, I), a_n[lane], regs[seg * C + lane]);
    }
  for (int lane = 0; lane < C; ++lane) {
    if (!live(lane)) continue;
    Affine<T> total = Affine<T>::identity();
    for (int j = 0; j < S; ++j) total = torch_lru::combine(total, maps[j * C + lane]);
    carry[lane] = torch_lru::resolve_carry<Traits::kLookbackWindow, T>(
        statuses, grid, tile, lane, total, steps.initial(tile.batch, tile.channel0 + lane), deterministic);
  }
  for (int seg = 0; seg < S; ++seg)
    for (int lane = 0; lane < C; ++lane) {
      if (!live(lane)) continue;
      const T state = torch_lru::segment_carry(
          carry[lane], [&](int j) { return maps[j * C + lane]; }, seg);
      shares[seg * C + lane] =
          torch_lru::scan_segment<I>(steps, tile.batch, tile.channel0 + lane, tile.segment_begin(grid, seg, I),
                                     a_n[lane], regs[seg * C + lane], state);
    }
  if (Steps::kReducesLam && lam_partial != nullptr)
    for (int lane = 0; lane < C; ++lane) {
      if (!live(lane)) continue;
      T sum(0);
      for (int j = 0; j < S; ++j) sum += shares[j * C + lane];
      lam_partial[(tile.batch * grid.chunks() + tile.chunk) * grid.N + tile.channel0 + lane] = sum;
    }
}

// Single-threaded statuses: every predecessor has finished; one that published both its
// aggregate and its end state is reported, at random, as having only its aggregate so far.
template <typename T>
struct EmulatedStatuses {
  std::vector<int> flag;
  std::vector<bool> has_aggregate;
  std::vector<Affine<T>> aggregates;
  std::vector<T> ends;
  std::mt19937& rng;

  EmulatedStatuses(int64_t slots, std::mt19937& rng_)
      : flag(slots, torch_lru::kTileEmpty),
        has_aggregate(slots, false),
        aggregates(slots, Affine<T>{nan_value<T>(), nan_value<T>()}),
        ends(slots, nan_value<T>()),
        rng(rng_) {}
  int status(int64_t slot) const {
    if (flag[slot] == torch_lru::kTilePrefix && has_aggregate[slot] && std::bernoulli_distribution(0.5)(rng))
      return torch_lru::kTileAggregate;
    return flag[slot];
  }
  void acquire() const {}
  Affine<T> aggregate(int64_t slot) const { return aggregates[slot]; }
  T end_state(int64_t slot) const { return ends[slot]; }
  void set_aggregate(int64_t slot, const Affine<T>& v) {
    aggregates[slot] = v;
    has_aggregate[slot] = true;
  }
  void set_end_state(int64_t slot, T v) { ends[slot] = v; }
  void publish(int64_t slot, int status) { flag[slot] = status; }
  void wait(int64_t slot, int) { throw std::logic_error("a tile met an unpublished predecessor in claim order"); }
};

template <typename Steps, typename T = typename Steps::value_type>
void emulate_tiled_scan(const Steps& steps, const TileGrid& grid, T* lam_partial, std::mt19937& rng,
                        bool deterministic = false) {
  EmulatedStatuses<T> statuses(grid.tiles() * grid.channels, rng);
  for (int64_t id = 0; id < grid.tiles(); ++id) run_tile(steps, grid, id, statuses, lam_partial, deterministic);
}

// Statuses shared by CPU threads: flags are std::atomic (relaxed loads, an acquire fence, release
// stores), values plain memory, NaN until written. Every store first sleeps a random moment.
template <typename T>
struct ThreadedStatuses {
  std::vector<std::atomic<int>> flag;
  std::vector<Affine<T>> aggregates;
  std::vector<T> ends;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);

  explicit ThreadedStatuses(int64_t slots)
      : flag(slots), aggregates(slots, Affine<T>{nan_value<T>(), nan_value<T>()}), ends(slots, nan_value<T>()) {
    for (auto& f : flag) f.store(torch_lru::kTileEmpty, std::memory_order_relaxed);
  }
  static void jitter() {
    thread_local std::mt19937 rng(std::hash<std::thread::id>()(std::this_thread::get_id()));
    const int r = static_cast<int>(rng() % 8);
    if (r == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
    if (r == 1) std::this_thread::yield();
  }
  int status(int64_t slot) const { return flag[slot].load(std::memory_order_relaxed); }
  void acquire() const { std::atomic_thread_fence(std::memory_order_acquire); }
  Affine<T> aggregate(int64_t slot) const { return aggregates[slot]; }
  T end_state(int64_t slot) const { return ends[slot]; }
  void set_aggregate(int64_t slot, const Affine<T>& v) {
    jitter();
    aggregates[slot] = v;
  }
  void set_end_state(int64_t slot, T v) {
    jitter();
    ends[slot] = v;
  }
  void publish(int64_t slot, int status) {
    jitter();
    flag[slot].store(status, std::memory_order_release);
  }
  void wait(int64_t, int) const {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("look-back stalled for 60 s");
    std::this_thread::yield();
  }
};

// Runs the tiled scan with `workers` threads claiming tile ids in order from one counter.
template <typename Steps, typename T = typename Steps::value_type>
void threaded_tiled_scan(const Steps& steps, const TileGrid& grid, T* lam_partial, int workers, bool deterministic) {
  ThreadedStatuses<T> statuses(grid.tiles() * grid.channels);
  std::atomic<int64_t> counter{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w)
    threads.emplace_back([&] {
      try {
        for (int64_t id = counter.fetch_add(1); id < grid.tiles() && !failed; id = counter.fetch_add(1))
          run_tile(steps, grid, id, statuses, lam_partial, deterministic);
      } catch (const std::exception&) {
        failed = true;
      }
    });
  for (auto& t : threads) t.join();
  ASSERT_FALSE(failed) << "a worker stopped: the look-back stalled";
}

struct TileCase {
  int64_t B, L, N;
  bool per_step, reverse, with_h0;
};

// Shapes around the tile: one step, L not a multiple of the tile, many chunks, channels past a
// warp, a single channel.
std::vector<TileCase> tile_cases() {
  std::vector<TileCase> out;
  for (auto [B, L, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {2, 300, 33}, {1, 2049, 5}, {3, 128, 64}})
    for (bool per_step : {false, true})
      for (bool reverse : {false, true}) out.push_back({B, L, N, per_step, reverse, B != 1 || reverse});
  return out;
}

// Inputs of one case, in dtype, with |lam| in [0.9, 0.99].
struct CaseInputs {
  torch::Tensor lam, x, g, h0;
  std::optional<torch::Tensor> h0_opt() const { return h0.defined() ? std::optional<torch::Tensor>(h0) : std::nullopt; }
};

CaseInputs make_case(const TileCase& c, torch::ScalarType dtype) {
  torch::manual_seed(c.L + c.N);
  auto real = torch::TensorOptions().dtype(torch::kDouble);
  auto lam_shape = c.per_step ? std::vector<int64_t>{c.B, c.L, c.N} : std::vector<int64_t>{c.N};
  auto r = 0.9 + 0.09 * torch::rand(lam_shape, real);
  CaseInputs in;
  in.lam = (at::isComplexType(dtype) ? torch::polar(r, 6.28 * torch::rand(lam_shape, real)) : r).to(dtype);
  in.x = torch::randn({c.B, c.L, c.N}, real).to(dtype);
  in.g = torch::randn({c.B, c.L, c.N}, real).to(dtype);
  if (c.with_h0) in.h0 = torch::randn({c.B, c.N}, real).to(dtype);
  return in;
}

struct TiledResult {
  torch::Tensor h, grad_lam, grad_x, grad_h0;
};

// Forward and backward through `scan` (the emulation or the threaded run), given the forward's h
// for the backward as the kernel is given it.
template <typename T, typename Scan>
TiledResult tiled(const TileCase& c, const CaseInputs& in, const torch::Tensor& forward_h, Scan scan) {
  auto nan = [](const torch::Tensor& t) { return torch::full_like(t, std::numeric_limits<double>::quiet_NaN()); };
  TiledResult out{nan(in.x), nan(in.lam), nan(in.x), c.with_h0 ? nan(in.h0) : torch::Tensor()};
  const T* h0_ptr = c.with_h0 ? in.h0.data_ptr<T>() : nullptr;
  T* gh0 = c.with_h0 ? out.grad_h0.data_ptr<T>() : nullptr;
  auto run = [&](auto per_step_tag) {
    constexpr bool kPerStep = decltype(per_step_tag)::value;
    using Forward = torch_lru::ForwardSteps<T, kPerStep>;
    using Backward = torch_lru::BackwardSteps<T, kPerStep>;
    const TileGrid fgrid{c.B, c.L, c.N, torch_lru::ScanTileTraits<Forward>::kChannels,
                         torch_lru::ScanTileTraits<Forward>::kSteps};
    const TileGrid bgrid{c.B, c.L, c.N, torch_lru::ScanTileTraits<Backward>::kChannels,
                         torch_lru::ScanTileTraits<Backward>::kSteps};
    scan(Forward{in.lam.data_ptr<T>(), in.x.data_ptr<T>(), h0_ptr, out.h.data_ptr<T>(), c.L, c.N, c.reverse}, fgrid,
         static_cast<T*>(nullptr));
    auto partial = torch::full({c.B, bgrid.chunks(), c.N}, std::numeric_limits<double>::quiet_NaN(), in.x.options());
    scan(Backward{in.g.data_ptr<T>(), in.lam.data_ptr<T>(), forward_h.data_ptr<T>(), h0_ptr, out.grad_x.data_ptr<T>(),
                  kPerStep ? out.grad_lam.data_ptr<T>() : nullptr, gh0, c.L, c.N, c.reverse, true},
         bgrid, kPerStep ? static_cast<T*>(nullptr) : partial.data_ptr<T>());
    if (!kPerStep) out.grad_lam = partial.sum(at::IntArrayRef{0, 1});
  };
  c.per_step ? run(std::true_type{}) : run(std::false_type{});
  return out;
}

void expect_close(const TiledResult& got, const TiledResult& want, bool with_h0, double tol) {
  EXPECT_TRUE(torch::allclose(got.h, want.h, tol, tol)) << (got.h - want.h).abs().max();
  EXPECT_TRUE(torch::allclose(got.grad_x, want.grad_x, tol, tol)) << (got.grad_x - want.grad_x).abs().max();
  EXPECT_TRUE(torch::allclose(got.grad_lam, want.grad_lam, tol, tol)) << (got.grad_lam - want.grad_lam).abs().max();
  if (with_h0) EXPECT_TRUE(torch::allclose(got.grad_h0, want.grad_h0, tol, tol));
}

template <typename T>
void check_against_cpu_op(torch::ScalarType dtype, double tol, bool deterministic) {
  std::mt19937 rng(1234);
  for (const auto& c : tile_cases()) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " L=" << c.L << " N=" << c.N << " per_step=" << c.per_step
                                    << " reverse=" << c.reverse << " h0=" << c.with_h0 << " dtype=" << dtype);
    const auto in = make_case(c, dtype);
    auto want_h = torch_lru::scan(in.lam, in.x, in.h0_opt(), c.reverse);
    auto [glam, gx, gh0] =
        torch_lru::scan_backward(in.g, in.lam, want_h, in.h0_opt(), c.reverse, {true, true, c.with_h0});
    const auto got = tiled<T>(c, in, want_h, [&](const auto& steps, const TileGrid& grid, T* partial) {
      emulate_tiled_scan(steps, grid, partial, rng, deterministic);
    });
    expect_close(got, {want_h, glam, gx, gh0}, c.with_h0, tol);
  }
}

TEST(ScanTiles, GridCoversEveryStepAndChannelOnce) {
  for (auto [B, L, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {2, 300, 33}, {3, 4096, 64}}) {
    const TileGrid grid{B, L, N, 32, 128};
    std::vector<int> seen(B * L * N, 0);
    for (int64_t id = 0; id < grid.tiles(); ++id) {
      const auto t = TileCoords::of(grid, id);
      if (t.chunk > 0) EXPECT_EQ(TileCoords::of(grid, t.predecessor(grid)).chunk, t.chunk - 1);
      for (int seg = 0; seg < 8; ++seg)
        for (int64_t s = t.segment_begin(grid, seg, 16); s < t.segment_begin(grid, seg, 16) + 16 && s < L; ++s)
          for (int64_t n = t.channel0; n < std::min(N, t.channel0 + 32); ++n) ++seen[(t.batch * L + s) * N + n];
    }
    for (int v : seen) ASSERT_EQ(v, 1);
  }
}

TEST(ScanTiles, EmulatedKernelMatchesCpuOpFloat64) { check_against_cpu_op<double>(torch::kDouble, 1e-10, false); }
TEST(ScanTiles, EmulatedKernelMatchesCpuOpComplex128) {
  check_against_cpu_op<c10::complex<double>>(torch::kComplexDouble, 1e-10, false);
}
TEST(ScanTiles, EmulatedKernelMatchesCpuOpComplex64) {
  check_against_cpu_op<c10::complex<float>>(torch::kComplexFloat, 2e-4, false);
}
TEST(ScanTiles, EmulatedKernelMatchesCpuOpFloat32) { check_against_cpu_op<float>(torch::kFloat, 2e-4, false); }
TEST(ScanTiles, EmulatedDeterministicModeMatchesCpuOp) {
  check_against_cpu_op<c10::complex<float>>(torch::kComplexFloat, 2e-4, true);
}

// ---- the look-back protocol under real concurrency ----

// The scan and its gradients written from the equations, in double precision, as loops:
// h_t = lam_t h_{t-1} + x_t (h_{-1} = h0) along the direction of travel; d_t = g_t +
// conj(lam_{t+1}) d_{t+1}; grad_x = d, grad_lam_t = conj(h_{t-1}) d_t (summed over b and t when lam
// is per channel), grad_h0 = conj(lam_0) d_0.
TiledResult loop_reference(const TileCase& c, const CaseInputs& in) {
  const auto wide = in.x.is_complex() ? torch::kComplexDouble : torch::kDouble;
  auto lam = in.lam.to(wide), x = in.x.to(wide), g = in.g.to(wide);
  auto h0 = c.with_h0 ? in.h0.to(wide) : torch::zeros({c.B, c.N}, x.options());
  auto h = torch::zeros_like(x), gx = torch::zeros_like(x), glam = torch::zeros_like(c.per_step ? x : lam);
  auto gh0 = torch::zeros_like(h0);
  auto lam_at = [&](int64_t b, int64_t t) { return c.per_step ? lam[b][t] : lam; };
  for (int64_t b = 0; b < c.B; ++b) {
    std::vector<int64_t> order(c.L);
    for (int64_t k = 0; k < c.L; ++k) order[k] = c.reverse ? c.L - 1 - k : k;
    auto state = h0[b].clone();
    for (int64_t k = 0; k < c.L; ++k) {
      state = lam_at(b, order[k]) * state + x[b][order[k]];
      h[b][order[k]] = state;
    }
    auto d = torch::zeros_like(state);
    for (int64_t k = c.L - 1; k >= 0; --k) {
      const int64_t t = order[k];
      d = g[b][t] + (k + 1 < c.L ? torch::conj(lam_at(b, order[k + 1])) * d : torch::zeros_like(d));
      gx[b][t] = d;
      const auto before = k > 0 ? h[b][order[k - 1]] : h0[b];
      if (c.per_step) {
        glam[b][t] = torch::conj(before) * d;
      } else {
        glam += torch::conj(before) * d;
      }
    }
    gh0[b] = torch::conj(lam_at(b, order[0])) * d;
  }
  return {h, glam, gx, gh0};
}

template <typename T>
void stress(torch::ScalarType dtype, double tol) {
  // Many chunks per chain (a chain of 33 tiles; 8 chains of 5), odd L and N, both modes.
  const std::vector<TileCase> cases{{1, 4097, 3, false, false, true},
                                    {1, 4097, 3, true, true, true},
                                    {2, 601, 37, false, true, false},
                                    {2, 601, 37, true, false, true},
                                    {4, 517, 64, false, false, true}};
  for (bool deterministic : {false, true})
    for (const auto& c : cases) {
      SCOPED_TRACE(testing::Message() << "B=" << c.B << " L=" << c.L << " N=" << c.N << " per_step=" << c.per_step
                                      << " reverse=" << c.reverse << " deterministic=" << deterministic);
      const auto in = make_case(c, dtype);
      const auto want = loop_reference(c, in);
      const auto forward_h = want.h.to(dtype);
      const auto got = tiled<T>(c, in, forward_h, [&](const auto& steps, const TileGrid& grid, T* partial) {
        threaded_tiled_scan(steps, grid, partial, 3, deterministic);
      });
      const auto wide = want.h.scalar_type();
      expect_close({got.h.to(wide), got.grad_lam.to(wide), got.grad_x.to(wide),
                    c.with_h0 ? got.grad_h0.to(wide) : torch::Tensor()},
                   want, c.with_h0, tol);
    }
}

TEST(ScanLookback, ThreadsClaimingTilesMatchTheEquationsComplex64) {
  stress<c10::complex<float>>(torch::kComplexFloat, 2e-4);
}
TEST(ScanLookback, ThreadsClaimingTilesMatchTheEquationsFloat32) { stress<float>(torch::kFloat, 2e-4); }
TEST(ScanLookback, ThreadsClaimingTilesMatchTheEquationsComplex128) {
  stress<c10::complex<double>>(torch::kComplexDouble, 1e-10);
}

}  // namespace

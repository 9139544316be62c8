// The CUDA kernels' tiled scan, run on the CPU: the shared tile code (torch_lru/scan_tiles.h)
// driven as cuda/scan_cuda.cu drives it, tile by tile in claim order, with each finished
// predecessor met on the look-back as it could be met on a GPU (end state published, or only its
// aggregate so far), chosen at random. Results must match the CPU op to rounding.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <random>
#include <vector>

#include "torch_lru/scan.h"
#include "torch_lru/scan_tiles.h"

namespace {

using torch_lru::Affine;
using torch_lru::TileCoords;
using torch_lru::TileGrid;

template <typename T, typename Steps>
void emulate_tiled_scan(const Steps& steps, const TileGrid& grid, T* lam_partial, std::mt19937& rng) {
  using Traits = torch_lru::ScanTileTraits<T>;
  constexpr int C = Traits::kChannels, S = Traits::kSegments, I = Traits::kItems;
  const int64_t slots = grid.tiles() * C;
  std::vector<int> flag(slots, torch_lru::kTileEmpty);
  std::vector<Affine<T>> aggregate(slots);
  std::vector<T> end_state(slots);
  std::bernoulli_distribution only_aggregate(0.5);
  for (int64_t id = 0; id < grid.tiles(); ++id) {
    const auto tile = TileCoords::of(grid, id);
    struct Segment {
      T a[I], x[I];  // a thread's registers
    };
    std::vector<Segment> segs(S * C);
    std::vector<Affine<T>> maps(S * C, Affine<T>::identity());
    std::vector<T> carry(C), shares(S * C, T(0));
    auto live = [&](int lane) { return tile.channel0 + lane < grid.N; };
    for (int seg = 0; seg < S; ++seg)
      for (int lane = 0; lane < C; ++lane) {
        if (!live(lane)) continue;
        auto& r = segs[seg * C + lane];
        maps[seg * C + lane] = torch_lru::load_segment<I>(steps, tile.batch, tile.channel0 + lane,
                                                          tile.segment_begin(grid, seg, I), r.a, r.x);
      }
    for (int lane = 0; lane < C; ++lane) {
      if (!live(lane)) continue;
      Affine<T> total = Affine<T>::identity();
      for (int j = 0; j < S; ++j) total = torch_lru::combine(total, maps[j * C + lane]);
      const int64_t slot = id * C + lane;
      T carry_in;
      if (tile.chunk == 0) {
        carry_in = steps.initial(tile.batch, tile.channel0 + lane);
      } else {
        aggregate[slot] = total;
        flag[slot] = torch_lru::kTileAggregate;
        Affine<T> acc = Affine<T>::identity();
        for (int64_t j = tile.predecessor(grid);; j -= grid.chains()) {
          const int64_t pred = j * C + lane;
          int st = flag[pred];
          ASSERT_NE(st, torch_lru::kTileEmpty) << "tile " << id << " met an unpublished predecessor " << j;
          // A predecessor past chunk 0 published its aggregate before its end state.
          if (st == torch_lru::kTilePrefix && TileCoords::of(grid, j).chunk > 0 && only_aggregate(rng))
            st = torch_lru::kTileAggregate;
          if (torch_lru::lookback_fold(st, aggregate[pred], end_state[pred], acc, carry_in)) break;
        }
      }
      if (tile.chunk + 1 < grid.chunks()) {
        end_state[slot] = total.apply(carry_in);
        flag[slot] = torch_lru::kTilePrefix;
      }
      carry[lane] = carry_in;
    }
    for (int seg = 0; seg < S; ++seg)
      for (int lane = 0; lane < C; ++lane) {
        if (!live(lane)) continue;
        const T state = torch_lru::segment_carry(
            carry[lane], [&](int j) { return maps[j * C + lane]; }, seg);
        const auto& r = segs[seg * C + lane];
        shares[seg * C + lane] = torch_lru::scan_segment<I>(steps, tile.batch, tile.channel0 + lane,
                                                            tile.segment_begin(grid, seg, I), r.a, r.x, state);
      }
    if (Steps::kReducesLam && lam_partial != nullptr)
      for (int lane = 0; lane < C; ++lane) {
        if (!live(lane)) continue;
        T sum(0);
        for (int j = 0; j < S; ++j) sum += shares[j * C + lane];
        lam_partial[(tile.batch * grid.chunks() + tile.chunk) * grid.N + tile.channel0 + lane] = sum;
      }
  }
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

template <typename T>
void check_against_cpu_op(torch::ScalarType dtype, double tol) {
  std::mt19937 rng(1234);
  for (const auto& c : tile_cases()) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " L=" << c.L << " N=" << c.N << " per_step=" << c.per_step
                                    << " reverse=" << c.reverse << " h0=" << c.with_h0 << " dtype=" << dtype);
    torch::manual_seed(c.L + c.N);
    auto real = torch::TensorOptions().dtype(torch::kDouble);
    auto lam_shape = c.per_step ? std::vector<int64_t>{c.B, c.L, c.N} : std::vector<int64_t>{c.N};
    auto r = 0.9 + 0.09 * torch::rand(lam_shape, real);
    auto lam = (at::isComplexType(dtype) ? torch::polar(r, 6.28 * torch::rand(lam_shape, real)) : r).to(dtype);
    auto x = torch::randn({c.B, c.L, c.N}, real).to(dtype);
    auto g = torch::randn({c.B, c.L, c.N}, real).to(dtype);
    auto h0 = c.with_h0 ? torch::randn({c.B, c.N}, real).to(dtype) : torch::Tensor();
    const std::optional<torch::Tensor> h0_opt = c.with_h0 ? std::optional<torch::Tensor>(h0) : std::nullopt;
    const TileGrid grid{c.B, c.L, c.N, torch_lru::ScanTileTraits<T>::kChannels, torch_lru::ScanTileTraits<T>::kSteps};
    const T* h0_ptr = c.with_h0 ? h0.data_ptr<T>() : nullptr;

    auto want_h = torch_lru::scan(lam, x, h0_opt, c.reverse);
    auto h = torch::full_like(x, std::numeric_limits<double>::quiet_NaN());  // unwritten entries show
    auto [want_glam, want_gx, want_gh0] =
        torch_lru::scan_backward(g, lam, want_h, h0_opt, c.reverse, {true, true, c.with_h0});
    auto gx = torch::full_like(x, std::numeric_limits<double>::quiet_NaN());
    auto glam = torch::full_like(lam, std::numeric_limits<double>::quiet_NaN());
    auto gh0 = c.with_h0 ? torch::full_like(h0, std::numeric_limits<double>::quiet_NaN()) : torch::Tensor();
    auto partial = torch::full({c.B, grid.chunks(), c.N}, std::numeric_limits<double>::quiet_NaN(), x.options());
    if (c.per_step) {
      emulate_tiled_scan<T>(torch_lru::ForwardSteps<T, true>{lam.data_ptr<T>(), x.data_ptr<T>(), h0_ptr,
                                                             h.data_ptr<T>(), c.L, c.N, c.reverse},
                            grid, nullptr, rng);
      emulate_tiled_scan<T>(
          torch_lru::BackwardSteps<T, true>{g.data_ptr<T>(), lam.data_ptr<T>(), want_h.data_ptr<T>(), h0_ptr,
                                            gx.data_ptr<T>(), glam.data_ptr<T>(),
                                            c.with_h0 ? gh0.data_ptr<T>() : nullptr, c.L, c.N, c.reverse, true},
          grid, nullptr, rng);
    } else {
      emulate_tiled_scan<T>(torch_lru::ForwardSteps<T, false>{lam.data_ptr<T>(), x.data_ptr<T>(), h0_ptr,
                                                              h.data_ptr<T>(), c.L, c.N, c.reverse},
                            grid, nullptr, rng);
      emulate_tiled_scan<T>(
          torch_lru::BackwardSteps<T, false>{g.data_ptr<T>(), lam.data_ptr<T>(), want_h.data_ptr<T>(), h0_ptr,
                                             gx.data_ptr<T>(), nullptr, c.with_h0 ? gh0.data_ptr<T>() : nullptr, c.L,
                                             c.N, c.reverse, true},
          grid, partial.data_ptr<T>(), rng);
      glam = partial.sum(at::IntArrayRef{0, 1});
    }
    EXPECT_TRUE(torch::allclose(h, want_h, tol, tol)) << (h - want_h).abs().max();
    EXPECT_TRUE(torch::allclose(gx, want_gx, tol, tol)) << (gx - want_gx).abs().max();
    EXPECT_TRUE(torch::allclose(glam, want_glam, tol, tol)) << (glam - want_glam).abs().max();
    if (c.with_h0) EXPECT_TRUE(torch::allclose(gh0, want_gh0, tol, tol)) << (gh0 - want_gh0).abs().max();
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

TEST(ScanTiles, EmulatedKernelMatchesCpuOpFloat64) { check_against_cpu_op<double>(torch::kDouble, 1e-10); }
TEST(ScanTiles, EmulatedKernelMatchesCpuOpComplex128) {
  check_against_cpu_op<c10::complex<double>>(torch::kComplexDouble, 1e-10);
}
// complex64 and float32 tiles hold 16 steps per thread (8 for the wide types above).
TEST(ScanTiles, EmulatedKernelMatchesCpuOpComplex64) {
  check_against_cpu_op<c10::complex<float>>(torch::kComplexFloat, 2e-4);
}
TEST(ScanTiles, EmulatedKernelMatchesCpuOpFloat32) { check_against_cpu_op<float>(torch::kFloat, 2e-4); }

}  // namespace

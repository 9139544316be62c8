// CUDA kernels of the scan ops: one single-pass tiled scan with decoupled look-back, parallel over
// batch rows, channels and L (a single long sequence fills the GPU), for the forward and the
// backward alike. The per-thread math, the tile geometry and the two problems are the shared
// header's (csrc/ops/scan_tiles.h), tested on the CPU; this file holds the thread mapping, shared
// memory, the status flags and the launchers.
//
// Memory traffic: x is read once into registers and h written once; the tile statuses add about
// (4 + 3 * sizeof(T)) bytes per 128-step tile and channel (under 2% of the data).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <cub/thread/thread_load.cuh>
#include <cub/thread/thread_store.cuh>
#include <cuda/atomic>
#include <limits>
#include <type_traits>

#include "ops/scan_checks.h"
#include "ops/scan_tiles.h"

namespace torch_lru {
namespace {

// Where tiles publish, per (tile, lane): the status flag, the aggregate map and the end state;
// and the counter that hands out tile ids in order.
template <typename T>
struct TileStatusArrays {
  int* flag;
  Affine<T>* aggregate;
  T* end_state;
  unsigned int* counter;
};

using DeviceFlag = cuda::atomic_ref<int, cuda::thread_scope_device>;

__device__ inline uint64_t global_time_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The look-back's memory operations (the Statuses of csrc/ops/scan_tiles.h) on the GPU. Flags
// are read relaxed, a window of them at once, then one acquire fence orders the value loads after
// them; values are written by other blocks, so they are read from L2 (cache-global), never from a
// stale L1 line. A tile that waits longer than `timeout_ns` for a predecessor (0: for ever) says
// which and stops the kernel, rather than spin until the process is killed.
template <typename T>
struct DeviceStatuses {
  TileStatusArrays<T> arrays;
  uint64_t timeout_ns;
  int64_t tile;
  uint64_t since = 0;

  __device__ int status(int64_t slot) const { return DeviceFlag(arrays.flag[slot]).load(cuda::memory_order_relaxed); }
  __device__ void acquire() const { cuda::atomic_thread_fence(cuda::memory_order_acquire, cuda::thread_scope_device); }
  __device__ Affine<T> aggregate(int64_t slot) const { return cub::ThreadLoad<cub::LOAD_CG>(&arrays.aggregate[slot]); }
  __device__ T end_state(int64_t slot) const { return cub::ThreadLoad<cub::LOAD_CG>(&arrays.end_state[slot]); }
  __device__ void set_aggregate(int64_t slot, const Affine<T>& v) const { arrays.aggregate[slot] = v; }
  __device__ void set_end_state(int64_t slot, T v) const { arrays.end_state[slot] = v; }
  __device__ void publish(int64_t slot, int status) const {
    DeviceFlag(arrays.flag[slot]).store(status, cuda::memory_order_release);
  }
  __device__ void wait(int64_t slot, int round) {
    const uint64_t now = global_time_ns();
    if (round == 0) {
      since = now;
    } else if (timeout_ns != 0 && now - since > timeout_ns) {
      printf(
          "torch_lru::scan: tile %lld waited %llu ms for the tile status at slot %lld, which never came; stopping "
          "the kernel (TORCH_LRU_SCAN_TIMEOUT_MS sets the limit)\n",
          static_cast<long long>(tile), static_cast<unsigned long long>((now - since) / 1000000),
          static_cast<long long>(slot));
      __trap();
    }
    __nanosleep(round < 5 ? 32u << round : 1024u);  // back off: 32 ns doubling to 1 us
  }
};

template <typename Steps, typename Traits = ScanTileTraits<Steps>, typename T = typename Steps::value_type>
__global__ void __launch_bounds__(Traits::kThreads)
    tiled_scan_kernel(const Steps steps, const TileGrid grid, const TileStatusArrays<T> status, T* lam_partial,
                      const bool deterministic, const uint64_t timeout_ns) {
  constexpr int C = Traits::kChannels, S = Traits::kSegments, I = Traits::kItems;
  // Raw storage: c10::complex has constructors, which __shared__ variables may not.
  __shared__ unsigned int tile_id;
  __shared__ alignas(Affine<T>) unsigned char maps_bytes[S * C * sizeof(Affine<T>)];
  __shared__ alignas(T) unsigned char carry_bytes[C * sizeof(T)];
  __shared__ alignas(T) unsigned char share_bytes[Steps::kReducesLam ? S * C * sizeof(T) : 1];
  auto* maps = reinterpret_cast<Affine<T>*>(maps_bytes);  // [segment][lane]
  auto* carry = reinterpret_cast<T*>(carry_bytes);
  auto* shares = reinterpret_cast<T*>(share_bytes);

  const int lane = threadIdx.x, seg = threadIdx.y;
  if (lane == 0 && seg == 0) tile_id = atomicAdd(status.counter, 1u);  // claim order = id order
  __syncthreads();
  const TileCoords tile = TileCoords::of(grid, tile_id);
  const int64_t b = tile.batch, n = tile.channel0 + lane;
  const bool live = n < grid.N;
  const int64_t s0 = tile.segment_begin(grid, seg, I);
  // A time-invariant coefficient, read once for all the thread's steps.
  const T a_n = Steps::kTimeInvariant && live ? steps.channel_coefficient(n) : T(0);

  SegmentRegisters<T, I> r;
  maps[seg * C + lane] = live ? load_segment<I>(steps, b, n, s0, a_n, r) : Affine<T>::identity();
  __syncthreads();

  if (seg == 0 && live) {  // one warp resolves the tile's carry-in, a lane per channel
    Affine<T> total = Affine<T>::identity();
    for (int j = 0; j < S; ++j) total = combine(total, maps[j * C + lane]);
    DeviceStatuses<T> statuses{status, timeout_ns, tile.id};
    carry[lane] = resolve_carry<Traits::kLookbackWindow, T>(statuses, grid, tile, lane, total, steps.initial(b, n),
                                                            deterministic);
  }
  __syncthreads();

  T share(0);
  if (live) {
    const T state = segment_carry(
        carry[lane], [&](int j) { return maps[j * C + lane]; }, seg);
    share = scan_segment<I>(steps, b, n, s0, a_n, r, state);
  }
  if constexpr (Steps::kReducesLam) {
    shares[seg * C + lane] = share;
    __syncthreads();
    if (seg == 0 && live && lam_partial != nullptr) {  // fixed order: the reduction is deterministic
      T sum(0);
      for (int j = 0; j < S; ++j) sum += shares[j * C + lane];
      lam_partial[(b * grid.chunks() + tile.chunk) * grid.N + n] = sum;
    }
  }
}

// How long a tile may wait for a predecessor before the kernel stops with a message:
// TORCH_LRU_SCAN_TIMEOUT_MS (default 60 s; 0: no limit). Tiles are claimed in order and every
// predecessor is already running, so a wait that long means a fault, not load.
uint64_t lookback_timeout_ns() {
  static const uint64_t ns = [] {
    const char* text = std::getenv("TORCH_LRU_SCAN_TIMEOUT_MS");
    char* end = nullptr;
    const long long ms = text != nullptr && *text != '\0' ? std::strtoll(text, &end, 10) : 60000;
    TORCH_CHECK(text == nullptr || *text == '\0' || (*end == '\0' && ms >= 0),
                "TORCH_LRU_SCAN_TIMEOUT_MS must be a number of milliseconds >= 0 (0: no limit), got '", text, "'");
    return static_cast<uint64_t>(ms) * 1000000ull;
  }();
  return ns;
}

// The tiles of a problem, checked against the launch limits.
template <typename Steps>
TileGrid tile_grid(int64_t B, int64_t L, int64_t N) {
  using Traits = ScanTileTraits<Steps>;
  const TileGrid grid{B, L, N, Traits::kChannels, Traits::kSteps};
  TORCH_CHECK(grid.tiles() <= std::numeric_limits<int>::max(), "torch_lru::scan: (B, L, N) = (", B, ", ", L, ", ", N,
              ") needs ", grid.tiles(), " tiles, more than one launch can hold");
  // In-segment offsets (up to kItems + 1 steps of N channels) are 32-bit.
  TORCH_CHECK(N <= std::numeric_limits<int>::max() / (Traits::kItems + 1), "torch_lru::scan: N = ", N,
              " channels is more than the CUDA kernel's 32-bit in-tile offsets hold");
  return grid;
}

// Launches the tiled scan of `steps` over `grid` (tile_grid<Steps>) on the current stream;
// `lam_partial` receives the (B, chunks, N) partial sums of a reduced grad_lam when Steps has one.
template <typename Steps, typename T = typename Steps::value_type>
void launch_tiled_scan(const Steps& steps, const TileGrid& grid, const at::Tensor& like, T* lam_partial) {
  using Traits = ScanTileTraits<Steps>;
  const int64_t slots = grid.tiles() * Traits::kChannels;
  // Flags and the counter must start at zero; aggregates and end states are read only after their
  // flag is set.
  auto flags = at::zeros({slots + 1}, like.options().dtype(at::kInt));
  auto values =
      at::empty({slots * static_cast<int64_t>(sizeof(Affine<T>) + sizeof(T))}, like.options().dtype(at::kByte));
  auto* bytes = values.mutable_data_ptr<uint8_t>();
  const TileStatusArrays<T> status{flags.mutable_data_ptr<int>(), reinterpret_cast<Affine<T>*>(bytes),
                                   reinterpret_cast<T*>(bytes + slots * sizeof(Affine<T>)),
                                   reinterpret_cast<unsigned int*>(flags.mutable_data_ptr<int>() + slots)};
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const dim3 block(Traits::kChannels, Traits::kSegments);
  tiled_scan_kernel<Steps><<<static_cast<unsigned int>(grid.tiles()), block, 0, at::cuda::getCurrentCUDAStream()>>>(
      steps, grid, status, lam_partial, deterministic, lookback_timeout_ns());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void run_forward(const ForwardOperands& f, bool reverse, at::Tensor& h) {
  const c10::cuda::CUDAGuard device_guard(h.device());
  if (h.numel() == 0) return;
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(f.x.scalar_type(), "torch_lru::scan", [&] {
    using T = scalar_t;
    const T* h0_ptr = f.h0.defined() ? f.h0.const_data_ptr<T>() : nullptr;
    auto run = [&](auto per_step) {  // std::true_type or std::false_type
      using Steps = ForwardSteps<T, decltype(per_step)::value>;
      const Steps steps{
          f.lam.const_data_ptr<T>(), f.x.const_data_ptr<T>(), h0_ptr, h.mutable_data_ptr<T>(), f.L, f.N, reverse};
      launch_tiled_scan(steps, tile_grid<Steps>(f.B, f.L, f.N), h, static_cast<T*>(nullptr));
    };
    f.per_step ? run(std::true_type{}) : run(std::false_type{});
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cuda(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                  const at::Tensor& h,
                                                                  const std::optional<at::Tensor>& h0, bool reverse,
                                                                  std::array<bool, 3> mask) {
  auto b = prepare_backward(grad_h, lam, h, h0, mask);
  auto& out = b.outputs;
  if (out.done) return out.result();
  const c10::cuda::CUDAGuard device_guard(h.device());
  at::Tensor lam_partial;  // (B, chunks, N) for a time-invariant grad_lam, summed below (no atomics)
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    using T = scalar_t;
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<T>() : nullptr; };
    auto run = [&](auto per_step_tag) {  // std::true_type or std::false_type
      constexpr bool kPerStep = decltype(per_step_tag)::value;
      using Steps = BackwardSteps<T, kPerStep>;
      const auto grid = tile_grid<Steps>(b.B, b.L, b.N);
      if (!kPerStep && mask[0]) lam_partial = at::empty({b.B, grid.chunks(), b.N}, h.options());
      const Steps steps{b.grad_h.const_data_ptr<T>(),
                        b.lam.const_data_ptr<T>(),
                        b.h.const_data_ptr<T>(),
                        b.h0.defined() ? b.h0.const_data_ptr<T>() : nullptr,
                        out.grad_x.mutable_data_ptr<T>(),
                        kPerStep ? ptr(out.grad_lam) : nullptr,
                        ptr(out.grad_h0),
                        b.L,
                        b.N,
                        reverse,
                        mask[0]};
      launch_tiled_scan(steps, grid, h, ptr(lam_partial));
    };
    b.per_step ? run(std::true_type{}) : run(std::false_type{});
  });
  if (lam_partial.defined()) at::sum_out(out.grad_lam, lam_partial, at::IntArrayRef{0, 1});
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CUDA, m) {
  m.impl("scan", &scan_with<run_forward>);
  m.impl("scan.out", &scan_out_with<run_forward>);
  m.impl("scan_backward", &scan_backward_cuda);
}

}  // namespace torch_lru

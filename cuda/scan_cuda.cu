// CUDA kernels of the scan ops: one single-pass tiled scan with decoupled look-back, parallel over
// batch rows, channels and L (a single long sequence fills the GPU), for the forward and the
// backward alike. The per-thread math, the tile geometry and the two problems are the shared
// header's (torch_lru/scan_tiles.h), tested on the CPU; this file holds the thread mapping, shared
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

#include <cub/thread/thread_load.cuh>
#include <cub/thread/thread_store.cuh>
#include <cuda/atomic>
#include <limits>
#include <type_traits>

#include "ops/scan_checks.h"
#include "torch_lru/scan_tiles.h"

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

// Statuses are written by other blocks: read them from L2 (cache-global), never a stale L1 line.
template <typename T>
__device__ inline T load_published(T* p) {
  return cub::ThreadLoad<cub::LOAD_CG>(p);
}

// Waits for predecessor `slot` to publish; in deterministic mode for its end state only, so that
// every carry is formed the same way in every run (at the cost of serialising each chain).
__device__ inline int wait_for(int* flag, bool deterministic) {
  DeviceFlag f(*flag);
  int status = f.load(cuda::memory_order_acquire);
  while (status == kTileEmpty || (deterministic && status != kTilePrefix)) {
    __nanosleep(64);
    status = f.load(cuda::memory_order_acquire);
  }
  return status;
}

template <typename Traits, typename T, typename Steps>
__global__ void __launch_bounds__(Traits::kThreads)
    tiled_scan_kernel(const Steps steps, const TileGrid grid, const TileStatusArrays<T> status, T* lam_partial,
                      const bool deterministic) {
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

  T a[I], x[I];
  maps[seg * C + lane] = live ? load_segment<I>(steps, b, n, s0, a, x) : Affine<T>::identity();
  __syncthreads();

  if (seg == 0 && live) {  // one warp resolves the tile's carry-in, a lane per channel
    Affine<T> total = Affine<T>::identity();
    for (int j = 0; j < S; ++j) total = combine(total, maps[j * C + lane]);
    const int64_t slot = tile.id * C + lane;
    T carry_in;
    if (tile.chunk == 0) {
      carry_in = steps.initial(b, n);
    } else {
      if (!deterministic) {
        status.aggregate[slot] = total;
        DeviceFlag(status.flag[slot]).store(kTileAggregate, cuda::memory_order_release);
      }
      Affine<T> acc = Affine<T>::identity();
      for (int64_t j = tile.predecessor(grid);; j -= grid.chains()) {
        const int64_t pred = j * C + lane;
        const int st = wait_for(&status.flag[pred], deterministic);
        const bool prefix = st == kTilePrefix;
        const Affine<T> agg = prefix ? Affine<T>::identity() : load_published(&status.aggregate[pred]);
        const T end = prefix ? load_published(&status.end_state[pred]) : T(0);
        if (lookback_fold(st, agg, end, acc, carry_in)) break;
      }
    }
    if (tile.chunk + 1 < grid.chunks()) {
      status.end_state[slot] = total.apply(carry_in);
      DeviceFlag(status.flag[slot]).store(kTilePrefix, cuda::memory_order_release);
    }
    carry[lane] = carry_in;
  }
  __syncthreads();

  T share(0);
  if (live) {
    const T state = segment_carry(
        carry[lane], [&](int j) { return maps[j * C + lane]; }, seg);
    share = scan_segment<I>(steps, b, n, s0, a, x, state);
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

// The tiles of a problem for dtype T, checked against the launch limits.
template <typename T>
TileGrid tile_grid(int64_t B, int64_t L, int64_t N) {
  using Traits = ScanTileTraits<T>;
  const TileGrid grid{B, L, N, Traits::kChannels, Traits::kSteps};
  TORCH_CHECK(grid.tiles() <= std::numeric_limits<int>::max(), "torch_lru::scan: (B, L, N) = (", B, ", ", L, ", ", N,
              ") needs ", grid.tiles(), " tiles, more than one launch can hold");
  return grid;
}

// Launches the tiled scan of `steps` over `grid` on the current stream; `lam_partial` receives the
// (B, chunks, N) partial sums of a reduced grad_lam when Steps has one.
template <typename T, typename Steps>
void launch_tiled_scan(const Steps& steps, const TileGrid& grid, const at::Tensor& like, T* lam_partial) {
  using Traits = ScanTileTraits<T>;
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
  tiled_scan_kernel<Traits, T, Steps>
      <<<static_cast<unsigned int>(grid.tiles()), block, 0, at::cuda::getCurrentCUDAStream()>>>(
          steps, grid, status, lam_partial, deterministic);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void run_forward(const ForwardOperands& f, bool reverse, at::Tensor& h) {
  const c10::cuda::CUDAGuard device_guard(h.device());
  if (h.numel() == 0) return;
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(f.x.scalar_type(), "torch_lru::scan", [&] {
    using T = scalar_t;
    const T* h0_ptr = f.h0.defined() ? f.h0.const_data_ptr<T>() : nullptr;
    const auto grid = tile_grid<T>(f.B, f.L, f.N);
    auto run = [&](auto per_step) {  // std::true_type or std::false_type
      const ForwardSteps<T, decltype(per_step)::value> steps{
          f.lam.const_data_ptr<T>(), f.x.const_data_ptr<T>(), h0_ptr, h.mutable_data_ptr<T>(), f.L, f.N, reverse};
      launch_tiled_scan<T>(steps, grid, h, nullptr);
    };
    f.per_step ? run(std::true_type{}) : run(std::false_type{});
  });
}

at::Tensor& scan_out_cuda(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse,
                          at::Tensor& out) {
  run_forward(prepare_forward("torch_lru::scan.out", lam, x, h0, &out), reverse, out);
  return out;
}

at::Tensor scan_cuda(const at::Tensor& lam, const at::Tensor& x, const std::optional<at::Tensor>& h0, bool reverse) {
  const auto f = prepare_forward("torch_lru::scan", lam, x, h0);
  auto h = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  run_forward(f, reverse, h);
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_backward_cuda(const at::Tensor& grad_h, const at::Tensor& lam,
                                                                  const at::Tensor& h,
                                                                  const std::optional<at::Tensor>& h0, bool reverse,
                                                                  std::array<bool, 3> mask) {
  check_scan_backward_inputs(grad_h, lam, h, h0);
  const c10::cuda::CUDAGuard device_guard(h.device());
  auto out = make_scan_backward_outputs(lam, h, h0, mask);
  if (out.done) return out.result();
  const bool has_h0 = h0.has_value() && h0->defined();
  const bool per_step = lam_is_per_step(lam);
  const int64_t B = h.size(0), L = h.size(1), N = h.size(2);
  const auto g_c = grad_h.contiguous();
  const auto lam_c = lam.contiguous();
  const auto h_c = h.contiguous();
  const auto h0_c = has_h0 ? h0->contiguous() : at::Tensor();
  at::Tensor lam_partial;  // (B, chunks, N) for a time-invariant grad_lam, summed below (no atomics)
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(h.scalar_type(), "torch_lru::scan_backward", [&] {
    using T = scalar_t;
    const auto grid = tile_grid<T>(B, L, N);
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<T>() : nullptr; };
    const T* h0_ptr = has_h0 ? h0_c.const_data_ptr<T>() : nullptr;
    if (!per_step && mask[0]) lam_partial = at::empty({B, grid.chunks(), N}, h.options());
    auto run = [&](auto per_step_tag) {  // std::true_type or std::false_type
      constexpr bool kPerStep = decltype(per_step_tag)::value;
      const BackwardSteps<T, kPerStep> steps{g_c.const_data_ptr<T>(),
                                             lam_c.const_data_ptr<T>(),
                                             h_c.const_data_ptr<T>(),
                                             h0_ptr,
                                             out.grad_x.mutable_data_ptr<T>(),
                                             kPerStep ? ptr(out.grad_lam) : nullptr,
                                             ptr(out.grad_h0),
                                             L,
                                             N,
                                             reverse,
                                             mask[0]};
      launch_tiled_scan<T>(steps, grid, h, ptr(lam_partial));
    };
    per_step ? run(std::true_type{}) : run(std::false_type{});
  });
  if (lam_partial.defined()) at::sum_out(out.grad_lam, lam_partial, at::IntArrayRef{0, 1});
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_lru, CUDA, m) {
  m.impl("scan", &scan_cuda);
  m.impl("scan.out", &scan_out_cuda);
  m.impl("scan_backward", &scan_backward_cuda);
}

}  // namespace torch_lru

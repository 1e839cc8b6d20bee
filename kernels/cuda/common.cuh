#pragma once
// What every kernel source in kernels/cuda includes, so that each compiles two ways:
//   nvcc:            the CUDA runtime, cuda_bf16.h and NVTX (header-only nvtx3);
//   NURI_CUDA_EMU:   the host emulation layer (emu/emu.hpp), for the CPU-side checks in
//                    tests/cuda_emu against the CPU backend.
// Kernels use only the subset emu.hpp lists: __global__/__device__, static __shared__ arrays,
// __syncthreads, full-warp shuffles, atomicAdd, the <cmath> float functions, bf16 conversions,
// nvcuda::wmma m16n16k16 (bf16 inputs, fp32 accumulators).
// Launchers launch through NURI_LAUNCH and open an NVTX range with NURI_NVTX_RANGE; kernels take
// dynamic shared memory through NURI_DYNAMIC_SHARED(type, name).
#include <cstddef>
#include <cstdint>

#if defined(NURI_CUDA_EMU)
#include "emu/emu.hpp"
#include "emu/runtime.hpp"
// Emulated builds put everything written as `namespace nuri::cuda` (kernels, launchers, the cuda
// backend) into nuri::cuda_emu instead, so a test binary can hold them beside libnuri's real ones
// (compiled by nvcc into nuri::cuda) without two definitions of one symbol.
#define cuda cuda_emu
// kernel<<<grid, block, shared_bytes, stream>>>(args...), run on the host (at once on the null
// stream, queued on a created one: emu/runtime.hpp); records the kernel.
#define NURI_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  emu::launch_on((stream), #kernel, kernel, grid, block, shared_bytes, __VA_ARGS__)
#define NURI_NVTX_RANGE(name) (void)(name)
// The launch's dynamic shared memory as `type* name` (emulated: a per-block buffer).
#define NURI_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(emu::dynamic_shared())
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#if defined(__CUDACC__)
#include <mma.h>
#else
// A host-compiler translation unit (the cuda backend in src/backend/cuda, benchmarks) includes the
// kernel headers for their launchers only: kernel declarations become plain declarations (never
// called from there) and the device helpers below are left out.
#undef __global__
#define __global__
#define NURI_CUDA_HOST_ONLY 1
#endif
#include <nvtx3/nvToolsExt.h>
#define NURI_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__)
namespace nuri::cuda {
// Pushes an NVTX range for the lifetime of the launcher (visible in Nsight Systems).
struct NvtxRange {
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};
}  // namespace nuri::cuda
// The launch's dynamic shared memory as `type* name`.
#define NURI_DYNAMIC_SHARED(type, name)                                   \
  extern __shared__ __align__(16) unsigned char nuri_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(nuri_dynamic_shared_)
#define NURI_NVTX_CONCAT2(a, b) a##b
#define NURI_NVTX_CONCAT(a, b) NURI_NVTX_CONCAT2(a, b)
#define NURI_NVTX_RANGE(name) \
  const ::nuri::cuda::NvtxRange NURI_NVTX_CONCAT(nvtx_range_, __LINE__)(name)
#endif

namespace nuri::cuda {

inline constexpr int kWarpSize = 32;

// Grid size for `count` items at `per_block` items per block (at least 1 block).
inline unsigned blocks_for(size_t count, unsigned per_block) {
  const size_t blocks = (count + per_block - 1) / per_block;
  return blocks == 0 ? 1u : unsigned(blocks);
}

// Grid size for a grid-stride loop over `count` items at `per_block` threads: enough blocks to
// cover them, at most kMaxStrideBlocks. A grid-stride kernel computes the same result with any
// grid, so the emulated build caps it at 2 blocks: there every CUDA thread is an OS thread, and
// one thread per element would mean creating millions of them.
#if defined(NURI_CUDA_EMU)
inline constexpr unsigned kMaxStrideBlocks = 2;
#else
inline constexpr unsigned kMaxStrideBlocks = 65535;
#endif
inline unsigned stride_blocks(size_t count, unsigned per_block) {
  const unsigned blocks = blocks_for(count, per_block);
  return blocks < kMaxStrideBlocks ? blocks : kMaxStrideBlocks;
}

#if !defined(NURI_CUDA_HOST_ONLY)
// ---- element conversions: storage type <-> fp32 math ----
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- reductions ----
// Sum over the 32 lanes of a warp (butterfly: every lane gets the total). All 32 lanes call it.
// T = float or double.
template <typename T>
__device__ __forceinline__ T warp_reduce_sum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over a 1-D block; every thread gets the total. blockDim.x must be a multiple of 32 (<= 1024)
// and every thread of the block must call it. The order of the additions is fixed by the block
// shape, so the result is deterministic. Safe to call back to back (it syncs before reusing its
// shared memory). T = float or double.
template <typename T>
__device__ inline T block_reduce_sum(T v) {
  __shared__ T partial[kWarpSize];
  const int lane = int(threadIdx.x) % kWarpSize;
  const int warp = int(threadIdx.x) / kWarpSize;
  const int nwarps = int(blockDim.x) / kWarpSize;
  v = warp_reduce_sum(v);
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : T(0);
  return warp_reduce_sum(v);
}
#endif  // !NURI_CUDA_HOST_ONLY

}  // namespace nuri::cuda

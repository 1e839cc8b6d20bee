// Sum of squares of an fp32 vector, accumulated in double; the twin of CpuBackend::sum_squares
// (src/backend/cpu/cpu_backend.cpp). What the global gradient norm is made of.
//   out = sum_i double(x[i])^2          x (n) fp32; out one double; partials (P) double scratch
// Launch (two kernels, no atomics, deterministic):
//   partial: grid G = min(P, ceil(n / (256 * 64))) blocks of 256 threads (P =
//     sum_squares_partials() = 1024: ~8 blocks per SM on an H100, so a long stream saturates
//     memory; n < 16.7M uses fewer blocks, at least 64 elements per thread, which also keeps the
//     emulated tests small). Thread i of the grid sums
//     x[i], x[i + 256 G], ... in order in double (a float's square is exact in double), then the
//     block sums its threads (xor-butterfly warp shuffles of doubles, 32 doubles of shared
//     memory) into partials[block].
//   final: one block of 128 threads sums partials[0, G) the same way and writes *out (0 when G = 0).
// The partition depends on n only, so the result is bitwise reproducible across runs and devices.
// Numerics: double throughout; within ~1e-15 relative of the CPU's (differently ordered) sum.
#include "sum_squares.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
constexpr unsigned kFinalBlock = 128;
constexpr size_t kMinPerThread = 64;
}  // namespace

__global__ void sum_squares_partial_kernel(double* partials, const float* x, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  double acc = 0.0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = x[i];
    acc += v * v;
  }
  const double total = block_reduce_sum<double>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_squares_final_kernel(double* out, const double* partials, unsigned count) {
  double acc = 0.0;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = block_reduce_sum<double>(acc);
  if (threadIdx.x == 0) *out = total;
}

cudaError_t sum_squares(double* out, const float* x, size_t n, double* partials,
                        cudaStream_t stream) {
  NURI_NVTX_RANGE("sum_squares");
  if (!out) return cudaErrorInvalidValue;
  unsigned blocks = 0;
  if (n > 0) {
    if (!x || !partials) return cudaErrorInvalidValue;
    const size_t wanted = (n + kBlock * kMinPerThread - 1) / (kBlock * kMinPerThread);
    blocks = unsigned(wanted < sum_squares_partials() ? wanted : sum_squares_partials());
    NURI_LAUNCH(sum_squares_partial_kernel, blocks, kBlock, 0, stream, partials, x, n);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  NURI_LAUNCH(sum_squares_final_kernel, 1u, kFinalBlock, 0, stream, out,
              static_cast<const double*>(partials), blocks);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

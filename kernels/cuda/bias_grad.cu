// Bias gradient of a linear layer; the twin of the dbias part of CpuBackend::linear_backward
// (src/backend/cpu/gemm.cpp):
//   dbias[c] += sum_n dout[n, c]          dout row-major (N, OC); dbias (OC), accumulated (+=)
// Launch: block (32, 32), grid ceil(OC/32): each block owns 32 columns and all N rows. Thread
//   (x, y) sums rows y, y+32, y+64, ... of column x in order (a warp reads 32 consecutive floats of
//   one row: coalesced 128-byte loads), then thread y = 0 adds the 32 partials in order
//   (32 x 32 floats of shared memory). No atomics: the result depends on N and OC only
//   (deterministic), and it accumulates into dbias.
// Parallelism is OC/32 blocks (24 for OC = 768): a row-split two-stage reduction with a workspace
// is the follow-up if profiles ask for it (as for layernorm's parameter gradients).
// Numerics: fp32 sums in a different order from the CPU's row-by-row sum (a few ulps apart).
#include "bias_grad.cuh"

namespace nuri::cuda {

namespace {
constexpr int kCols = 32;
constexpr int kRows = 32;
}  // namespace

__global__ void bias_grad_kernel(float* dbias, const float* dout, int N, int OC) {
  __shared__ float part[kRows][kCols];  // row y, column x: consecutive x, no bank conflicts
  const int c = int(blockIdx.x) * kCols + int(threadIdx.x);
  float acc = 0.0f;
  if (c < OC)
    for (int n = int(threadIdx.y); n < N; n += kRows) acc += dout[size_t(n) * OC + c];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float sum = 0.0f;
    for (int r = 0; r < kRows; ++r) sum += part[r][threadIdx.x];
    dbias[c] += sum;
  }
}

cudaError_t bias_grad(float* dbias, const float* dout, int N, int OC, cudaStream_t stream) {
  NURI_NVTX_RANGE("bias_grad");
  if (N < 0 || OC <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  if (!dbias || !dout) return cudaErrorInvalidValue;
  NURI_LAUNCH(bias_grad_kernel, blocks_for(size_t(OC), kCols), dim3(kCols, kRows), 0, stream,
              dbias, dout, N, OC);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

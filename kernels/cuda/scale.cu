// In-place scale; the twin of CpuBackend::scale (src/backend/cpu/cpu_backend.cpp):
//   x[i] *= s                 x: n fp32 elements
// Launch: one thread per element, grid-stride, block 256, grid = min(ceil(n/256), 65535).
// No shared memory. Exact (one fp32 multiply), so bitwise equal to the CPU.
#include "scale.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
}  // namespace

__global__ void scale_kernel(float* x, float s, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) x[i] *= s;
}

cudaError_t scale(float* x, float s, size_t n, cudaStream_t stream) {
  NURI_NVTX_RANGE("scale");
  if (n == 0) return cudaSuccess;
  if (!x) return cudaErrorInvalidValue;
  NURI_LAUNCH(scale_kernel, stride_blocks(n, kBlock), kBlock, 0, stream, x, s, n);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

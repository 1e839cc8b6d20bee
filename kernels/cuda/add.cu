// Elementwise add; the twin of CpuBackend::add (src/backend/cpu/cpu_backend.cpp):
//   out[i] = a[i] + b[i]      out, a, b: n fp32 elements; out may alias a or b (each element is
//                             read before it is written, by the same thread)
// Launch: one thread per element, grid-stride, block 256, grid = min(ceil(n/256), 65535).
// No shared memory. Exact (one fp32 add), so bitwise equal to the CPU.
#include "add.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
}  // namespace

// No __restrict__: out may alias a or b.
__global__ void add_kernel(float* out, const float* a, const float* b, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = a[i] + b[i];
}

cudaError_t add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream) {
  NURI_NVTX_RANGE("add");
  if (n == 0) return cudaSuccess;
  if (!out || !a || !b) return cudaErrorInvalidValue;
  NURI_LAUNCH(add_kernel, stride_blocks(n, kBlock), kBlock, 0, stream, out, a, b,
              n);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

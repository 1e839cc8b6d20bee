// fp32 <-> bf16 conversion, elementwise (the bf16 weights and activations of the CUDA backend,
// from and to the fp32 master copy).
//   f32 -> bf16: round to nearest, ties to even (__float2bfloat16_rn); NaN stays NaN.
//   bf16 -> f32: exact (the bf16 bits are the top half of the float's).
// Shapes: flat arrays of n elements, any n; out must not overlap inp.
// Launch: grid-stride, block 256, grid = min(ceil(n/256), 65535). No shared memory.
#include "cast.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
unsigned grid_for(size_t n) {
  return stride_blocks(n, kBlock);
}
}  // namespace

__global__ void cast_f32_to_bf16_kernel(__nv_bfloat16* out, const float* inp, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __float2bfloat16_rn(inp[i]);
}

__global__ void cast_bf16_to_f32_kernel(float* out, const __nv_bfloat16* inp, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __bfloat162float(inp[i]);
}

cudaError_t cast_f32_to_bf16(__nv_bfloat16* out, const float* inp, size_t n, cudaStream_t stream) {
  NURI_NVTX_RANGE("cast_f32_to_bf16");
  if (n == 0) return cudaSuccess;
  NURI_LAUNCH(cast_f32_to_bf16_kernel, grid_for(n), kBlock, 0, stream, out, inp, n);
  return cudaGetLastError();
}

cudaError_t cast_bf16_to_f32(float* out, const __nv_bfloat16* inp, size_t n, cudaStream_t stream) {
  NURI_NVTX_RANGE("cast_bf16_to_f32");
  if (n == 0) return cudaSuccess;
  NURI_LAUNCH(cast_bf16_to_f32_kernel, grid_for(n), kBlock, 0, stream, out, inp, n);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

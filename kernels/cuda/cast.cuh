#pragma once
// fp32 <-> bf16 conversion: kernels and launchers. See cast.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void cast_f32_to_bf16_kernel(__nv_bfloat16* out, const float* inp, size_t n);
__global__ void cast_bf16_to_f32_kernel(float* out, const __nv_bfloat16* inp, size_t n);

// out (n) = bf16(inp), round to nearest even (NaN stays NaN, overflow rounds to inf).
cudaError_t cast_f32_to_bf16(__nv_bfloat16* out, const float* inp, size_t n, cudaStream_t stream);
// out (n) = float(inp), exact.
cudaError_t cast_bf16_to_f32(float* out, const __nv_bfloat16* inp, size_t n, cudaStream_t stream);

}  // namespace nuri::cuda

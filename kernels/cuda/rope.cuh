#pragma once
// Rotary position embedding, half-split layout (fp32): kernels and launchers. See rope.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void rope_table_kernel(float* table, int T, int D, float theta);
// T_ = float or __nv_bfloat16 (x's storage; the rotation is fp32).
template <typename T_>
__global__ void rope_kernel(T_* x, const float* table, int B, int T, int nh, int D,
                            int row_stride, bool inverse);

// table (T, D/2, 2) = (cos, sin) of t theta^(-2i/D), computed in double and rounded to float.
// It depends only on (T, D, theta): build it once, reuse it for every rope call with those.
// T >= 0, D even and > 0, theta > 0 (else InvalidValue).
cudaError_t rope_table(float* table, int T, int D, float theta, cudaStream_t stream);
// In place on x (B,T,nh,D), consecutive (b,t) rows row_stride floats apart, heads D apart.
// inverse = true rotates by -angle (the backward). table from rope_table(T, D, theta).
// D even and > 0, nh > 0, row_stride >= nh*D, B, T >= 0 (else InvalidValue).
cudaError_t rope(float* x, const float* table, int B, int T, int nh, int D, int row_stride,
                 bool inverse, cudaStream_t stream);
// The same on bf16 x (row_stride in elements).
cudaError_t rope(__nv_bfloat16* x, const float* table, int B, int T, int nh, int D, int row_stride,
                 bool inverse, cudaStream_t stream);

}  // namespace nuri::cuda

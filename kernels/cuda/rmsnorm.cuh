#pragma once
// RMSNorm over the last dimension (fp32): kernels and launchers. See rmsnorm.cu.
#include "common.cuh"

namespace nuri::cuda {

// Out = float or __nv_bfloat16 (the output's storage; the math is fp32).
template <typename Out>
__global__ void rmsnorm_forward_kernel(Out* out, float* rstd, const float* inp,
                                       const float* weight, int C, float eps);
__global__ void rmsnorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                              const float* weight, const float* rstd, int C);
__global__ void rmsnorm_backward_params_kernel(float* dweight, const float* dout,
                                               const float* inp, const float* rstd, int N, int C);

// out (N,C) = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps); saves rstd (N).
// N >= 0, C > 0 (else InvalidValue).
cudaError_t rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N,
                            int C, float eps, cudaStream_t stream);
// The same with out rounded to bf16.
cudaError_t rmsnorm_forward(__nv_bfloat16* out, float* rstd, const float* inp, const float* weight,
                            int N, int C, float eps, cudaStream_t stream);
// Accumulates into dinp (N,C); dweight (C) +=.
cudaError_t rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                             const float* weight, const float* rstd, int N, int C,
                             cudaStream_t stream);

}  // namespace nuri::cuda

#pragma once
// LayerNorm over the last dimension (fp32): kernels and launchers. See layernorm.cu.
#include "common.cuh"

namespace nuri::cuda {

// Out = float or __nv_bfloat16 (the output's storage; the math is fp32).
template <typename Out>
__global__ void layernorm_forward_kernel(Out* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int C, float eps);
__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, int C);
__global__ void layernorm_backward_params_kernel(float* dweight, float* dbias, const float* dout,
                                                 const float* inp, const float* mean,
                                                 const float* rstd, int N, int C);

// out (N,C) = (inp - mean) * rstd * weight + bias (bias may be null); saves mean (N), rstd (N).
// N >= 0, C > 0 (else InvalidValue).
cudaError_t layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C, float eps,
                              cudaStream_t stream);
// The same with out rounded to bf16.
cudaError_t layernorm_forward(__nv_bfloat16* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C, float eps,
                              cudaStream_t stream);
// Accumulates into dinp (N,C); dweight (C) +=, dbias (C) += (dbias may be null).
cudaError_t layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, const float* mean,
                               const float* rstd, int N, int C, cudaStream_t stream);

}  // namespace nuri::cuda

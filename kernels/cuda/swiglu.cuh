#pragma once
// SwiGLU gate on rows laid out [gate (F) | up (F)]: kernels and launchers. See swiglu.cu.
#include "common.cuh"

namespace nuri::cuda {

// T = float or __nv_bfloat16 (storage); the math is fp32.
template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* inp, int N, int F);
template <typename T>
__global__ void swiglu_backward_kernel(T* dinp, const T* inp, const T* dout, int N, int F);

// out (N,F) = silu(inp[:, :F]) * inp[:, F:], inp (N,2F). N >= 0, F > 0 (else InvalidValue).
cudaError_t swiglu_forward(float* out, const float* inp, int N, int F, cudaStream_t stream);
cudaError_t swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, int N, int F,
                           cudaStream_t stream);
// dinp (N,2F) overwritten from dout (N,F).
cudaError_t swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F,
                            cudaStream_t stream);
cudaError_t swiglu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                            const __nv_bfloat16* dout, int N, int F, cudaStream_t stream);

}  // namespace nuri::cuda

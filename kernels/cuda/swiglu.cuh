#pragma once
// SwiGLU gate on rows laid out [gate (F) | up (F)]: kernels and launchers. See swiglu.cu.
#include "common.cuh"

namespace nuri::cuda {

// T = float or __nv_bfloat16 (storage); the math is fp32.
template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* inp, int N, int F);
// In: the input's storage; G: the gradients' (dinp, dout).
template <typename In, typename G>
__global__ void swiglu_backward_kernel(G* dinp, const In* inp, const G* dout, int N, int F);

// out (N,F) = silu(inp[:, :F]) * inp[:, F:], inp (N,2F). N >= 0, F > 0 (else InvalidValue).
cudaError_t swiglu_forward(float* out, const float* inp, int N, int F, cudaStream_t stream);
cudaError_t swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, int N, int F,
                           cudaStream_t stream);
// dinp (N,2F) overwritten from dout (N,F).
cudaError_t swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F,
                            cudaStream_t stream);
cudaError_t swiglu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                            const __nv_bfloat16* dout, int N, int F, cudaStream_t stream);
// fp32 gradients from a bf16 input (the model's bf16 activations).
cudaError_t swiglu_backward(float* dinp, const __nv_bfloat16* inp, const float* dout, int N, int F,
                            cudaStream_t stream);

}  // namespace nuri::cuda

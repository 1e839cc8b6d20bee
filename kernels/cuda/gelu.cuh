#pragma once
// GELU, tanh approximation (GPT-2's "gelu_new"): kernels and launchers. See gelu.cu.
#include "common.cuh"

namespace nuri::cuda {

// T = float or __nv_bfloat16 (storage); the math is fp32.
template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, size_t n);
// In: the input's storage; G: the gradients' (dinp, dout).
template <typename In, typename G>
__global__ void gelu_backward_kernel(G* dinp, const In* inp, const G* dout, size_t n);

// out (n) = gelu(inp (n)); out may alias inp.
cudaError_t gelu_forward(float* out, const float* inp, size_t n, cudaStream_t stream);
cudaError_t gelu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, size_t n,
                         cudaStream_t stream);
// dinp (n) = dout * gelu'(inp), overwritten; dinp may alias dout.
cudaError_t gelu_backward(float* dinp, const float* inp, const float* dout, size_t n,
                          cudaStream_t stream);
cudaError_t gelu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                          const __nv_bfloat16* dout, size_t n, cudaStream_t stream);
// fp32 gradients from a bf16 input (the model's bf16 activations).
cudaError_t gelu_backward(float* dinp, const __nv_bfloat16* inp, const float* dout, size_t n,
                          cudaStream_t stream);

}  // namespace nuri::cuda

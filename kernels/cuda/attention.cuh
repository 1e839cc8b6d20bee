#pragma once
// Causal flash-style attention with grouped-query heads (fp32, SIMT): kernels and launchers.
// See attention.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void attention_forward_kernel(float* out, float* lse, const float* qkv, int T, int H,
                                         int KV, int D, float scale);
__global__ void attention_backward_dq_kernel(float* dqkv, const float* dout, const float* qkv,
                                             const float* out, const float* lse, int T, int H,
                                             int KV, int D, float scale);
__global__ void attention_backward_dkdv_kernel(float* dqkv, const float* dout, const float* qkv,
                                               const float* out, const float* lse, int T, int H,
                                               int KV, int D, float scale);

// out (B,T,H*D) = causal softmax(scale Q K^T) V per head, lse (B,H,T) saved; qkv (B,T,(H+2KV)*D)
// rows [q heads | k heads | v heads], query head h reads kv head h / (H/KV), scale 1/sqrt(D).
// B, T >= 0; H, KV > 0; H % KV == 0; 0 < D <= 128 (else InvalidValue).
cudaError_t attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                              int KV, int D, cudaStream_t stream);
// dqkv (B,T,(H+2KV)*D) overwritten from dout (B,T,H*D), qkv, out and lse of the forward.
cudaError_t attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                               const float* lse, int B, int T, int H, int KV, int D,
                               cudaStream_t stream);

}  // namespace nuri::cuda

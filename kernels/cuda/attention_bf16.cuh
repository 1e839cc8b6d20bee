#pragma once
// Causal flash attention with grouped-query heads on bf16 tensor cores (WMMA m16n16k16, fp32
// accumulation and fp32 softmax): kernels and launchers. See attention_bf16.cu.
// The layout contract is the fp32 attention.cuh's; only the storage type differs.
#include "common.cuh"

namespace nuri::cuda {

template <int D>
__global__ void attention_bf16_forward_kernel(__nv_bfloat16* out, float* lse,
                                              const __nv_bfloat16* qkv, int T, int H, int KV,
                                              float scale_log2);
template <int D>
__global__ void attention_bf16_delta_kernel(float* delta, const __nv_bfloat16* dout,
                                            const __nv_bfloat16* out, int B, int T, int H);
template <int D>
__global__ void attention_bf16_backward_dq_kernel(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                                                  const __nv_bfloat16* qkv, const float* lse,
                                                  const float* delta, int T, int H, int KV,
                                                  float scale);
template <int D>
__global__ void attention_bf16_backward_dkdv_kernel(__nv_bfloat16* dqkv,
                                                    const __nv_bfloat16* dout,
                                                    const __nv_bfloat16* qkv, const float* lse,
                                                    const float* delta, int T, int H, int KV,
                                                    float scale);

// out (B,T,H*D) bf16 = causal softmax(scale Q K^T) V per head; lse (B,H,T) fp32, natural log of
// the sum of e^{scaled scores}. qkv (B,T,(H+2KV)*D) bf16, rows [q heads | k heads | v heads];
// query head h reads kv head h / (H/KV); scale 1/sqrt(D).
// B, T >= 0 (0: nothing to do); H, KV in 1..65535, H % KV == 0; B <= 65535; D = 64 or 128;
// qkv 16-byte aligned. Anything else: cudaErrorInvalidValue (the caller falls back to the fp32
// attention_forward).
cudaError_t attention_forward_bf16(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv,
                                   int B, int T, int H, int KV, int D, cudaStream_t stream);

// Bytes of dynamic shared memory per block the largest of these kernels needs at head dim D (0 for
// an unsupported D). D = 128 needs more than sm_86/sm_89 GPUs allow per block: a caller compares
// it with cudaDevAttrMaxSharedMemoryPerBlockOptin and falls back to the fp32 kernels.
size_t attention_bf16_shared_bytes(int D);

// fp32 floats of workspace attention_backward_bf16 needs: delta = rowsum(dO * O), (B,H,T).
size_t attention_backward_bf16_workspace(int B, int T, int H, int KV, int D);

// dqkv (B,T,(H+2KV)*D) bf16, overwritten (every element), from dout (B,T,H*D) bf16 and the
// forward's qkv, out (bf16) and lse (fp32). workspace: attention_backward_bf16_workspace floats.
// Deterministic (no atomics). Same shape rules as the forward; dout and out 16-byte aligned too.
cudaError_t attention_backward_bf16(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                                    const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                                    const float* lse, float* workspace, int B, int T, int H,
                                    int KV, int D, cudaStream_t stream);

}  // namespace nuri::cuda

#pragma once
// Token (+ learned position) embedding (fp32): kernels and launchers. See embedding.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte,
                                         const float* wpe, int N, int T, int C);
__global__ void embedding_backward_wte_kernel(float* dwte, const float* dout,
                                              const int32_t* tokens, int N, int C);
__global__ void embedding_backward_wpe_kernel(float* dwpe, const float* dout, int N, int T, int C);

// out (N,C) = wte[tokens[n]] (+ wpe[n % T] when wpe is non-null); a negative token has no wte
// row (wpe only, or zero). N >= 0, T > 0, C > 0 (else InvalidValue).
cudaError_t embedding_forward(float* out, const int32_t* tokens, const float* wte,
                              const float* wpe, int N, int T, int C, cudaStream_t stream);
// dwte[tokens[n]] += dout[n] (negative tokens skipped; atomicAdd, see embedding.cu);
// dwpe[n % T] += dout[n] when dwpe is non-null (deterministic).
cudaError_t embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                               int N, int T, int C, cudaStream_t stream);

}  // namespace nuri::cuda

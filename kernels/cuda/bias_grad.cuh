#pragma once
// Bias gradient of a linear layer (column sums, fp32): kernel and launcher. See bias_grad.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void bias_grad_kernel(float* dbias, const float* dout, int N, int OC);

// dbias (OC) += column sums of dout (N,OC) (the dbias of Backend::linear_backward). Deterministic
// (no atomics). N >= 0, OC > 0 (else InvalidValue); N == 0 does nothing.
cudaError_t bias_grad(float* dbias, const float* dout, int N, int OC, cudaStream_t stream);

}  // namespace nuri::cuda

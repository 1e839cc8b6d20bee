#pragma once
// Elementwise sum of two fp32 vectors: kernel and launcher. See add.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void add_kernel(float* out, const float* a, const float* b, size_t n);

// out[i] = a[i] + b[i], n elements (Backend::add); out may alias a or b. n == 0 does nothing;
// a null pointer with n > 0 is InvalidValue.
cudaError_t add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream);

}  // namespace nuri::cuda

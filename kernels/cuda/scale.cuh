#pragma once
// In-place scaling of an fp32 vector: kernel and launcher. See scale.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void scale_kernel(float* x, float s, size_t n);

// x[i] *= s, n elements (Backend::scale). n == 0 does nothing; x null with n > 0 is InvalidValue.
cudaError_t scale(float* x, float s, size_t n, cudaStream_t stream);

}  // namespace nuri::cuda

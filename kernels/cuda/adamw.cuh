#pragma once
// AdamW update (fp32 parameters and state): kernel and launcher. See adamw.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float inv_bc1, float inv_bc2);

// AdamW with decoupled weight decay, bias-corrected, step >= 1 (else InvalidValue):
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p).  n elements, updated in place.
cudaError_t adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int step,
                         float grad_scale, cudaStream_t stream);

}  // namespace nuri::cuda

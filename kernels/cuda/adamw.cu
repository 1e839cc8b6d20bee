// AdamW with decoupled weight decay and bias correction; the twin of src/backend/cpu/adamw.cpp:
//   g = grad_scale grad;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p),  mhat = m / (1 - b1^step), vhat = v / (1 - b2^step)
// The bias corrections are computed once on the host in double (1 - b2^step cancels badly in
// float) and passed as float factors inv_bc1, inv_bc2, as the CPU backend does; the element
// update is the same sequence of fp32 operations.
// Shapes: param, grad, m, v: n elements each (fp32; m and v are the optimizer state).
// Launch: one thread per element, grid-stride, block 256, grid = min(ceil(n/256), 65535).
// No shared memory. Constraints: step >= 1.
#include "adamw.cuh"

#include <cmath>

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
}  // namespace

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float inv_bc1, float inv_bc2) {
  const float one_minus_b1 = 1.0f - beta1, one_minus_b2 = 1.0f - beta2;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + one_minus_b1 * g;
    const float vi = beta2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * inv_bc1, vhat = vi * inv_bc2;
    const float p = param[i];
    param[i] = p - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
  }
}

cudaError_t adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int step,
                         float grad_scale, cudaStream_t stream) {
  NURI_NVTX_RANGE("adamw_update");
  if (step < 1) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(beta1), step)));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(beta2), step)));
  NURI_LAUNCH(adamw_kernel, stride_blocks(n, kBlock), kBlock, 0, stream, param,
              grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, inv_bc1, inv_bc2);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

// AdamW with decoupled weight decay and bias correction; the twin of src/backend/cpu/adamw.cpp:
//   g = grad_scale grad;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p),  mhat = m / (1 - b1^step), vhat = v / (1 - b2^step)
// The bias corrections are computed once on the host in double (1 - b2^step cancels badly in
// float) and passed as float factors inv_bc1, inv_bc2, as the CPU backend does; the element
// update (adamw_element) is the same sequence of fp32 operations.
//
// adamw_kernel: one tensor. param, grad, m, v: n elements each. One thread per element,
//   grid-stride, block 256, grid = min(ceil(n/256), 65535).
// adamw_chunks_kernel: the fused update over a whole model (Backend::adamw_update_segments): a
//   table of chunks (<= 64 Ki elements each, cut from the tensors by append_adamw_chunks) in
//   device memory; block b takes chunks b, b + grid, ... and its 256 threads stride through each.
//   One launch replaces one launch per tensor (~150 for gpt2-124m), and the per-chunk decay flag
//   replaces the per-tensor weight_decay argument. Grid = min(nchunks, 65535).
// No shared memory. Constraints: step >= 1.
#include "adamw.cuh"

#include <cmath>

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;

// The update of element i.
__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v,
                                              size_t i, float lr, float beta1, float beta2,
                                              float eps, float weight_decay, float grad_scale,
                                              float inv_bc1, float inv_bc2) {
  const float g = grad[i] * grad_scale;
  const float mi = beta1 * m[i] + (1.0f - beta1) * g;
  const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  const float mhat = mi * inv_bc1, vhat = vi * inv_bc2;
  const float p = param[i];
  param[i] = p - lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
}

// 1 / (1 - beta^step), in double.
float inverse_bias_correction(float beta, int step) {
  return float(1.0 / (1.0 - std::pow(double(beta), step)));
}
}  // namespace

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float inv_bc1, float inv_bc2) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adamw_element(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, grad_scale, inv_bc1,
                  inv_bc2);
}

__global__ void adamw_chunks_kernel(float* param, const float* grad, float* m, float* v,
                                    const AdamwChunk* chunks, int nchunks, float lr, float beta1,
                                    float beta2, float eps, float weight_decay, float grad_scale,
                                    float inv_bc1, float inv_bc2) {
  for (int c = int(blockIdx.x); c < nchunks; c += int(gridDim.x)) {
    const AdamwChunk chunk = chunks[c];
    const float wd = chunk.decay ? weight_decay : 0.0f;
    // Offsetting the moment pointers makes element i of the chunk index all four buffers alike.
    float* p = param + chunk.param_offset;
    const float* g = grad + chunk.param_offset;
    float* mc = m + chunk.moment_offset;
    float* vc = v + chunk.moment_offset;
    for (unsigned i = threadIdx.x; i < chunk.count; i += blockDim.x)
      adamw_element(p, g, mc, vc, i, lr, beta1, beta2, eps, wd, grad_scale, inv_bc1, inv_bc2);
  }
}

cudaError_t adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int step,
                         float grad_scale, cudaStream_t stream) {
  NURI_NVTX_RANGE("adamw_update");
  if (step < 1) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  NURI_LAUNCH(adamw_kernel, stride_blocks(n, kBlock), kBlock, 0, stream, param, grad, m, v, n, lr,
              beta1, beta2, eps, weight_decay, grad_scale, inverse_bias_correction(beta1, step),
              inverse_bias_correction(beta2, step));
  return cudaGetLastError();
}

void append_adamw_chunks(std::vector<AdamwChunk>& chunks, size_t param_offset,
                         size_t moment_offset, size_t count, bool decay, size_t max_chunk) {
  if (max_chunk == 0) max_chunk = kAdamwChunkElements;
  if (max_chunk > 0xffffffffu) max_chunk = 0xffffffffu;  // AdamwChunk::count is 32 bits
  for (size_t done = 0; done < count; done += max_chunk) {
    const size_t n = count - done < max_chunk ? count - done : max_chunk;
    chunks.push_back({param_offset + done, moment_offset + done, unsigned(n), decay ? 1u : 0u});
  }
}

cudaError_t adamw_update_chunks(float* param, const float* grad, float* m, float* v,
                                const AdamwChunk* chunks, int nchunks, float lr, float beta1,
                                float beta2, float eps, float weight_decay, int step,
                                float grad_scale, cudaStream_t stream) {
  NURI_NVTX_RANGE("adamw_update_chunks");
  if (step < 1 || nchunks < 0) return cudaErrorInvalidValue;
  if (nchunks == 0) return cudaSuccess;
  if (!param || !grad || !m || !v || !chunks) return cudaErrorInvalidValue;
  const unsigned grid = unsigned(nchunks) < kMaxStrideBlocks ? unsigned(nchunks) : kMaxStrideBlocks;
  NURI_LAUNCH(adamw_chunks_kernel, grid, kBlock, 0, stream, param, grad, m, v, chunks, nchunks, lr,
              beta1, beta2, eps, weight_decay, grad_scale, inverse_bias_correction(beta1, step),
              inverse_bias_correction(beta2, step));
  return cudaGetLastError();
}

}  // namespace nuri::cuda

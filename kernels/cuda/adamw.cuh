#pragma once
// AdamW update (fp32 parameters and state): kernels and launchers, per tensor and fused over many
// tensors. See adamw.cu.
#include <vector>

#include "common.cuh"

namespace nuri::cuda {

// A piece of the fused update: `count` elements at param_offset (parameters and gradients) and
// moment_offset (the moments), decayed when decay != 0. Built by append_adamw_chunks.
struct AdamwChunk {
  size_t param_offset;
  size_t moment_offset;
  unsigned count;
  unsigned decay;
};
// Elements per chunk: small enough to spread a few large tensors over every SM, large enough that
// a chunk is not mostly launch bookkeeping.
inline constexpr size_t kAdamwChunkElements = 65536;

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, size_t n,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float inv_bc1, float inv_bc2);
__global__ void adamw_chunks_kernel(float* param, const float* grad, float* m, float* v,
                                    const AdamwChunk* chunks, int nchunks, float lr, float beta1,
                                    float beta2, float eps, float weight_decay, float grad_scale,
                                    float inv_bc1, float inv_bc2);

// AdamW with decoupled weight decay, bias-corrected, step >= 1 (else InvalidValue):
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p).  n elements, updated in place.
cudaError_t adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int step,
                         float grad_scale, cudaStream_t stream);

// Appends the chunks of one segment (a tensor, or part of one) to `chunks`, each at most
// max_chunk elements (0: kAdamwChunkElements; at most 2^32 - 1, the width of AdamwChunk::count).
// Host code.
void append_adamw_chunks(std::vector<AdamwChunk>& chunks, size_t param_offset,
                         size_t moment_offset, size_t count, bool decay,
                         size_t max_chunk = kAdamwChunkElements);

// The same update over every chunk in one launch: param/grad indexed by param_offset, m/v by
// moment_offset; weight_decay applies to chunks with decay set. `chunks` (nchunks >= 0) must be
// readable by the device (device or managed memory) and stay valid until the launch completes.
// Chunks must not overlap. InvalidValue for step < 1 or null pointers.
cudaError_t adamw_update_chunks(float* param, const float* grad, float* m, float* v,
                                const AdamwChunk* chunks, int nchunks, float lr, float beta1,
                                float beta2, float eps, float weight_decay, int step,
                                float grad_scale, cudaStream_t stream);

}  // namespace nuri::cuda

#pragma once
// Softmax cross-entropy over rows of logits (fp32): the vocabulary-parallel halves and the fused
// single-slice loss + gradient. Kernels and launchers; see cross_entropy.cu.
#include "common.cuh"

namespace nuri::cuda {

__global__ void cross_entropy_partial_kernel(float* row_max, float* row_sum, float* target_logit,
                                             const float* logits, const int32_t* targets, int V,
                                             int vocab_start);
__global__ void cross_entropy_partial_backward_kernel(float* logits, const float* lse,
                                                      const int32_t* targets, int V,
                                                      int vocab_start, float scale);
__global__ void cross_entropy_fused_kernel(float* logits, float* losses, const int32_t* targets,
                                           int V, float scale);
__global__ void cross_entropy_fused_bf16_kernel(__nv_bfloat16* grad, float* losses,
                                                const float* logits, const int32_t* targets,
                                                int V, float scale);

// Backend::cross_entropy_partial. logits (N,V) hold full vocabulary ids
// [vocab_start, vocab_start + V); targets (N) are full ids (< 0: ignored).
// row_max (N) = max_v logits; row_sum (N) = sum_v e^{logits - row_max};
// target_logit (N) = the target's logit when it lies in this slice, else 0.
// N >= 0, V > 0, vocab_start >= 0 (else InvalidValue).
cudaError_t cross_entropy_partial(float* row_max, float* row_sum, float* target_logit,
                                  const float* logits, const int32_t* targets, int N, int V,
                                  int vocab_start, cudaStream_t stream);
// Backend::cross_entropy_partial_backward, in place: logits (N,V) =
// scale (e^{logits - lse} - [v + vocab_start == target]); rows with a target < 0 become 0.
// lse (N) is the full rows' log-sum-exp. N >= 0, V > 0, vocab_start >= 0 (else InvalidValue).
cudaError_t cross_entropy_partial_backward(float* logits, const float* lse,
                                           const int32_t* targets, int N, int V, int vocab_start,
                                           float scale, cudaStream_t stream);
// The whole vocabulary in one slice, loss and gradient in one kernel. Per row n:
//   losses[n] = lse_n - logits[n, t_n]        (0 when t_n < 0; NaN when t_n >= V)
//   if scale != 0: logits (N,V) = scale (softmax(logits) - onehot(t_n)) in place (0 rows for
//   t_n < 0); if scale == 0 the logits are left untouched (forward only).
// Targets must be < V (the caller checks them on the host, as the CPU backend does); a target
// >= V is never read out of bounds: its loss is NaN so the error shows, and its gradient row is
// scale softmax. N >= 0, V > 0 (else InvalidValue).
cudaError_t cross_entropy_fused(float* logits, float* losses, const int32_t* targets, int N, int V,
                                float scale, cudaStream_t stream);
// cross_entropy_fused's loss and gradient with the gradient rounded to bf16 (to nearest even) into
// grad (N,V), which must not overlap the logits; the logits are only read. The bits equal
// cross_entropy_fused followed by cast_f32_to_bf16, in one pass. scale != 0, N >= 0, V > 0 (else
// InvalidValue).
cudaError_t cross_entropy_fused_bf16(__nv_bfloat16* grad, float* losses, const float* logits,
                                     const int32_t* targets, int N, int V, float scale,
                                     cudaStream_t stream);

}  // namespace nuri::cuda

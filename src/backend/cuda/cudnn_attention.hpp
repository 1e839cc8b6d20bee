#pragma once
// Causal scaled-dot-product attention (flash) through cuDNN's fused-attention engines, forward and
// backward, on the same packed layouts as kernels/cuda/attention.cuh (bf16 here, fp32 there):
//   qkv  (B,T,(H+2KV)*D) bf16, each row = [q heads | k heads | v heads]; query head h reads kv
//        head h / (H/KV); scale = 1/sqrt(D); causal (key j visible to query i iff j <= i);
//   out  (B,T,H*D) bf16;  lse (B,H,T) fp32 = log sum_j exp(scale q_i.k_j), natural log;
//   dqkv (B,T,(H+2KV)*D) bf16, overwritten (every element), from dout (B,T,H*D), qkv, out, lse.
// Q, K, V, O and the gradients reach cuDNN as 4-D (B, heads, T, D) tensors with strides into these
// buffers: nothing is copied or transposed. lse is exactly cuDNN's softmax "Stats" tensor
// (B,H,T,1) fp32 (max + log sum exp(S - max) of each masked, scaled score row), so it needs no
// conversion; see cudnn_attention.cpp for the graphs.
//
// Compiled only with NURI_WITH_CUDNN (src/CMakeLists.txt). Host-only header: it includes the CUDA
// runtime API and cuda_bf16.h for the types of its interface (cudaStream_t, __nv_bfloat16); the
// cuDNN handle is forward-declared, so callers need no cudnn.h. Not thread-safe: one object per
// stream and thread.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#if defined(NURI_WITH_CUDNN)
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

struct cudnnContext;

namespace nuri::cuda {

class CudnnAttention {
 public:
  // Creates the cuDNN handle bound to `stream`. Never throws: when the handle cannot be created
  // (no device, cuDNN missing), every call returns cudaErrorNotSupported and last_error() says why.
  explicit CudnnAttention(cudaStream_t stream);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Whether this process can use the path at all: cuDNN >= 9.0 loaded and the current device is
  // sm_80 or newer. On false, *why (when non-null) says what is missing.
  static bool available(std::string* why);

  // out (B,T,H*D) and lse (B,H,T) from qkv (B,T,(H+2KV)*D), enqueued on the stream.
  // Returns cudaSuccess; cudaErrorInvalidValue for bad arguments (B, T < 0, H or KV <= 0,
  // H % KV != 0, null pointers); cudaErrorNotSupported when cuDNN refuses the shape or the device
  // (D not a multiple of 8, D too large, pre-sm_80, no engine for the graph, pointers not 16-byte
  // aligned): then nothing was written and the caller should fall back to its own kernel;
  // cudaErrorMemoryAllocation when the workspace cannot grow. last_error() explains any failure.
  // B == 0 or T == 0 does nothing. The first call per shape builds the graph and plan (slow:
  // cuDNN may compile a kernel at runtime); later calls reuse them. A shape cuDNN refused is
  // remembered and refused again at once. When a plan needs more workspace than is held, the
  // call synchronizes the stream, frees and re-allocates it (so warm shapes up before capturing
  // a CUDA graph).
  cudaError_t forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T, int H,
                      int KV, int D);

  // dqkv (B,T,(H+2KV)*D) overwritten from dout (B,T,H*D), qkv, out and lse of the forward.
  // Same errors and caching as forward(). Needs workspace for the row sums dO.O (B*H*T fp32) and
  // an fp32 dQ accumulator (B*H*T*D) besides cuDNN's own.
  cudaError_t backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                       const __nv_bfloat16* out, const float* lse, int B, int T, int H, int KV,
                       int D);

  // What the last failing call failed on: the cuDNN or CUDA call, its status and the shape.
  const std::string& last_error() const { return last_error_; }

  // Bytes of device workspace held now (grows to the largest plan's need, never shrinks).
  size_t workspace_bytes() const { return workspace_bytes_; }

  struct Plan;  // one finalized graph + execution plan (cudnn_attention.cpp)

 private:
  using Key = std::tuple<int, int, int, int, int, bool>;  // B, T, H, KV, D, backward
  // The cached plan for `key`, built on first use; null (and last_error_ set) when cuDNN refuses.
  Plan* plan_for(const Key& key);
  cudaError_t check_args(const char* op, const void* const* pointers, int count, int B, int T,
                         int H, int KV, int D);
  cudaError_t ensure_workspace(size_t bytes);

  cudaStream_t stream_ = nullptr;
  cudnnContext* handle_ = nullptr;
  std::string init_error_;  // why the handle could not be created
  std::string last_error_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<Key, std::string> refused_;  // shapes cuDNN refused, with why (not retried)
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace nuri::cuda

#endif  // NURI_WITH_CUDNN

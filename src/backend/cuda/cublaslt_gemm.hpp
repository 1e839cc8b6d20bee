#pragma once
// cuBLASLt behind the interface of our bf16 GEMM (kernels/cuda/gemm.cuh, gemm_bf16): the same
// arguments, the same row-major meaning, the same epilogues, so GemmDispatch (gemm_dispatch.hpp)
// can pick either per shape and fall back to ours whenever cuBLASLt refuses a call.
//
//   C (M,N) fp32 = epilogue(alpha * op(A) op(B) [+ beta * C]),  A, B bf16, fp32 accumulation.
//   none       C = acc + beta C
//   bias       C = acc + bias[col] + beta C                          (bias: N floats)
//   bias_gelu  pre = acc + bias[col] + beta C; C = gelu_tanh(pre); pre -> pre_gelu if non-null
//
// Host C++ (compiled by the host compiler into libnuri); owns one cublasLtHandle_t and a 32 MiB
// workspace on the device that was current at construction. Not thread-safe, and the workspace
// is shared by every call: use one CublasLtGemm per stream (GemmDispatch does).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gemm.cuh"  // the launcher and GemmEpilogue (host compilers get its declarations only)

namespace nuri::cuda {

// "none" / "bias" / "bias_gelu" (the names of gemm_table.hpp).
const char* gemm_epilogue_name(GemmEpilogue epilogue);

class CublasLtGemm {
 public:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // 32 MiB, enough for split-K on H100

  // Creates the cuBLASLt handle and allocates the workspace on the current device. Does not
  // throw: a failure is kept, ok() is false, and every run() returns it with last_error() saying
  // what failed.
  CublasLtGemm();
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  bool ok() const { return init_status_ == cudaSuccess; }

  // The product of gemm_bf16 with the same arguments (gemm.cuh), by cuBLASLt, enqueued on
  // `stream`. Returns cudaSuccess, or:
  //   cudaErrorInvalidValue   bad arguments (negative size, stride shorter than the row, null
  //                           matrix, bias epilogue without a bias); ours would refuse them too;
  //   cudaErrorNotSupported   cuBLASLt cannot do this call (see "what cuBLASLt cannot do" in
  //                           cublaslt_gemm.cpp, or no algorithm found): use ours instead;
  //   another cudaError_t     cuBLASLt or CUDA failed (allocation, execution, initialisation).
  // On any error nothing was enqueued, except for an execution failure, and last_error() holds a
  // sentence naming the call's shape and the cuBLASLt status. M = 0 or N = 0 does nothing.
  cudaError_t run(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                  const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                  float* C, int ldc, const float* bias, GemmEpilogue epilogue, float* pre_gelu,
                  cudaStream_t stream);

  // The message of the last failed run() (or of the construction); empty if none failed yet.
  const std::string& last_error() const { return last_error_; }
  // How many distinct (shape, layout, epilogue, strides, alignment) plans are cached.

 private:
  // Everything that decides the descriptors and the algorithm. Alignments (bytes, a power of two
  // up to 256) are part of it: the heuristic picks algorithms for the pointers it is shown.
  struct Key {
    bool trans_a, trans_b;
    int M, N, K, lda, ldb, ldc;
    uint32_t lt_epilogue;
    uint32_t align_a, align_b, align_c, align_bias, align_aux;
    bool operator<(const Key& o) const;
  };
  struct Plan;  // descriptors + algorithm, or the reason cuBLASLt refused (cublaslt_gemm.cpp)
  struct PlanDeleter {
    void operator()(Plan* p) const;
  };

  cudaError_t fail(cudaError_t code, const std::string& message);
  cudaError_t make_plan(const Key& key, const float* bias, float* pre_gelu, const std::string& what,
                        std::unique_ptr<Plan, PlanDeleter>& out);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;  // kWorkspaceBytes on the device
  cudaError_t init_status_ = cudaSuccess;
  std::string last_error_;
  std::map<Key, std::unique_ptr<Plan, PlanDeleter>> plans_;
};

}  // namespace nuri::cuda

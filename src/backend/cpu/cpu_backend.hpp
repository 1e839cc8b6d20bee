#pragma once
// The CPU backend: the reference implementation of every op, and a fast one. OpenMP across the
// node's cores; matrix products through cpu::sgemm (OpenBLAS's OpenMP build or Eigen: one
// thread pool either way).
// One op per file in this folder: gemm.cpp (gemm, linear), layernorm.cpp, rmsnorm.cpp, gelu.cpp,
// swiglu.cpp, rope.cpp, attention.cpp, embedding.cpp, cross_entropy.cpp,
// cross_entropy_partial.cpp, adamw.cpp.
#include "nuri/backend.hpp"

namespace nuri {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  std::string name() const override { return "cpu"; }
  int threads() const override { return threads_; }
  std::string describe() const override;

  float* alloc(size_t count) override;
  void free(float* ptr) override;
  void zero(float* ptr, size_t count) override;
  void copy(float* dst, const float* src, size_t count) override;

  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override;
  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int IC, int OC, bool accumulate) override;
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int IC, int OC) override;
  void add(float* out, const float* a, const float* b, size_t n) override;
  void scale(float* x, float s, size_t n) override;
  double sum_squares(const float* x, size_t n) override;

  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C, float eps) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override;
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                       float eps) override;
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                        const float* weight, const float* rstd, int N, int C) override;

  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void swiglu_forward(float* out, const float* inp, int N, int F) override;
  void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) override;

  void rope(float* x, int B, int T, int nh, int D, int row_stride, float theta,
            bool inverse) override;

  void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int KV,
                         int D) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, int B, int T, int H, int KV, int D) override;

  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                         int N, int T, int C) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                          int N, int T, int C) override;

  double lm_head_cross_entropy(float* dx, float* dweight, const float* x, const float* weight,
                               const int32_t* targets, int N, int C, int V,
                               float grad_scale) override;
  void lm_head_logits(float* logits, const float* x, const float* weight, int N, int C,
                      int V) override;
  void cross_entropy_partial(float* row_max, float* row_sum, float* target_logit,
                             const float* logits, const int32_t* targets, int N, int V,
                             int vocab_start) override;
  void cross_entropy_partial_backward(float* logits, const float* lse, const int32_t* targets,
                                      int N, int V, int vocab_start, float scale) override;

  void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int step,
                    float grad_scale) override;

  // The bf16 activation ops: Backend's defaults (the fp32 ops above between conversions).
  using Backend::attention_backward;
  using Backend::attention_forward;
  using Backend::gelu_backward;
  using Backend::layernorm_forward;
  using Backend::linear_backward;
  using Backend::linear_forward;
  using Backend::rmsnorm_forward;
  using Backend::rope;
  using Backend::swiglu_backward;
  using Backend::swiglu_forward;

 private:
  int threads_;
};

// Default threads for this process: cores of this node divided by the MPI ranks on this node
// (from OMPI_COMM_WORLD_LOCAL_SIZE and friends), at least 1.
int default_cpu_threads();

}  // namespace nuri

#pragma once
// Host-side wrappers around the CUDA launchers (gpu_runs.cu, compiled by nvcc): each copies its
// inputs to the device, runs one kernel and copies the results back, so that test_gpu.cpp (plain
// C++20) can compare them with the CPU backend. Each throws std::runtime_error naming the CUDA
// error.
#include <cstdint>
#include <vector>

namespace nuri::gpu_test {

int device_count();                      // 0 when there is no usable device (no driver, no GPU)
const char* device_name();               // the first device's name

std::vector<float> gelu_forward(const std::vector<float>& x);
std::vector<float> gelu_backward(const std::vector<float>& x, const std::vector<float>& dy);
std::vector<float> swiglu_forward(const std::vector<float>& x, int N, int F);
// out, rstd
void rmsnorm_forward(std::vector<float>& out, std::vector<float>& rstd, const std::vector<float>& x,
                     const std::vector<float>& w, int N, int C, float eps);
// dx and dw start as given and are accumulated into
void rmsnorm_backward(std::vector<float>& dx, std::vector<float>& dw, const std::vector<float>& dy,
                      const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& rstd,
                      int N, int C);
void layernorm_forward(std::vector<float>& out, std::vector<float>& mean, std::vector<float>& rstd,
                       const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                       int N, int C, float eps);
std::vector<float> embedding_forward(const std::vector<int32_t>& tokens, const std::vector<float>& wte,
                                     const std::vector<float>& wpe, int N, int T, int C);
void adamw_update(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m,
                  std::vector<float>& v, float lr, float b1, float b2, float eps, float wd, int step,
                  float grad_scale);

// out (B,T,H*D), lse (B,H,T) from qkv (B,T,(H+2KV)*D); then dqkv from dout.
void attention(std::vector<float>& out, std::vector<float>& lse, std::vector<float>& dqkv,
               const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int H, int KV, int D);

// C (M,N), row stride ldc, = epilogue(alpha op(A) op(B) + beta C) by cuda::gemm_bf16 (C starts as
// given). A ((M,K), or (K,M) when trans_a; stride lda) and B ((K,N), or (N,K); stride ldb) are
// rounded to bf16 on the way to the device (pass bf16-representable values to compare against an
// fp32 reference). epilogue: 0 none, 1 bias, 2 bias_gelu (cuda::GemmEpilogue); bias (N) may be
// empty (null); pre_gelu, when non-null, receives the pre-activation (resized like C).
void gemm_bf16(std::vector<float>& C, std::vector<float>* pre_gelu, bool trans_a, bool trans_b, int M,
               int N, int K, float alpha, const std::vector<float>& A, int lda, const std::vector<float>& B,
               int ldb, float beta, int ldc, const std::vector<float>& bias, int epilogue);

}  // namespace nuri::gpu_test

// Host-side wrappers that run nuri's CUDA kernels on the device for test_gpu.cpp (see
// gpu_runs.cuh). Compiled by nvcc with the kernels (nuri_cuda_kernels); only in builds with CUDA.
#include "gpu_runs.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "adamw.cuh"
#include "attention.cuh"
#include "embedding.cuh"
#include "gelu.cuh"
#include "gemm.cuh"
#include "layernorm.cuh"
#include "rmsnorm.cuh"
#include "swiglu.cuh"

namespace nuri::gpu_test {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device copy of a host vector, copied back by get().
template <class T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& h) : n_(h.size()) {
    check(cudaMalloc(&p_, (n_ ? n_ : 1) * sizeof(T)), "cudaMalloc");
    if (n_) check(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  explicit Dev(size_t n) : Dev(std::vector<T>(n)) {}
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() { return p_; }
  std::vector<T> host() const {
    std::vector<T> h(n_);
    if (n_) check(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

void done(cudaError_t launch, const char* what) {
  check(launch, what);
  check(cudaDeviceSynchronize(), what);
}

}  // namespace

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

const char* device_name() {
  static cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return prop.name;
}

std::vector<float> gelu_forward(const std::vector<float>& x) {
  Dev<float> in(x), out(x.size());
  done(cuda::gelu_forward(out.get(), in.get(), x.size(), nullptr), "gelu_forward");
  return out.host();
}

std::vector<float> gelu_backward(const std::vector<float>& x, const std::vector<float>& dy) {
  Dev<float> in(x), d(dy), dx(x.size());
  done(cuda::gelu_backward(dx.get(), in.get(), d.get(), x.size(), nullptr), "gelu_backward");
  return dx.host();
}

std::vector<float> swiglu_forward(const std::vector<float>& x, int N, int F) {
  Dev<float> in(x), out(size_t(N) * F);
  done(cuda::swiglu_forward(out.get(), in.get(), N, F, nullptr), "swiglu_forward");
  return out.host();
}

void rmsnorm_forward(std::vector<float>& out, std::vector<float>& rstd, const std::vector<float>& x,
                     const std::vector<float>& w, int N, int C, float eps) {
  Dev<float> in(x), wt(w), o(size_t(N) * C), r{size_t(N)};
  done(cuda::rmsnorm_forward(o.get(), r.get(), in.get(), wt.get(), N, C, eps, nullptr), "rmsnorm_forward");
  out = o.host();
  rstd = r.host();
}

void rmsnorm_backward(std::vector<float>& dx, std::vector<float>& dw, const std::vector<float>& dy,
                      const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& rstd,
                      int N, int C) {
  Dev<float> ddx(dx), ddw(dw), d(dy), in(x), wt(w), r(rstd);
  done(cuda::rmsnorm_backward(ddx.get(), ddw.get(), d.get(), in.get(), wt.get(), r.get(), N, C, nullptr),
       "rmsnorm_backward");
  dx = ddx.host();
  dw = ddw.host();
}

void layernorm_forward(std::vector<float>& out, std::vector<float>& mean, std::vector<float>& rstd,
                       const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                       int N, int C, float eps) {
  Dev<float> in(x), wt(w), bs(b), o(size_t(N) * C), m{size_t(N)}, r{size_t(N)};
  done(cuda::layernorm_forward(o.get(), m.get(), r.get(), in.get(), wt.get(), bs.get(), N, C, eps, nullptr),
       "layernorm_forward");
  out = o.host();
  mean = m.host();
  rstd = r.host();
}

std::vector<float> embedding_forward(const std::vector<int32_t>& tokens, const std::vector<float>& wte,
                                     const std::vector<float>& wpe, int N, int T, int C) {
  Dev<int32_t> tok(tokens);
  Dev<float> e(wte), p(wpe), out(size_t(N) * C);
  done(cuda::embedding_forward(out.get(), tok.get(), e.get(), p.get(), N, T, C, nullptr), "embedding_forward");
  return out.host();
}

void adamw_update(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m,
                  std::vector<float>& v, float lr, float b1, float b2, float eps, float wd, int step,
                  float grad_scale) {
  Dev<float> dp(p), dg(g), dm(m), dv(v);
  done(cuda::adamw_update(dp.get(), dg.get(), dm.get(), dv.get(), p.size(), lr, b1, b2, eps, wd, step, grad_scale,
                          nullptr),
       "adamw_update");
  p = dp.host();
  m = dm.host();
  v = dv.host();
}

void attention(std::vector<float>& out, std::vector<float>& lse, std::vector<float>& dqkv,
               const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int H, int KV, int D) {
  Dev<float> in(qkv), o{size_t(B) * T * H * D}, l{size_t(B) * H * T}, d(dout), dq{qkv.size()};
  done(cuda::attention_forward(o.get(), l.get(), in.get(), B, T, H, KV, D, nullptr), "attention_forward");
  done(cuda::attention_backward(dq.get(), d.get(), in.get(), o.get(), l.get(), B, T, H, KV, D, nullptr),
       "attention_backward");
  out = o.host();
  lse = l.host();
  dqkv = dq.host();
}

void gemm_bf16(std::vector<float>& C, std::vector<float>* pre_gelu, bool trans_a, bool trans_b, int M,
               int N, int K, float alpha, const std::vector<float>& A, int lda, const std::vector<float>& B,
               int ldb, float beta, int ldc, const std::vector<float>& bias, int epilogue) {
  std::vector<__nv_bfloat16> a(A.size()), b(B.size());
  for (size_t i = 0; i < A.size(); ++i) a[i] = __float2bfloat16_rn(A[i]);
  for (size_t i = 0; i < B.size(); ++i) b[i] = __float2bfloat16_rn(B[i]);
  Dev<__nv_bfloat16> da(a), db(b);
  Dev<float> dc(C), dbias(bias), dpre(pre_gelu ? C.size() : 0);
  done(cuda::gemm_bf16(trans_a, trans_b, M, N, K, alpha, da.get(), lda, db.get(), ldb, beta, dc.get(), ldc,
                       bias.empty() ? nullptr : dbias.get(), static_cast<cuda::GemmEpilogue>(epilogue),
                       pre_gelu ? dpre.get() : nullptr, nullptr),
       "gemm_bf16");
  C = dc.host();
  if (pre_gelu) *pre_gelu = dpre.host();
}

}  // namespace nuri::gpu_test

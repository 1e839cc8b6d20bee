// make_backend, the one place that maps a backend name to an implementation; and the Backend
// ops with a default: the host-side bf16 conversions, and the bf16 activation ops as their fp32
// twins between conversions.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#if defined(NURI_WITH_CUDA)
#include "backend/cuda/cuda_backend.hpp"
#endif
#include "nuri/backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

void Backend::to_bf16(bf16_t* dst, const float* src, size_t n) {
  synchronize();  // the host reads src
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_round(src[i]);
}

void Backend::to_fp32(float* dst, const bf16_t* src, size_t n) {
  synchronize();
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_widen(src[i]);
}

// ---- the bf16 activation ops' defaults: widen, the fp32 op, round ----
namespace {

// fp32 temporaries for one default op. Where the backend takes host buffers they are host vectors
// kept per thread (a training loop then does not fault in fresh pages at every op; they hold the
// largest temporaries seen); elsewhere buffers from alloc(), freed when the op ends. One Temps per
// thread at a time (the defaults do not nest).
class Temps {
 public:
  explicit Temps(Backend& be) : be_(be), host_(be.accepts_host_buffers()) {}
  ~Temps() {
    for (float* p : owned_) be_.free(p);
  }
  Temps(const Temps&) = delete;
  Temps& operator=(const Temps&) = delete;

  float* get(size_t n) {
    if (host_) {
      thread_local std::vector<std::vector<float>> pool;
      if (pool.size() <= used_) pool.emplace_back();
      std::vector<float>& v = pool[used_++];
      if (v.size() < n) v.resize(n);
      return v.data();
    }
    owned_.push_back(be_.alloc(std::max<size_t>(n, 1)));
    return owned_.back();
  }
  // A temporary holding src (n) widened.
  float* widen(const bf16_t* src, size_t n) {
    float* p = get(n);
    be_.to_fp32(p, src, n);
    return p;
  }

 private:
  Backend& be_;
  bool host_;
  size_t used_ = 0;
  std::vector<float*> owned_;
};

}  // namespace

void Backend::layernorm_forward(bf16_t* out, float* mean, float* rstd, const float* inp, const float* weight,
                                const float* bias, int N, int C, float eps) {
  const size_t n = size_t(N) * size_t(C);
  Temps t(*this);
  float* y = t.get(n);
  layernorm_forward(y, mean, rstd, inp, weight, bias, N, C, eps);
  to_bf16(out, y, n);
}

void Backend::rmsnorm_forward(bf16_t* out, float* rstd, const float* inp, const float* weight, int N, int C,
                              float eps) {
  const size_t n = size_t(N) * size_t(C);
  Temps t(*this);
  float* y = t.get(n);
  rmsnorm_forward(y, rstd, inp, weight, N, C, eps);
  to_bf16(out, y, n);
}

void Backend::linear_forward(bf16_t* out, const bf16_t* inp, const float* weight, const float* bias, int N,
                             int IC, int OC) {
  Temps t(*this);
  const float* x = t.widen(inp, size_t(N) * size_t(IC));
  float* y = t.get(size_t(N) * size_t(OC));
  linear_forward(y, x, weight, bias, N, IC, OC, false);
  to_bf16(out, y, size_t(N) * size_t(OC));
}

void Backend::linear_forward(float* out, const bf16_t* inp, const float* weight, const float* bias, int N, int IC,
                             int OC, bool accumulate) {
  Temps t(*this);
  linear_forward(out, t.widen(inp, size_t(N) * size_t(IC)), weight, bias, N, IC, OC, accumulate);
}

void Backend::linear_gelu_forward(bf16_t* pre, bf16_t* out, const bf16_t* inp, const float* weight,
                                  const float* bias, int N, int IC, int OC) {
  const size_t n = size_t(N) * size_t(OC);
  Temps t(*this);
  const float* x = t.widen(inp, size_t(N) * size_t(IC));
  float* p = t.get(n);
  float* y = t.get(n);
  linear_gelu_forward(p, y, x, weight, bias, N, IC, OC);
  to_bf16(pre, p, n);
  to_bf16(out, y, n);
}

void Backend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const bf16_t* inp,
                              const float* weight, int N, int IC, int OC) {
  Temps t(*this);
  linear_backward(dinp, dweight, dbias, dout, t.widen(inp, size_t(N) * size_t(IC)), weight, N, IC, OC);
}

void Backend::gelu_backward(float* dinp, const bf16_t* inp, const float* dout, size_t n) {
  Temps t(*this);
  gelu_backward(dinp, t.widen(inp, n), dout, n);
}

void Backend::swiglu_forward(bf16_t* out, const bf16_t* inp, int N, int F) {
  const size_t n = size_t(N) * size_t(F);
  Temps t(*this);
  const float* x = t.widen(inp, 2 * n);
  float* y = t.get(n);
  swiglu_forward(y, x, N, F);
  to_bf16(out, y, n);
}

void Backend::swiglu_backward(float* dinp, const bf16_t* inp, const float* dout, int N, int F) {
  Temps t(*this);
  swiglu_backward(dinp, t.widen(inp, 2 * size_t(N) * size_t(F)), dout, N, F);
}

void Backend::rope(bf16_t* x, int B, int T, int nh, int D, int row_stride, float theta) {
  if (B <= 0 || T <= 0 || nh <= 0) return;
  // The span from the first row's first head to the last row's last: the values between the
  // rotated heads (other heads of the row) are widened and rounded back unchanged.
  const size_t span = (size_t(B) * size_t(T) - 1) * size_t(row_stride) + size_t(nh) * size_t(D);
  Temps t(*this);
  float* y = t.widen(x, span);
  rope(y, B, T, nh, D, row_stride, theta, false);
  to_bf16(x, y, span);
}

void Backend::attention_forward(bf16_t* out, float* lse, const bf16_t* qkv, int B, int T, int H, int KV, int D) {
  const size_t rows = size_t(B) * size_t(T);
  Temps t(*this);
  const float* q = t.widen(qkv, rows * size_t(H + 2 * KV) * size_t(D));
  float* o = t.get(rows * size_t(H) * size_t(D));
  attention_forward(o, lse, q, B, T, H, KV, D);
  to_bf16(out, o, rows * size_t(H) * size_t(D));
}

void Backend::attention_backward(float* dqkv, const float* dout, const bf16_t* qkv, const bf16_t* out,
                                 const float* lse, int B, int T, int H, int KV, int D) {
  const size_t rows = size_t(B) * size_t(T);
  Temps t(*this);
  const float* q = t.widen(qkv, rows * size_t(H + 2 * KV) * size_t(D));
  const float* o = t.widen(out, rows * size_t(H) * size_t(D));
  attention_backward(dqkv, dout, q, o, lse, B, T, H, KV, D);
}

std::unique_ptr<Backend> make_backend(const std::string& name, int threads,
                                      const std::string& cpu_gemm) {
  if (name == "cpu") {
    cpu::set_gemm_library(cpu::resolve_gemm_library(cpu_gemm.c_str()));
    return std::make_unique<CpuBackend>(threads <= 0 ? default_cpu_threads() : threads);
  }
  if (name == "cuda") {
#if defined(NURI_WITH_CUDA)
    (void)threads;
    return cuda::make_cuda_backend(-1);
#else
    NURI_THROW(backend, "make_backend",
               "backend = \"cuda\" but this build of nuri has no CUDA backend (it was built without nvcc: "
               "install the CUDA toolkit and rebuild, scripts/test.sh shows how), or set backend = \"cpu\"");
#endif
  }
  NURI_THROW(config, "make_backend",
             "unknown backend '" << name << "'; the backends are \"cpu\" and \"cuda\"");
}

}  // namespace nuri

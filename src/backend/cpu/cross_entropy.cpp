// Softmax cross-entropy fused with the LM head, and the plain LM-head logits.
//   lm_head_cross_entropy: x (N,C), weight (V,C), targets (N) (< 0: ignored)
//     logits = x W^T;  lse_n = log sum_v e^{logits_nv};  loss = sum_{n: t_n >= 0} lse_n - logits_{n,t_n}
//     dlogits = grad_scale (softmax(logits) - onehot(t))   (zero rows for ignored targets)
//     dx (N,C) = dlogits W;  dW (V,C) += dlogits^T x        (only when dx is non-null)
//   Rows go in chunks of Rc = max(16, min(N, kLmHeadChunkFloats / V)), so only a (Rc, V) block of
//   logits exists at a time (128 MB at most for V <= 2M); the block's gradient overwrites it.
//   lm_head_logits: logits (N,V) = x W^T.
// Threading: the three GEMMs per chunk are called outside OpenMP regions, so the GEMM library uses the
// whole pool; the softmax rows between them are an OpenMP loop with exp_poly vectorized.
// The loss is summed in double. The chunk buffer is kept per thread and reused across calls (the
// LM head runs every micro-batch; allocating and first-touching 128 MB each time costs ms).
// Constraints: targets < V, checked up front (Error(data) naming the row).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#include "backend/cpu/exp_poly.hpp"
#include "backend/lm_head.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {
constexpr int kSumBlock = 1024;                    // softmax-sum block, in fp32 within a block
}  // namespace

double CpuBackend::lm_head_cross_entropy(float* dx, float* dweight, const float* x,
                                         const float* weight, const int32_t* targets, int N,
                                         int C, int V, float grad_scale) {
  NURI_CHECK(N >= 0 && C > 0 && V > 0, shape, "lm_head_cross_entropy",
             "bad sizes N=" << N << " C=" << C << " V=" << V);
  check_lm_head_targets(targets, N, V);
  if (N == 0) return 0.0;
  const int chunk = lm_head_chunk_rows(N, size_t(V));
  thread_local std::vector<float> buffer;
  const size_t need = size_t(std::min(chunk, N)) * V;
  if (buffer.size() < need) buffer.resize(need);
  float* logits = buffer.data();  // (rows, V)

  double loss_sum = 0.0;
  for (int n0 = 0; n0 < N; n0 += chunk) {
    const int rows = std::min(chunk, N - n0);
    const float* xc = x + size_t(n0) * C;
    // logits (rows, V) = x_c (rows, C) W^T (C, V)
    cpu::sgemm(false, true, rows, V, C, 1.0f, xc, C, weight, C, 0.0f,
                logits, V);
    double chunk_loss = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : chunk_loss)
    for (int r = 0; r < rows; ++r) {
      float* __restrict l = logits + size_t(r) * V;
      const int t = targets[n0 + r];
      if (t < 0) {
        if (dx) std::fill_n(l, V, 0.0f);  // no gradient from an ignored row
        continue;
      }
      float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
      for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
      const float target_logit = l[t];
      // l becomes e^{l - max}, which is also the unnormalized softmax the gradient needs.
      // The sum runs over the whole vocabulary, so it is kept in double across blocks of
      // kSumBlock (fp32 partial sums of ~10^5 terms would be off by ~1e-4 where few SIMD lanes).
      double sum = 0.0;
      for (int v0 = 0; v0 < V; v0 += kSumBlock) {
        const int v1 = std::min(V, v0 + kSumBlock);
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int v = v0; v < v1; ++v) {
          const float e = exp_poly(l[v] - mx);
          l[v] = e;
          part += e;
        }
        sum += part;
      }
      chunk_loss += double(mx) + std::log(sum) - double(target_logit);
      if (dx) {
        const float k = float(grad_scale / sum);
#pragma omp simd
        for (int v = 0; v < V; ++v) l[v] *= k;
        l[t] -= grad_scale;
      }
    }
    loss_sum += chunk_loss;
    if (dx) {
      // dx_c (rows, C) = dlogits (rows, V) W (V, C)
      cpu::sgemm(false, false, rows, C, V, 1.0f, logits, V, weight,
                  C, 0.0f, dx + size_t(n0) * C, C);
      // dW (V, C) += dlogits^T (V, rows) x_c (rows, C)
      if (dweight) {
        cpu::sgemm(true, false, V, C, rows, 1.0f, logits, V, xc, C,
                    1.0f, dweight, C);
      }
    }
  }
  return loss_sum;
}

void CpuBackend::lm_head_logits(float* logits, const float* x, const float* weight, int N, int C,
                                int V) {
  NURI_CHECK(N >= 0 && C > 0 && V > 0, shape, "lm_head_logits",
             "bad sizes N=" << N << " C=" << C << " V=" << V);
  if (N == 0) return;
  // logits (N, V) = x (N, C) W^T (C, V)
  cpu::sgemm(false, true, N, V, C, 1.0f, x, C, weight, C, 0.0f,
              logits, V);
}

}  // namespace nuri

// Softmax cross-entropy over a slice of the vocabulary, the two local halves of the
// vocabulary-parallel loss (the model combines the ranks' statistics in between):
//   logits (N,V) hold full vocabulary ids [vocab_start, vocab_start + V); targets (N) are full ids
//   (< 0: ignored row).
//   cross_entropy_partial:  row_max[n] = max_v logits[n,v]
//                           row_sum[n] = sum_v e^{logits[n,v] - row_max[n]}
//                           target_logit[n] = logits[n, t_n - vocab_start] if t_n is in the slice, else 0
//   The ranks' pieces combine as  M = max_r row_max_r,  S = sum_r row_sum_r e^{row_max_r - M},
//   lse = M + log S,  loss_n = lse_n - sum_r target_logit_r.
//   cross_entropy_partial_backward (in place):
//     logits[n,v] = scale (e^{logits[n,v] - lse[n]} - [v + vocab_start == t_n]);  0 for ignored rows
// Threading: OpenMP over rows; exp_poly vectorized as in the fused LM head (cross_entropy.cpp).
// The row sum is kept in double across blocks of 1024 (fp32 partial sums within a block).
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/exp_poly.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {
constexpr int kSumBlock = 1024;

void check_sizes(const char* op, int N, int V, int vocab_start) {
  NURI_CHECK(N >= 0 && V > 0 && vocab_start >= 0, shape, op,
             "bad sizes N=" << N << " V=" << V << " vocab_start=" << vocab_start);
}
}  // namespace

void CpuBackend::cross_entropy_partial(float* row_max, float* row_sum, float* target_logit,
                                       const float* logits, const int32_t* targets, int N, int V,
                                       int vocab_start) {
  check_sizes("cross_entropy_partial", N, V, vocab_start);
#pragma omp parallel for schedule(static) if (size_t(N) * V >= 65536)
  for (int n = 0; n < N; ++n) {
    const float* __restrict l = logits + size_t(n) * V;
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    double sum = 0.0;
    for (int v0 = 0; v0 < V; v0 += kSumBlock) {
      const int v1 = std::min(V, v0 + kSumBlock);
      float part = 0.0f;
#pragma omp simd reduction(+ : part)
      for (int v = v0; v < v1; ++v) part += exp_poly(l[v] - mx);
      sum += part;
    }
    row_max[n] = mx;
    row_sum[n] = float(sum);
    const int64_t t = int64_t(targets[n]) - vocab_start;
    target_logit[n] = targets[n] >= 0 && t >= 0 && t < V ? l[t] : 0.0f;
  }
}

void CpuBackend::cross_entropy_partial_backward(float* logits, const float* lse,
                                                const int32_t* targets, int N, int V,
                                                int vocab_start, float scale) {
  check_sizes("cross_entropy_partial_backward", N, V, vocab_start);
#pragma omp parallel for schedule(static) if (size_t(N) * V >= 65536)
  for (int n = 0; n < N; ++n) {
    float* __restrict l = logits + size_t(n) * V;
    if (targets[n] < 0) {
      std::fill_n(l, V, 0.0f);
      continue;
    }
    const float m = lse[n];
#pragma omp simd
    for (int v = 0; v < V; ++v) l[v] = scale * exp_poly(l[v] - m);
    const int64_t t = int64_t(targets[n]) - vocab_start;
    if (t >= 0 && t < V) l[t] -= scale;
  }
}

}  // namespace nuri

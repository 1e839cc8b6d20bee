// Token (+ learned position) embedding.
//   forward:  out (N,C) = wte[tokens[n]] (+ wpe[n % T] when wpe is non-null);  wte (V,C), wpe (T,C)
//   backward: dwte[tokens[n]] += dout[n];  dwpe[n % T] += dout[n]  (dwpe may be null)
// Threading: the forward is parallel over rows. The backward is a scatter-add where rows with the
// same token hit the same dwte row, so it is parallel over CHANNEL ranges instead: each thread
// owns columns [lo, hi) of every dwte/dwpe row and walks all N rows in order. No two threads
// write the same float, there are no atomics, and the summation order (n ascending) does not
// depend on the thread count, so the result is bitwise reproducible.
// A negative token contributes no wte row: its output row is wpe only (or zero), and it adds no
// dwte gradient (dwpe still gets it). The vocabulary-parallel embedding marks the tokens of
// other ranks' vocabulary slices so. Constraints: tokens < V (V is the caller's; the model
// checks its inputs).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

void CpuBackend::embedding_forward(float* out, const int32_t* tokens, const float* wte,
                                   const float* wpe, int N, int T, int C) {
  NURI_CHECK(N >= 0 && T > 0 && C > 0, shape, "embedding_forward",
             "bad sizes N=" << N << " T=" << T << " C=" << C);
#pragma omp parallel for schedule(static) if (size_t(N) * C >= 16384)
  for (int n = 0; n < N; ++n) {
    float* __restrict y = out + size_t(n) * C;
    if (tokens[n] < 0) {  // another rank's vocabulary slice
      if (wpe) {
        std::memcpy(y, wpe + size_t(n % T) * C, sizeof(float) * C);
      } else {
        std::memset(y, 0, sizeof(float) * C);
      }
      continue;
    }
    const float* __restrict e = wte + size_t(tokens[n]) * C;
    if (wpe) {
      const float* __restrict p = wpe + size_t(n % T) * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = e[c] + p[c];
    } else {
      std::memcpy(y, e, sizeof(float) * C);
    }
  }
}

void CpuBackend::embedding_backward(float* dwte, float* dwpe, const float* dout,
                                    const int32_t* tokens, int N, int T, int C) {
  NURI_CHECK(N >= 0 && T > 0 && C > 0, shape, "embedding_backward",
             "bad sizes N=" << N << " T=" << T << " C=" << C);
#pragma omp parallel if (size_t(N) * C >= 16384)
  {
    // Columns of this thread, on 16-float (64-byte) boundaries so no cache line is shared.
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int lines = (C + 15) / 16;
    const int lo = std::min(C, 16 * (lines * tid / nt));
    const int hi = std::min(C, 16 * (lines * (tid + 1) / nt));
    for (int n = 0; n < N && lo < hi; ++n) {
      const float* __restrict dy = dout + size_t(n) * C;
      if (tokens[n] >= 0) {
        float* __restrict de = dwte + size_t(tokens[n]) * C;
#pragma omp simd
        for (int c = lo; c < hi; ++c) de[c] += dy[c];
      }
      if (dwpe) {
        float* __restrict dp = dwpe + size_t(n % T) * C;
#pragma omp simd
        for (int c = lo; c < hi; ++c) dp[c] += dy[c];
      }
    }
  }
}

}  // namespace nuri

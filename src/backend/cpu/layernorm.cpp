// LayerNorm over the last dimension.
//   forward:  mean_n = sum_c x/C;  rstd_n = 1/sqrt(sum_c (x - mean)^2/C + eps)   (biased variance)
//             xhat = (x - mean) rstd;  out (N,C) = xhat w + b        (b may be null)
//   backward: g = dout w;  dinp (N,C) += rstd (g - mean_c(g) - xhat mean_c(g xhat))
//             dw (C) += sum_n dout xhat;  db (C) += sum_n dout       (db may be null)
// Threading: OpenMP static schedule over rows. The parameter gradients are summed into one
// C-length buffer per thread, then those buffers are added up (parallel over columns): no atomics,
// and the result does not depend on which thread ran which rows beyond the fixed static split.
// Row statistics in fp32 with a two-pass variance (no E[x^2] - E[x]^2 cancellation).
#include <omp.h>

#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* weight, const float* bias, int N, int C,
                                   float eps) {
  NURI_CHECK(N >= 0 && C > 0, shape, "layernorm_forward", "bad sizes N=" << N << " C=" << C);
  const float* __restrict w = weight;
  const float* __restrict b = bias;
#pragma omp parallel for schedule(static) if (size_t(N) * C >= 16384)
  for (int n = 0; n < N; ++n) {
    const float* __restrict x = inp + size_t(n) * C;
    float* __restrict y = out + size_t(n) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum / C;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    const float rs = 1.0f / std::sqrt(var / C + eps);
    if (b) {
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * rs * w[c] + b[c];
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * rs * w[c];
    }
    mean[n] = m;
    rstd[n] = rs;
  }
}

void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                    const float* inp, const float* weight, const float* mean,
                                    const float* rstd, int N, int C) {
  NURI_CHECK(N >= 0 && C > 0, shape, "layernorm_backward", "bad sizes N=" << N << " C=" << C);
  // Per-thread partial sums of dweight and dbias, each padded to a 64-byte multiple.
  const size_t Cp = (size_t(C) + 15) / 16 * 16;
  const bool parallel = size_t(N) * C >= 16384;
  const int max_threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> partial(size_t(max_threads) * 2 * Cp, 0.0f);
  const float* __restrict w = weight;
#pragma omp parallel if (parallel)
  {
    float* __restrict dw_t = partial.data() + size_t(omp_get_thread_num()) * 2 * Cp;
    float* __restrict db_t = dw_t + Cp;
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* __restrict x = inp + size_t(n) * C;
      const float* __restrict dy = dout + size_t(n) * C;
      float* __restrict dx = dinp + size_t(n) * C;
      const float m = mean[n], rs = rstd[n];
      float g_mean = 0.0f, gx_mean = 0.0f;
#pragma omp simd reduction(+ : g_mean, gx_mean)
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        const float g = dy[c] * w[c];
        g_mean += g;
        gx_mean += g * xhat;
        dw_t[c] += dy[c] * xhat;
        db_t[c] += dy[c];
      }
      g_mean /= C;
      gx_mean /= C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float xhat = (x[c] - m) * rs;
        dx[c] += rs * (dy[c] * w[c] - g_mean - xhat * gx_mean);
      }
    }
    // (implicit barrier: all partial sums are complete)
    const int nt = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
      float sw = 0.0f, sb = 0.0f;
      for (int t = 0; t < nt; ++t) {
        sw += partial[size_t(t) * 2 * Cp + c];
        sb += partial[size_t(t) * 2 * Cp + Cp + c];
      }
      dweight[c] += sw;
      if (dbias) dbias[c] += sb;
    }
  }
}

}  // namespace nuri

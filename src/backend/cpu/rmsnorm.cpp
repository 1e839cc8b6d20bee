// RMSNorm over the last dimension (no mean subtraction, no bias).
//   forward:  rstd_n = 1/sqrt(sum_c x^2/C + eps);  out (N,C) = x rstd w
//   backward: g = dout w;  dinp (N,C) += rstd g - x rstd^3 sum_c(g x)/C
//             dw (C) += sum_n dout x rstd
// Threading: OpenMP static schedule over rows; dweight via one C-length partial sum per thread,
// added up afterwards in parallel over columns (no atomics).
#include <omp.h>

#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                                 int N, int C, float eps) {
  NURI_CHECK(N >= 0 && C > 0, shape, "rmsnorm_forward", "bad sizes N=" << N << " C=" << C);
  const float* __restrict w = weight;
#pragma omp parallel for schedule(static) if (size_t(N) * C >= 16384)
  for (int n = 0; n < N; ++n) {
    const float* __restrict x = inp + size_t(n) * C;
    float* __restrict y = out + size_t(n) * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += x[c] * x[c];
    const float rs = 1.0f / std::sqrt(ss / C + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] = x[c] * rs * w[c];
    rstd[n] = rs;
  }
}

void CpuBackend::rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                  const float* weight, const float* rstd, int N, int C) {
  NURI_CHECK(N >= 0 && C > 0, shape, "rmsnorm_backward", "bad sizes N=" << N << " C=" << C);
  const size_t Cp = (size_t(C) + 15) / 16 * 16;  // 64-byte padded partial rows
  const bool parallel = size_t(N) * C >= 16384;
  const int max_threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> partial(size_t(max_threads) * Cp, 0.0f);
  const float* __restrict w = weight;
#pragma omp parallel if (parallel)
  {
    float* __restrict dw_t = partial.data() + size_t(omp_get_thread_num()) * Cp;
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* __restrict x = inp + size_t(n) * C;
      const float* __restrict dy = dout + size_t(n) * C;
      float* __restrict dx = dinp + size_t(n) * C;
      const float rs = rstd[n];
      float gx = 0.0f;
#pragma omp simd reduction(+ : gx)
      for (int c = 0; c < C; ++c) {
        gx += dy[c] * w[c] * x[c];
        dw_t[c] += dy[c] * x[c] * rs;
      }
      const float k = rs * rs * rs * gx / C;
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] += rs * dy[c] * w[c] - k * x[c];
    }
    const int nt = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int t = 0; t < nt; ++t) s += partial[size_t(t) * Cp + c];
      dweight[c] += s;
    }
  }
}

}  // namespace nuri

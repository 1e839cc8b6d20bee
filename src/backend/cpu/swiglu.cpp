// SwiGLU gate, rows of inp (N,2F) = [gate (F) | up (F)].
//   forward:  out (N,F) = silu(g) u,  silu(g) = g s,  s = sigmoid(g) = 1 / (1 + e^{-g})
//   backward: dinp[:, :F] = dout u s (1 + g (1 - s))   (d silu/dg)
//             dinp[:, F:] = dout silu(g)
// Threading: OpenMP static schedule over rows, inner loop over F vectorized (exp_poly).
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/exp_poly.hpp"
#include "nuri/error.hpp"

namespace nuri {

void CpuBackend::swiglu_forward(float* out, const float* inp, int N, int F) {
  NURI_CHECK(N >= 0 && F > 0, shape, "swiglu_forward", "bad sizes N=" << N << " F=" << F);
#pragma omp parallel for schedule(static) if (size_t(N) * F >= 16384)
  for (int n = 0; n < N; ++n) {
    const float* __restrict gate = inp + size_t(n) * 2 * F;
    const float* __restrict up = gate + F;
    float* __restrict y = out + size_t(n) * F;
#pragma omp simd
    for (int j = 0; j < F; ++j) {
      const float g = gate[j];
      y[j] = g / (1.0f + exp_poly(-g)) * up[j];
    }
  }
}

void CpuBackend::swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) {
  NURI_CHECK(N >= 0 && F > 0, shape, "swiglu_backward", "bad sizes N=" << N << " F=" << F);
#pragma omp parallel for schedule(static) if (size_t(N) * F >= 16384)
  for (int n = 0; n < N; ++n) {
    const float* __restrict gate = inp + size_t(n) * 2 * F;
    const float* __restrict up = gate + F;
    const float* __restrict dy = dout + size_t(n) * F;
    float* __restrict dgate = dinp + size_t(n) * 2 * F;
    float* __restrict dup = dgate + F;
#pragma omp simd
    for (int j = 0; j < F; ++j) {
      const float g = gate[j];
      const float s = 1.0f / (1.0f + exp_poly(-g));
      dgate[j] = dy[j] * up[j] * s * (1.0f + g * (1.0f - s));
      dup[j] = dy[j] * g * s;
    }
  }
}

}  // namespace nuri

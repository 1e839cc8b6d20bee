// AdamW with decoupled weight decay and bias correction (Loshchilov & Hutter; torch.optim.AdamW).
//   g = grad_scale grad;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p),  mhat = m / (1 - b1^step), vhat = v / (1 - b2^step)
// The bias corrections are computed once, in double (1 - b2^step for b2 = 0.999 is small and
// cancels badly in float), then used as float factors.
// Threading: OpenMP static schedule over the n parameters. Constraints: step >= 1.
// Vectorization: GCC will not vectorize std::sqrt unless the build has -fno-math-errno (sqrt of a
// negative must set errno, which becomes a branch in the loop), and the scalar loop is 3x slower
// than memory bandwidth on AVX-512. So where AVX-512 is available the body is written with
// intrinsics (same operations, same order); the portable loop handles the rest and the tail.
#include <cmath>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {

struct AdamwFactors {
  float lr, beta1, beta2, one_minus_b1, one_minus_b2, eps, weight_decay, grad_scale;
  float inv_bc1, inv_bc2;  // 1 / (1 - beta^step)
};

// The update of one element.
inline void adamw_element(float& p, float grad, float& m, float& v, const AdamwFactors& f) {
  const float g = grad * f.grad_scale;
  m = f.beta1 * m + f.one_minus_b1 * g;
  v = f.beta2 * v + f.one_minus_b2 * g * g;
  const float mhat = m * f.inv_bc1, vhat = v * f.inv_bc2;
  p -= f.lr * (mhat / (std::sqrt(vhat) + f.eps) + f.weight_decay * p);
}

}  // namespace

void CpuBackend::adamw_update(float* param, const float* grad, float* m, float* v, size_t n,
                              float lr, float beta1, float beta2, float eps, float weight_decay,
                              int step, float grad_scale) {
  NURI_CHECK(step >= 1, internal, "adamw_update", "step must be >= 1, got " << step);
  AdamwFactors f;
  f.lr = lr;
  f.beta1 = beta1;
  f.beta2 = beta2;
  f.one_minus_b1 = 1.0f - beta1;
  f.one_minus_b2 = 1.0f - beta2;
  f.eps = eps;
  f.weight_decay = weight_decay;
  f.grad_scale = grad_scale;
  f.inv_bc1 = float(1.0 / (1.0 - std::pow(double(beta1), step)));
  f.inv_bc2 = float(1.0 / (1.0 - std::pow(double(beta2), step)));

  size_t done = 0;
#if defined(__AVX512F__)
  const size_t blocks = n / 16;
#pragma omp parallel for schedule(static) if (n >= 32768)
  for (size_t blk = 0; blk < blocks; ++blk) {
    const size_t i = blk * 16;
    const __m512 g = _mm512_mul_ps(_mm512_loadu_ps(grad + i), _mm512_set1_ps(f.grad_scale));
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(f.beta1), _mm512_loadu_ps(m + i)),
                                    _mm512_mul_ps(_mm512_set1_ps(f.one_minus_b1), g));
    const __m512 vi = _mm512_add_ps(
        _mm512_mul_ps(_mm512_set1_ps(f.beta2), _mm512_loadu_ps(v + i)),
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(f.one_minus_b2), g), g));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    const __m512 mhat = _mm512_mul_ps(mi, _mm512_set1_ps(f.inv_bc1));
    const __m512 vhat = _mm512_mul_ps(vi, _mm512_set1_ps(f.inv_bc2));
    // The masked form with an all-ones mask is plain sqrt; it avoids GCC 12's spurious
    // -Wmaybe-uninitialized from _mm512_sqrt_ps's undefined pass-through operand.
    const __m512 root = _mm512_mask_sqrt_ps(vhat, __mmask16(0xFFFF), vhat);
    const __m512 denom = _mm512_add_ps(root, _mm512_set1_ps(f.eps));
    const __m512 p = _mm512_loadu_ps(param + i);
    const __m512 upd = _mm512_add_ps(_mm512_div_ps(mhat, denom),
                                     _mm512_mul_ps(_mm512_set1_ps(f.weight_decay), p));
    _mm512_storeu_ps(param + i, _mm512_sub_ps(p, _mm512_mul_ps(_mm512_set1_ps(f.lr), upd)));
  }
  done = blocks * 16;
#endif
#pragma omp parallel for schedule(static) if (n - done >= 32768)
  for (size_t i = done; i < n; ++i) adamw_element(param[i], grad[i], m[i], v[i], f);
}

}  // namespace nuri

// GELU, tanh approximation (GPT-2's "gelu_new"), elementwise over n values.
//   forward:  out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   backward: dinp = dout (0.5 (1 + tanh u) + 0.5 x sech^2(u) u'),  u' = sqrt(2/pi)(1 + 3*0.044715 x^2)
// Computed through the identity 0.5 (1 + tanh u) = sigmoid(2u) = 1 / (1 + e^{-2u}), so one
// vectorizable exp (exp_poly) per element and no cancellation near u = 0; then
// sech^2(u) = 4 s (1 - s) with s = sigmoid(2u), so the derivative is s + 2 x s (1 - s) u'.
// Threading: OpenMP static schedule over elements. out may alias inp (elementwise, read first).
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/exp_poly.hpp"

namespace nuri {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr size_t kParallelMin = size_t(1) << 14;
}  // namespace

void CpuBackend::gelu_forward(float* out, const float* inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = x / (1.0f + exp_poly(-2.0f * u));
  }
}

void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  float* __restrict dx = dinp;
  const float* __restrict xs = inp;
  const float* __restrict dy = dout;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    const float x = xs[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    const float s = 1.0f / (1.0f + exp_poly(-2.0f * u));
    dx[i] = dy[i] * (s + 2.0f * x * s * (1.0f - s) * du);
  }
}

}  // namespace nuri

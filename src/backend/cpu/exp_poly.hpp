#pragma once
// exp_poly(x): e^x for fp32 by Cephes range reduction and a degree-6 polynomial, written without
// branches or library calls so that a loop over it vectorizes (glibc's expf is scalar unless
// -ffast-math, and the softmaxes in attention and the LM-head loss spend most of their non-GEMM
// time in exp).
//   x = n ln2 + r, |r| <= ln2/2;  e^x = 2^n (1 + r + r^2 P(r)).
// Accuracy: within 2 ulp of expf on [-87, 88]. Inputs are clamped to that range, so -inf gives
// ~1e-38 instead of 0 (callers that need exact zeros, e.g. causal masks, write them directly) and
// large x gives ~1.65e38 instead of inf. NaN propagates.
#include <bit>
#include <cstdint>

namespace nuri {

inline float exp_poly(float x) {
  // Comparisons, not fminf/fmaxf, so that a NaN stays NaN.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2): adding 1.5 * 2^23 pushes the fraction out of the mantissa, leaving the
  // integer n in the low mantissa bits of t (|n| <= 127, well inside the 2^22 the trick needs).
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  // r = x - n ln2, with ln2 split in two so that n * 0.693359375 is exact.
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  // 2^n built from its exponent bits; n in [-126, 127] keeps it a normal number.
  return y * std::bit_cast<float>((ni + 127) << 23);
}

}  // namespace nuri

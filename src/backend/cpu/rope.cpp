// Rotary position embedding, half-split layout (GPT-NeoX / Hugging Face Llama), in place.
//   x (B,T,nh,D), consecutive (b,t) rows `row_stride` floats apart, heads D apart within a row.
//   For i in [0, D/2): angle(t, i) = t theta^(-2i/D);
//     (x_i, x_{i+D/2}) -> (x_i cos - x_{i+D/2} sin,  x_i sin + x_{i+D/2} cos)
//   inverse = true rotates by -angle. A rotation is orthogonal, so the inverse is also the
//   backward: dL/dx = R^T dL/dy = R(-angle) dL/dy.
// The cos/sin table (T, D/2) is computed in double and rounded to float, so positions far along
// the sequence do not lose the angle's precision. It depends only on (T, D, theta), and the model
// rotates q and k in forward and backward of every layer, so the last table is kept per thread
// and reused when those match.
// Threading: OpenMP static schedule over the B*T rows; inner loop over i vectorized.
// Constraints: D even; row_stride >= nh*D.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {

struct RopeTable {
  int T = 0, D = 0;
  float theta = 0.0f;
  std::vector<float> cos, sin;  // (T, D/2)
};

const RopeTable& rope_table(int T, int D, float theta) {
  thread_local RopeTable table;
  if (table.T == T && table.D == D && table.theta == theta) return table;
  const int half = D / 2;
  table.cos.resize(size_t(T) * half);
  table.sin.resize(size_t(T) * half);
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(double(theta), -2.0 * i / D);
  float* cos_t = table.cos.data();
  float* sin_t = table.sin.data();
#pragma omp parallel for schedule(static) if (size_t(T) * half >= 4096)
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = double(t) * inv_freq[i];
      cos_t[size_t(t) * half + i] = float(std::cos(angle));
      sin_t[size_t(t) * half + i] = float(std::sin(angle));
    }
  }
  table.T = T;
  table.D = D;
  table.theta = theta;
  return table;
}

}  // namespace

void CpuBackend::rope(float* x, int B, int T, int nh, int D, int row_stride, float theta,
                      bool inverse) {
  NURI_CHECK(B >= 0 && T >= 0 && nh > 0 && D > 0, shape, "rope",
             "bad sizes B=" << B << " T=" << T << " nh=" << nh << " D=" << D);
  NURI_CHECK(D % 2 == 0, shape, "rope", "head dim D=" << D << " must be even for rotary pairs");
  NURI_CHECK(row_stride >= nh * D, shape, "rope",
             "row_stride " << row_stride << " is smaller than nh*D = " << nh * D);
  NURI_CHECK(theta > 0.0f, config, "rope", "rope_theta must be positive, got " << theta);
  if (B == 0 || T == 0) return;
  const RopeTable& table = rope_table(T, D, theta);
  const int half = D / 2;
  // The inverse uses sin(-a) = -sin(a).
  const float sin_sign = inverse ? -1.0f : 1.0f;
  const int rows = B * T;
#pragma omp parallel for schedule(static) if (size_t(rows) * nh * D >= 16384)
  for (int r = 0; r < rows; ++r) {
    const int t = r % T;
    const float* __restrict c = table.cos.data() + size_t(t) * half;
    const float* __restrict s = table.sin.data() + size_t(t) * half;
    for (int h = 0; h < nh; ++h) {
      float* __restrict x1 = x + size_t(r) * row_stride + size_t(h) * D;
      float* __restrict x2 = x1 + half;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float a = x1[i], b = x2[i], sn = sin_sign * s[i];
        x1[i] = a * c[i] - b * sn;
        x2[i] = a * sn + b * c[i];
      }
    }
  }
}

}  // namespace nuri

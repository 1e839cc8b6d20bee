#pragma once
// What the emulated kernel tests share (tests/cuda_emu/*.cpp): the CPU reference backend, random
// inputs, tolerance checks and bf16 conversions. Include after the kernel headers (common.cuh in
// NURI_CUDA_EMU mode provides cudaStream_t and __nv_bfloat16).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common.cuh"
#include "nuri/backend.hpp"

namespace emu_test {

using Vec = std::vector<float>;
namespace cu = nuri::cuda;
inline cudaStream_t const kStream = nullptr;

inline nuri::Backend& cpu() {
  static std::unique_ptr<nuri::Backend> backend = nuri::make_backend("cpu", 1);
  return *backend;
}

inline Vec random_vec(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Every element within rtol |want| + atol; reports the first offender and the count.
inline void check_close(const std::string& what, const Vec& got, const Vec& want, float rtol = 1e-5f,
                 float atol = 1e-6f) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::fabs(got[i] - want[i]) <= rtol * std::fabs(want[i]) + atol;
    if (!ok && bad++ == 0) first = i;
  }
  if (bad) {
    INFO(what << ": " << bad << " of " << got.size() << " elements differ; first at " << first
              << ": got " << got[first] << ", want " << want[first]);
    CHECK(bad == 0);
  } else {
    CHECK(bad == 0);
  }
}

inline void check_equal(const std::string& what, const Vec& got, const Vec& want) {
  REQUIRE(got.size() == want.size());
  const bool same = std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0;
  INFO(what << ": expected bitwise equality");
  CHECK(same);
}

inline std::vector<__nv_bfloat16> to_bf16(const Vec& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}
inline Vec from_bf16(const std::vector<__nv_bfloat16>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// |got - want| <= rtol * scale + 1e-6 elementwise, with scale the largest |want| (for sums whose
// fp32 accumulation order differs).
inline void check_close_scaled(const std::string& what, const Vec& got, const Vec& want, float rtol) {
  float scale = 0.0f;
  for (float w : want) scale = std::max(scale, std::fabs(w));
  check_close(what, got, want, 0.0f, rtol * scale + 1e-6f);
}

// Random values that are exactly representable in bf16.
inline Vec bf16_values(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  return from_bf16(to_bf16(random_vec(n, seed, lo, hi)));
}

constexpr float kBf16Rtol = 1.0f / 128;  // output rounding 2^-9 plus fp32-vs-rounded-input slack
constexpr float kBf16Atol = 1e-3f;

}  // namespace emu_test

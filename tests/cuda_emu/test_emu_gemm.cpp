// gemm_bf16 (kernels/cuda/gemm.cu) under the emulator against the CPU backend's fp32 gemm on the
// bf16-rounded inputs: the four transpose layouts, awkward shapes (1, 5, 16, 17, 33, 70, 130, and
// cases larger than one 128 x 128 x 32 block tile in every dimension), alpha and beta, row strides
// wider than the rows (vectorized and scalar loads, a misaligned pointer), the bias and bias_gelu
// epilogues (with and without bias and pre_gelu), zero sizes and invalid arguments.
// Tolerance: the sums are fp32 in both but in a different order, so the error is bounded by the
// size of the terms, not of the result: |got - want| <= 1e-5 s + 1e-6, where
// s = |alpha| sum_k |a_ik b_kj| + |beta c_ij| + |bias_j|; after GELU (slope <= 1.13) 1.2 times that
// plus 1e-5 |want| (the CPU's exp is a polynomial). Elements of C and pre_gelu outside the (M, N)
// block (the stride padding) must keep their sentinel; with beta = 0, C starts as NaN (not read).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cast.cuh"
#include "gemm.cuh"
// After the kernel headers (emu_test_util.hpp).
#include "emu_test_util.hpp"

using namespace emu_test;  // NOLINT: the shared helpers of emu_test_util.hpp

namespace {

using Bf16Vec = std::vector<__nv_bfloat16>;
using cu::GemmEpilogue;

constexpr float kSentinel = 12345.0f;  // stride padding of C / pre_gelu: must stay untouched
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct GemmCase {
  bool trans_a, trans_b;
  int M, N, K;
  float alpha = 1.0f, beta = 0.0f;
  int pad_a = 0, pad_b = 0, pad_c = 0;  // row stride = row width + pad
  GemmEpilogue epilogue = GemmEpilogue::none;
  bool with_bias = false, with_pre_gelu = false;
  bool misalign_a = false;  // pass A one element past a 16-byte boundary (scalar loads)
};

std::string describe(const GemmCase& c) {
  std::ostringstream os;
  os << (c.trans_a ? "T" : "N") << (c.trans_b ? "T" : "N") << " M=" << c.M << " N=" << c.N
     << " K=" << c.K << " alpha=" << c.alpha << " beta=" << c.beta << " pads=" << c.pad_a << ','
     << c.pad_b << ',' << c.pad_c << " epilogue=" << int(c.epilogue) << " bias=" << c.with_bias
     << " pre_gelu=" << c.with_pre_gelu << " misalign_a=" << c.misalign_a;
  return os.str();
}

// A row-major (rows, cols) bf16 matrix with stride cols + pad, values rounded to bf16; the
// padding holds NaN (a kernel that reads it poisons its result). `offset` extra leading elements.
Bf16Vec make_operand(int rows, int cols, int ld, uint32_t seed, int offset = 0) {
  const Vec vals = random_vec(size_t(rows) * cols, seed);
  Bf16Vec m(size_t(offset) + size_t(rows) * ld + 1, __float2bfloat16_rn(kNaN));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      m[offset + size_t(r) * ld + c] = __float2bfloat16_rn(vals[size_t(r) * cols + c]);
  return m;
}

// The fp32 values of a (rows, cols) operand, padding as 0 (and |x| when absolute).
Vec to_float(const Bf16Vec& m, int rows, int cols, int ld, int offset, bool absolute) {
  Vec out(size_t(rows) * ld, 0.0f);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const float v = __bfloat162float(m[offset + size_t(r) * ld + c]);
      out[size_t(r) * ld + c] = absolute ? std::fabs(v) : v;
    }
  return out;
}

void run_case(const GemmCase& c, uint32_t seed) {
  INFO(describe(c));
  const int a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  const int lda = a_cols + c.pad_a, ldb = b_cols + c.pad_b, ldc = c.N + c.pad_c;
  const int a_offset = c.misalign_a ? 1 : 0;
  const Bf16Vec A = make_operand(a_rows, a_cols, lda, seed, a_offset);
  const Bf16Vec B = make_operand(b_rows, b_cols, ldb, seed + 1);
  const Vec Af = to_float(A, a_rows, a_cols, lda, a_offset, false);
  const Vec Bf = to_float(B, b_rows, b_cols, ldb, 0, false);
  const Vec Aabs = to_float(A, a_rows, a_cols, lda, a_offset, true);
  const Vec Babs = to_float(B, b_rows, b_cols, ldb, 0, true);
  const Vec bias = random_vec(size_t(c.N), seed + 2);
  const Vec c_init = random_vec(size_t(c.M) * ldc, seed + 3);

  // C: random where beta reads it, NaN where beta = 0 (must not be read); padding = sentinel.
  Vec C(size_t(c.M) * ldc, kSentinel), pre(size_t(c.M) * ldc, kSentinel);
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < c.N; ++j)
      C[size_t(i) * ldc + j] = c.beta != 0.0f ? c_init[size_t(i) * ldc + j] : kNaN;

  // Reference: acc = alpha op(A) op(B) (+ beta C), then bias, then GELU.
  Vec want(size_t(c.M) * ldc, 0.0f), scale(size_t(c.M) * ldc, 0.0f);
  if (c.beta != 0.0f) want = c_init;
  if (c.K > 0) {
    cpu().gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, Af.data(), lda, Bf.data(), ldb, c.beta,
               want.data(), ldc);
    cpu().gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, std::fabs(c.alpha), Aabs.data(), lda,
               Babs.data(), ldb, 0.0f, scale.data(), ldc);
  } else {  // the CPU backend wants strides >= 1; the product is empty: want = beta C
    for (float& v : want) v *= c.beta;
  }
  const bool use_bias = c.epilogue != GemmEpilogue::none && c.with_bias;
  Vec want_pre(size_t(c.M) * c.N), want_c(size_t(c.M) * c.N), tol(size_t(c.M) * c.N);
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < c.N; ++j) {
      const size_t k = size_t(i) * ldc + j, o = size_t(i) * c.N + j;
      want_pre[o] = want[k] + (use_bias ? bias[j] : 0.0f);
      const float s = scale[k] + (c.beta != 0.0f ? std::fabs(c.beta * c_init[k]) : 0.0f) +
                      (use_bias ? std::fabs(bias[j]) : 0.0f);
      tol[o] = 1e-5f * s + 1e-6f;
    }
  want_c = want_pre;
  if (c.epilogue == GemmEpilogue::bias_gelu)
    cpu().gelu_forward(want_c.data(), want_pre.data(), want_pre.size());

  const __nv_bfloat16* a_ptr = c.K > 0 ? A.data() + a_offset : nullptr;
  const __nv_bfloat16* b_ptr = c.K > 0 ? B.data() : nullptr;  // K = 0: operands not needed
  REQUIRE(cu::gemm_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, a_ptr, lda, b_ptr, ldb,
                        c.beta, C.data(), ldc, c.with_bias ? bias.data() : nullptr, c.epilogue,
                        c.with_pre_gelu ? pre.data() : nullptr, kStream) == cudaSuccess);

  size_t bad_c = 0, bad_pre = 0, bad_pad = 0;
  std::string first;
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < ldc; ++j) {
      const size_t k = size_t(i) * ldc + j;
      if (j >= c.N) {  // stride padding
        if (C[k] != kSentinel || pre[k] != kSentinel) ++bad_pad;
        continue;
      }
      const size_t o = size_t(i) * c.N + j;
      const bool gelu = c.epilogue == GemmEpilogue::bias_gelu;
      const float tol_c = gelu ? 1.2f * tol[o] + 1e-5f * std::fabs(want_c[o]) : tol[o];
      if (!(std::fabs(C[k] - want_c[o]) <= tol_c)) {
        if (bad_c++ == 0)
          first = "C(" + std::to_string(i) + "," + std::to_string(j) +
                  ") = " + std::to_string(C[k]) + ", want " + std::to_string(want_c[o]) + " +- " +
                  std::to_string(tol_c);
      }
      if (gelu && c.with_pre_gelu && !(std::fabs(pre[k] - want_pre[o]) <= tol[o])) ++bad_pre;
      if (!(gelu && c.with_pre_gelu) && pre[k] != kSentinel) ++bad_pre;  // pre_gelu untouched
    }
  INFO("first bad element: " << first);
  CHECK(bad_c == 0);
  CHECK(bad_pre == 0);
  CHECK(bad_pad == 0);
}

}  // namespace

TEST_CASE("gemm_bf16: four layouts, awkward shapes, alpha/beta, strides", "[gemm]") {
  struct Shape {
    int M, N, K;
  };
  // Tiny, odd, K not a multiple of 16, and (last) more than one 128 x 128 x 32 tile everywhere.
  const Shape shapes[] = {{1, 1, 1},    {5, 17, 33},   {17, 5, 16},   {33, 70, 5},
                          {70, 33, 17}, {16, 16, 130}, {130, 133, 70}};
  uint32_t seed = 100;
  for (int layout = 0; layout < 4; ++layout) {
    const bool ta = layout & 2, tb = layout & 1;
    int variant = 0;
    for (const Shape& s : shapes) {
      GemmCase c{ta, tb, s.M, s.N, s.K};
      // Vary the scaling and the strides over the shapes: odd pads give scalar loads.
      const int v = variant++ % 4;
      c.alpha = v == 1 ? -0.75f : v == 2 ? 2.5f : 1.0f;
      c.beta = v == 2 ? 0.5f : v == 3 ? -1.25f : 0.0f;
      c.pad_a = v == 1 ? 3 : v == 2 ? 8 : 0;
      c.pad_b = v == 1 ? 5 : v == 2 ? 16 : 0;
      c.pad_c = v == 1 ? 2 : v == 3 ? 7 : 0;
      run_case(c, seed);
      seed += 10;
    }
  }
}

TEST_CASE("gemm_bf16: shape sweep (every layout, tile edges in M, N and K)", "[gemm]") {
  uint32_t seed = 2000;
  int variant = 0;
  for (int layout = 0; layout < 4; ++layout)
    for (int M : {1, 17, 130})
      for (int N : {5, 70, 133})
        for (int K : {16, 33}) {
          GemmCase c{bool(layout & 2), bool(layout & 1), M, N, K};
          c.alpha = variant % 3 == 0 ? 1.0f : -1.5f;
          c.beta = variant % 2 == 0 ? 0.0f : 0.75f;
          c.pad_a = variant % 5;
          c.pad_b = (variant * 3) % 8;
          c.pad_c = variant % 4;
          ++variant;
          run_case(c, seed++);
        }
}

TEST_CASE("gemm_bf16: vectorized and scalar loads on edges and misaligned pointers", "[gemm]") {
  // Strides that are multiples of 8 (16-byte loads) with ragged edges inside a chunk.
  run_case(GemmCase{false, true, 33, 70, 33, 1.0f, 0.0f, 7, 7, 0}, 500);    // lda = ldb = 40
  run_case(GemmCase{false, false, 130, 40, 70, 1.0f, 0.0f, 2, 0, 0}, 510);  // lda = 72, ldb = 40
  run_case(GemmCase{true, false, 24, 17, 40, 1.0f, 0.0f, 0, 7, 3}, 520);    // lda = 24, ldb = 24
  // Stride a multiple of 8 but the pointer 2 bytes past a 16-byte boundary: scalar loads.
  GemmCase mis{false, true, 20, 9, 48, 1.0f, 0.0f, 0, 0, 0};
  mis.misalign_a = true;
  run_case(mis, 530);
  mis.trans_a = true;
  mis.M = 48;
  run_case(mis, 540);
}

TEST_CASE("gemm_bf16: epilogues bias and bias_gelu", "[gemm]") {
  // Mostly the forward layout of a linear layer (trans_b), one of each other layout.
  struct Epi {
    bool ta, tb;
    int M, N, K;
    float beta;
    GemmEpilogue epilogue;
    bool bias, pre;
  };
  const Epi cases[] = {
      {false, true, 17, 33, 70, 0.0f, GemmEpilogue::bias, true, false},
      {false, true, 130, 133, 33, 0.0f, GemmEpilogue::bias_gelu, true, true},
      {false, true, 257, 260, 100, 0.0f, GemmEpilogue::bias_gelu, true, true},  // 3 x 3 tiles
      {false, true, 5, 70, 17, 0.0f, GemmEpilogue::bias_gelu, false, true},     // GELU alone
      {false, true, 33, 17, 16, 0.0f, GemmEpilogue::bias_gelu, true, false},
      {false, true, 33, 17, 16, 0.5f, GemmEpilogue::bias_gelu, true, true},  // beta C before GELU
      {false, false, 70, 5, 33, 0.5f, GemmEpilogue::bias, true, false},
      {true, false, 17, 17, 5, 0.0f, GemmEpilogue::bias_gelu, true, true},
      {true, true, 1, 33, 17, 1.0f, GemmEpilogue::bias_gelu, false, false},
      {false, true, 17, 33, 70, 0.0f, GemmEpilogue::none, true, true},  // bias, pre ignored
  };
  uint32_t seed = 700;
  for (const Epi& e : cases) {
    GemmCase c{e.ta, e.tb, e.M, e.N, e.K, 0.5f, e.beta, 1, 2, 3};
    c.epilogue = e.epilogue;
    c.with_bias = e.bias;
    c.with_pre_gelu = e.pre;
    run_case(c, seed);
    seed += 10;
  }
}

TEST_CASE("gemm_bf16: bf16 output is the fp32 output rounded, bit for bit", "[gemm]") {
  // The same epilogue math, rounded once when stored: fp32 C then cast_f32_to_bf16 must give the
  // same bits, pre_gelu included; with beta the bf16 C is read widened.
  struct Out16 {
    bool ta, tb;
    int M, N, K;
    float beta;
    GemmEpilogue epilogue;
  };
  const Out16 cases[] = {{false, true, 33, 70, 40, 0.0f, GemmEpilogue::bias},
                         {false, true, 130, 133, 33, 0.0f, GemmEpilogue::bias_gelu},
                         {false, true, 17, 24, 16, 0.0f, GemmEpilogue::none},
                         {false, false, 5, 33, 17, 0.5f, GemmEpilogue::bias}};
  uint32_t seed = 900;
  for (const Out16& e : cases) {
    INFO("M " << e.M << " N " << e.N << " K " << e.K << " beta " << e.beta);
    const int lda = e.ta ? e.M : e.K, ldb = e.tb ? e.K : e.N;
    const Bf16Vec A = make_operand(e.ta ? e.K : e.M, lda, lda, seed);
    const Bf16Vec B = make_operand(e.tb ? e.N : e.K, ldb, ldb, seed + 1);
    const Vec bias = random_vec(size_t(e.N), seed + 2);
    const size_t n = size_t(e.M) * e.N;
    const Bf16Vec c0 = to_bf16(random_vec(n, seed + 3));
    Vec C32 = from_bf16(c0), pre32(n, 0.0f);
    Bf16Vec C16 = c0, pre16(n), want16(n), wantpre16(n);
    const float* b = e.epilogue == GemmEpilogue::none ? nullptr : bias.data();
    REQUIRE(cu::gemm_bf16(e.ta, e.tb, e.M, e.N, e.K, 0.75f, A.data(), lda, B.data(), ldb, e.beta, C32.data(), e.N,
                          b, e.epilogue, pre32.data(), kStream) == cudaSuccess);
    REQUIRE(cu::gemm_bf16(e.ta, e.tb, e.M, e.N, e.K, 0.75f, A.data(), lda, B.data(), ldb, e.beta, C16.data(), e.N,
                          b, e.epilogue, pre16.data(), kStream) == cudaSuccess);
    REQUIRE(cu::cast_f32_to_bf16(want16.data(), C32.data(), n, kStream) == cudaSuccess);
    CHECK(std::memcmp(C16.data(), want16.data(), n * sizeof(__nv_bfloat16)) == 0);
    if (e.epilogue == GemmEpilogue::bias_gelu) {
      REQUIRE(cu::cast_f32_to_bf16(wantpre16.data(), pre32.data(), n, kStream) == cudaSuccess);
      CHECK(std::memcmp(pre16.data(), wantpre16.data(), n * sizeof(__nv_bfloat16)) == 0);
    }
    seed += 10;
  }
}

TEST_CASE("gemm_bf16: zero sizes", "[gemm]") {
  // K = 0: the epilogue of 0 (beta C + bias, then GELU); A and B are not read (null here).
  GemmCase k0{false, true, 17, 33, 0, 1.0f, 0.5f, 0, 0, 2};
  k0.epilogue = GemmEpilogue::bias_gelu;
  k0.with_bias = true;
  k0.with_pre_gelu = true;
  run_case(k0, 900);
  run_case(GemmCase{true, false, 5, 3, 0, 1.0f, 0.0f, 0, 0, 0}, 910);  // C = 0
  // M = 0 or N = 0: nothing happens (C keeps its contents).
  Vec C(8, kSentinel);
  const Bf16Vec ab(64, __float2bfloat16_rn(1.0f));
  CHECK(cu::gemm_bf16(false, false, 0, 4, 4, 1.0f, ab.data(), 4, ab.data(), 4, 0.0f, C.data(), 4,
                      nullptr, GemmEpilogue::none, nullptr, kStream) == cudaSuccess);
  CHECK(cu::gemm_bf16(false, false, 2, 0, 4, 1.0f, ab.data(), 4, ab.data(), 0, 0.0f, C.data(), 4,
                      nullptr, GemmEpilogue::none, nullptr, kStream) == cudaSuccess);
  CHECK(cu::gemm_bf16(true, true, 0, 0, 0, 1.0f, nullptr, 0, nullptr, 0, 0.0f, static_cast<float*>(nullptr), 0,
                      nullptr, GemmEpilogue::none, nullptr, kStream) == cudaSuccess);
  for (float v : C) CHECK(v == kSentinel);
}

TEST_CASE("gemm_bf16: invalid arguments", "[gemm]") {
  const Bf16Vec ab(64, __float2bfloat16_rn(1.0f));
  Vec C(64, 0.0f), bias(8, 0.0f);
  const __nv_bfloat16* p = ab.data();
  float* c = C.data();
  auto call = [&](bool ta, bool tb, int M, int N, int K, const __nv_bfloat16* A, int lda,
                  const __nv_bfloat16* B, int ldb, float* Cp, int ldc, const float* b,
                  GemmEpilogue e) {
    return cu::gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, Cp, ldc, b, e, nullptr,
                         kStream);
  };
  const auto none = GemmEpilogue::none;
  CHECK(call(false, false, 4, 4, 4, p, 4, p, 4, c, 4, nullptr, none) == cudaSuccess);  // baseline
  CHECK(call(false, false, -1, 4, 4, p, 4, p, 4, c, 4, nullptr, none) == cudaErrorInvalidValue);
  CHECK(call(false, false, 4, -1, 4, p, 4, p, 4, c, 4, nullptr, none) == cudaErrorInvalidValue);
  CHECK(call(false, false, 4, 4, -1, p, 4, p, 4, c, 4, nullptr, none) == cudaErrorInvalidValue);
  CHECK(call(false, false, 4, 4, 5, p, 4, p, 4, c, 4, nullptr, none) ==
        cudaErrorInvalidValue);  // lda < K
  CHECK(call(true, false, 5, 4, 4, p, 4, p, 4, c, 5, nullptr, none) ==
        cudaErrorInvalidValue);  // lda < M
  CHECK(call(false, false, 4, 5, 4, p, 4, p, 4, c, 5, nullptr, none) ==
        cudaErrorInvalidValue);  // ldb < N
  CHECK(call(false, true, 4, 4, 5, p, 5, p, 4, c, 4, nullptr, none) ==
        cudaErrorInvalidValue);  // ldb < K
  CHECK(call(false, false, 4, 5, 4, p, 4, p, 5, c, 4, nullptr, none) ==
        cudaErrorInvalidValue);  // ldc < N
  CHECK(call(false, false, 4, 4, 4, p, 4, p, 4, c, 4, nullptr, GemmEpilogue::bias) ==
        cudaErrorInvalidValue);  // bias epilogue without bias
  CHECK(call(false, false, 4, 4, 4, p, 4, p, 4, c, 4, bias.data(), static_cast<GemmEpilogue>(7)) ==
        cudaErrorInvalidValue);
  CHECK(call(false, false, 4, 4, 4, p, 4, p, 4, nullptr, 4, nullptr, none) ==
        cudaErrorInvalidValue);
  CHECK(call(false, false, 4, 4, 4, nullptr, 4, p, 4, c, 4, nullptr, none) ==
        cudaErrorInvalidValue);
  CHECK(call(false, false, 4, 4, 4, p, 4, nullptr, 4, c, 4, nullptr, none) ==
        cudaErrorInvalidValue);
  CHECK(call(false, false, 65535 * 128 + 1, 1, 1, p, 1, p, 1, c, 1, nullptr, none) ==
        cudaErrorInvalidValue);  // more row tiles than gridDim.y allows
}

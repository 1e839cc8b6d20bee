// gemm_bf16 (the experimental AVX512_BF16 GEMM) against double references.
//
// Two references for every case:
//   - EXACT INPUTS: a double product of the inputs rounded to bf16 here (round to nearest even,
//     written independently of the kernel). bf16 x bf16 products are exact in fp32, so the only
//     error left is fp32 accumulation: max |got - want| <= 2e-5 * max |want|.
//   - FP32 INPUTS: a double product of the unrounded inputs, with the bf16 bound element by
//     element: bf16 keeps 8 significant bits (unit roundoff 2^-8), so rounding a and b moves
//     a*b by at most (2^-7 + 2^-16) |a b|, and
//     |got - want| <= 1.01 * 2^-7 |alpha| sum_k |a_ik b_kj| (+ the accumulation term above); and,
//     where K >= 64 and there are >= 1000 outputs (so max |want| is not one cancelling dot
//     product), max |got - want| <= 1e-2 * max |want|.
// Cases cover the four transpose combinations, awkward sizes (1, 7, 31, 33, 97, 130, odd K),
// leading dimensions larger than the rows, alpha/beta other than 1/0, beta = 0 over a C full of
// NaN (C must not be read), sizes that cross every cache block (MC, NC, KC), few-row products
// (threads split columns), and calls from inside an OpenMP region (one thread).
// On a CPU without avx512bf16 every case prints "SKIPPED: ..." and ctest reports it skipped.
#include <catch2/catch.hpp>

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/gemm_bf16.hpp"
#include "nuri/error.hpp"
#include "nuri/rng.hpp"

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

bool available_or_skip() {
  if (nuri::gemm_bf16_available()) return true;
  std::printf("SKIPPED: this CPU has no avx512bf16; gemm_bf16 is not tested here\n");
  return false;
}

// Round to nearest even bf16, denormals to (signed) zero as VCVTNE2PS2BF16 does.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0) {
    u &= 0x80000000u;
  } else {
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
  }
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

struct Case {
  bool ta, tb;
  int M, N, K;
  int pad_a = 0, pad_b = 0, pad_c = 0;  // extra floats per row beyond the logical row length
  float alpha = 1.0f, beta = 0.0f;
};

std::string describe(const Case& c) {
  std::ostringstream s;
  s << (c.ta ? "T" : "N") << (c.tb ? "T" : "N") << " M=" << c.M << " N=" << c.N << " K=" << c.K
    << " pads=" << c.pad_a << "/" << c.pad_b << "/" << c.pad_c << " alpha=" << c.alpha
    << " beta=" << c.beta;
  return s.str();
}

// C_want (M,N) = alpha op(A) op(B) + beta C0, in double; round selects bf16-rounded inputs.
// abs_sum (when given) gets |alpha| sum_k |op(A)_ik op(B)_kj|.
DVec reference(const Case& c, const Vec& A, int lda, const Vec& B, int ldb, const Vec& C0, int ldc,
               bool round, DVec* abs_sum = nullptr) {
  auto a = [&](int i, int k) {
    const float x = c.ta ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
    return double(round ? round_bf16(x) : x);
  };
  auto b = [&](int k, int j) {
    const float x = c.tb ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
    return double(round ? round_bf16(x) : x);
  };
  DVec out(size_t(c.M) * c.N);
  if (abs_sum) abs_sum->assign(out.size(), 0.0);
  DVec brow(c.K);
  for (int j = 0; j < c.N; ++j) {
    for (int k = 0; k < c.K; ++k) brow[k] = b(k, j);
    for (int i = 0; i < c.M; ++i) {
      double s = 0.0, sa = 0.0;
      for (int k = 0; k < c.K; ++k) {
        const double p = a(i, k) * brow[k];
        s += p;
        sa += std::abs(p);
      }
      const double c0 = c.beta == 0.0f ? 0.0 : double(c.beta) * C0[size_t(i) * ldc + j];
      out[size_t(i) * c.N + j] = double(c.alpha) * s + c0;
      if (abs_sum) (*abs_sum)[size_t(i) * c.N + j] = std::abs(double(c.alpha)) * sa;
    }
  }
  return out;
}

// max |got - want| <= tol * max |want| over the logical (M,N) block (skipped when tol <= 0);
// element by element |got - want| <= bound_tol * bound + tol_floor * max |want| when bound is
// given; and the padding of C (the columns past N) must be untouched.
void check(const Case& c, const Vec& got, int ldc, const Vec& C0, const DVec& want, double tol,
           const char* against, const DVec* bound = nullptr, double bound_tol = 0.0,
           double tol_floor = 0.0) {
  double scale = 0.0, err = 0.0, excess = 0.0;
  int wi = 0, wj = 0;
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < c.N; ++j) scale = std::max(scale, std::abs(want[size_t(i) * c.N + j]));
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < c.N; ++j) {
      const double w = want[size_t(i) * c.N + j];
      const double e = std::abs(double(got[size_t(i) * ldc + j]) - w);
      if (!(e <= err)) {  // also catches NaN
        err = e;
        wi = i;
        wj = j;
      }
      if (bound) {
        const double allowed = bound_tol * (*bound)[size_t(i) * c.N + j] + tol_floor * scale;
        if (!(e <= allowed)) excess = std::max(excess, std::isnan(e) ? 1e30 : e - allowed);
      }
    }
  bool pad_ok = true;
  for (int i = 0; i < c.M; ++i)
    for (int j = c.N; j < ldc; ++j) {
      const float g = got[size_t(i) * ldc + j], w = C0[size_t(i) * ldc + j];
      if (std::memcmp(&g, &w, 4) != 0) pad_ok = false;
    }
  INFO(describe(c) << " vs " << against << ": max |error| " << err << " at (" << wi << "," << wj
                   << "), got " << got[size_t(wi) * ldc + wj] << ", want "
                   << want[size_t(wi) * c.N + wj] << ", scale " << scale << ", relative "
                   << err / scale << ", tol " << tol);
  REQUIRE(scale > 0.0);
  if (tol > 0.0) CHECK(err <= tol * scale);
  if (bound) CHECK(excess == 0.0);  // the element-wise bound holds everywhere
  CHECK(pad_ok);
}

// Runs one case on `threads` threads (0: from inside an OpenMP region of 2) and checks both
// references.
void run_case(const Case& c, uint64_t seed, int threads = 2) {
  const int a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int lda = std::max(1, a_cols + c.pad_a), ldb = std::max(1, b_cols + c.pad_b);
  const int ldc = c.N + c.pad_c;
  nuri::Rng rng(seed);
  Vec A(size_t(a_rows) * lda), B(size_t(b_rows) * ldb), C0(size_t(c.M) * ldc);
  for (auto& x : A) x = float(rng.normal());
  for (auto& x : B) x = float(rng.normal());
  for (auto& x : C0)
    x = c.beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : float(rng.normal());
  Vec C = C0;
  if (threads > 0) {
    omp_set_num_threads(threads);
    nuri::gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta,
                    C.data(), ldc);
  } else {
    omp_set_num_threads(2);
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      nuri::gemm_bf16(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta,
                      C.data(), ldc);
    }
  }
  omp_set_num_threads(2);
  check(c, C, ldc, C0, reference(c, A, lda, B, ldb, C0, ldc, true), 2e-5, "bf16-rounded inputs");
  DVec abs_sum;
  const DVec want = reference(c, A, lda, B, ldb, C0, ldc, false, &abs_sum);
  check(c, C, ldc, C0, want, c.K >= 64 && c.M * c.N >= 1000 ? 1e-2 : 0.0, "fp32 inputs", &abs_sum, 1.01 * 0x1p-7, 2e-5);
}

}  // namespace

TEST_CASE("gemm_bf16: awkward sizes, all transposes, strides, alpha and beta") {
  if (!available_or_skip()) return;
  const int sizes[] = {1, 7, 31, 33, 97, 130};
  const int ks[] = {1, 2, 7, 31, 33, 64, 97};
  uint64_t seed = 1;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    for (int m : sizes)
      for (int n : sizes)
        for (int k : ks) {
          // Sweep the strides and scalars along with the sizes rather than over every product.
          Case c{ta, tb, m, n, k};
          const int v = int(seed % 4);
          c.pad_a = v == 1 || v == 3 ? 5 : 0;
          c.pad_b = v == 2 || v == 3 ? 3 : 0;
          c.pad_c = v >= 2 ? 17 : 0;
          c.alpha = v == 0 ? 1.0f : -0.75f;
          c.beta = v == 0 ? 0.0f : v == 1 ? 1.0f : 0.5f;
          run_case(c, seed++);
        }
  }
}

TEST_CASE("gemm_bf16: products that cross every cache block") {
  if (!available_or_skip()) return;
  // Both drivers: A packed whole when it is small (<= 1.25 MiB of bf16: "few rows"), the
  // Goto/BLIS loop nest otherwise. K = 801 > KC with an odd tail.
  for (int t = 0; t < 4; ++t) {
    // few rows: 410 x 801 and 20 x 801 (N = 3100 crosses NC in the other driver)
    run_case(Case{bool(t & 1), bool(t & 2), 410, 100, 801, 3, 1, 9, 0.5f, -1.0f}, 100 + t);
    run_case(Case{bool(t & 1), bool(t & 2), 20, 3100, 801, 0, 4, 0, 1.0f, 1.0f}, 110 + t);
    // blocked, threads split rows: M = 410 > 2 threads x MC, K = 1701 > KC (4 blocks, odd tail)
    run_case(Case{bool(t & 1), bool(t & 2), 410, 100, 1701, 3, 1, 9, 0.5f, -1.0f}, 120 + t);
    // blocked, threads split columns (M < 4 MR panels), K = 40001: KC blocks in several groups
    run_case(Case{bool(t & 1), bool(t & 2), 20, 100, 40001, 0, 4, 0, 1.0f, 1.0f}, 130 + t);
  }
  // blocked with N = 3100 > NC
  run_case(Case{false, true, 300, 3100, 2301, 0, 0, 0, 1.0f, 0.0f}, 140);
  // The model's own layouts at a reduced size: forward (N,T), dinp (N,N), dweight (T,N).
  run_case(Case{false, true, 256, 384, 384}, 200);
  run_case(Case{false, false, 256, 384, 384}, 201);
  run_case(Case{true, false, 384, 384, 256, 0, 0, 0, 1.0f, 1.0f}, 202);
}

TEST_CASE("gemm_bf16: few rows (threads split columns), one thread, inside a parallel region") {
  if (!available_or_skip()) return;
  for (int t = 0; t < 4; ++t) {
    run_case(Case{bool(t & 1), bool(t & 2), 5, 1000, 130, 0, 0, 0, 1.0f, 0.0f}, 300 + t);
    run_case(Case{bool(t & 1), bool(t & 2), 40, 333, 97, 2, 2, 2, 2.0f, 1.0f}, 310 + t, 1);
    run_case(Case{bool(t & 1), bool(t & 2), 97, 130, 65, 0, 0, 0, 1.0f, 0.25f}, 320 + t, 0);
  }
}

TEST_CASE("gemm_bf16: empty products and bad leading dimensions") {
  if (!available_or_skip()) return;
  // K = 0: C = beta C; beta = 0 writes zeros over NaN.
  Vec C(6, std::numeric_limits<float>::quiet_NaN());
  nuri::gemm_bf16(false, false, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 3, 0.0f, C.data(), 3);
  for (float x : C) CHECK(x == 0.0f);
  Vec D(6, 2.0f);
  nuri::gemm_bf16(false, false, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 3, 0.5f, D.data(), 3);
  for (float x : D) CHECK(x == 1.0f);
  nuri::gemm_bf16(false, false, 0, 3, 4, 1.0f, nullptr, 4, nullptr, 3, 0.0f, nullptr, 3);
  Vec A(8, 1.0f), B(8, 1.0f);
  CHECK_THROWS_AS(
      nuri::gemm_bf16(false, false, 2, 2, 4, 1.0f, A.data(), 3, B.data(), 2, 0.0f, C.data(), 2),
      nuri::Error);
  CHECK_THROWS_AS(
      nuri::gemm_bf16(false, false, -1, 2, 4, 1.0f, A.data(), 4, B.data(), 2, 0.0f, C.data(), 2),
      nuri::Error);
}

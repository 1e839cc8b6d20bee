// The loss and vector kernels of kernels/cuda (cross_entropy, sum_squares, add, scale,
// bias_grad) under the emulator, against the CPU backend (the reference):
//   cross_entropy_partial / _backward   vs. Backend::cross_entropy_partial / _backward, with
//                                       vocab_start 0 and non-zero, targets inside and outside the
//                                       slice, and ignored (-1) targets;
//   cross_entropy_fused                 losses vs. lse - target logit from the CPU's
//                                       cross_entropy_partial (lse = max + log sum), the gradient vs.
//                                       Backend::cross_entropy_partial_backward with that lse;
//   cross_entropy_fused_bf16            bit for bit: cross_entropy_fused then cast_f32_to_bf16;
//   sum_squares                         vs. Backend::sum_squares (double) within 1e-12 relative;
//   add, scale                          bitwise (one fp32 operation per element);
//   bias_grad                           vs. the dbias of Backend::linear_backward (IC = 1).
// Every reduction is also run twice on one multi-block shape and must be bitwise equal
// (deterministic). Shapes are awkward (N 1, 3, 17; V 1, 5, 31, 33, 257, 1000, plus one row of
// 50257 and of 128256) and the grids small: the emulator spawns one host thread per CUDA thread,
// and its shuffles and barriers are slow (this file runs in ~10 s).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "add.cuh"
#include "bias_grad.cuh"
#include "cast.cuh"
#include "cross_entropy.cuh"
#include "scale.cuh"
#include "sum_squares.cuh"
#include "emu_test_util.hpp"

using namespace emu_test;  // NOLINT: the shared helpers of emu_test_util.hpp

namespace {

using Targets = std::vector<int32_t>;

// Logits (N,V) in [-3, 3] plus a per-row offset in [-10, 10] (the softmax must not care).
Vec make_logits(int N, int V, uint32_t seed) {
  Vec l = random_vec(size_t(N) * V, seed, -3.0f, 3.0f);
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < V; ++v) l[size_t(n) * V + v] += float((n % 5) * 5 - 10);
  return l;
}

// Full-vocabulary targets for the slice [vocab_start, vocab_start + V): rows cycle through a target
// inside the slice, an ignored row (-1), one above the slice and one below it (inside when the
// slice starts at 0).
Targets make_slice_targets(int N, int V, int vocab_start, uint32_t seed) {
  std::mt19937 rng(seed);
  Targets t(N);
  for (int n = 0; n < N; ++n) {
    switch (n % 4) {
      case 0: t[n] = vocab_start + int(rng() % unsigned(V)); break;
      case 1: t[n] = -1; break;
      case 2: t[n] = vocab_start + V + int(rng() % 100u); break;
      default:
        t[n] = vocab_start > 0 ? int(rng() % unsigned(vocab_start))
                               : vocab_start + int(rng() % unsigned(V));
    }
  }
  return t;
}

// Targets in [0, V) with every third row ignored, for the fused single-slice op.
Targets make_targets(int N, int V, uint32_t seed) {
  std::mt19937 rng(seed);
  Targets t(N);
  for (int n = 0; n < N; ++n) t[n] = n % 3 == 1 ? -1 : int(rng() % unsigned(V));
  return t;
}

struct Partial {
  Vec row_max, row_sum, target_logit;
};

Partial cpu_partial(const Vec& logits, const Targets& t, int N, int V, int vocab_start) {
  Partial p{Vec(N), Vec(N), Vec(N)};
  cpu().cross_entropy_partial(p.row_max.data(), p.row_sum.data(), p.target_logit.data(),
                              logits.data(), t.data(), N, V, vocab_start);
  return p;
}

Partial gpu_partial(const Vec& logits, const Targets& t, int N, int V, int vocab_start) {
  Partial p{Vec(N, -7.0f), Vec(N, -7.0f), Vec(N, -7.0f)};  // every output must be written
  REQUIRE(cu::cross_entropy_partial(p.row_max.data(), p.row_sum.data(), p.target_logit.data(),
                                    logits.data(), t.data(), N, V, vocab_start,
                                    kStream) == cudaSuccess);
  return p;
}

// lse (N) = max + log(sum), from the CPU's partial statistics of a whole row.
Vec lse_of(const Partial& p) {
  Vec lse(p.row_max.size());
  for (size_t n = 0; n < lse.size(); ++n)
    lse[n] = float(double(p.row_max[n]) + std::log(double(p.row_sum[n])));
  return lse;
}

// One (N, V, vocab_start) case; `twice`: run the forward again and compare bits (determinism).
void check_partial_and_backward(int N, int V, int vocab_start, uint32_t seed, bool twice) {
  INFO("N = " << N << ", V = " << V << ", vocab_start = " << vocab_start);
  const Vec logits = make_logits(N, V, seed);
  const Targets t = make_slice_targets(N, V, vocab_start, seed + 1);
  const Partial want = cpu_partial(logits, t, N, V, vocab_start);
  const Partial got = gpu_partial(logits, t, N, V, vocab_start);
  check_equal("cross_entropy_partial row_max", got.row_max, want.row_max);
  check_close("cross_entropy_partial row_sum", got.row_sum, want.row_sum);
  check_equal("cross_entropy_partial target_logit", got.target_logit, want.target_logit);
  if (twice) {
    const Partial again = gpu_partial(logits, t, N, V, vocab_start);
    check_equal("cross_entropy_partial row_sum, run twice", again.row_sum, got.row_sum);
  }

  // The slice's own lse stands in for the full rows' (any lse exercises the same formula).
  const Vec lse = lse_of(want);
  const float scale = 0.37f;
  Vec grad = logits, grad_want = logits;
  REQUIRE(cu::cross_entropy_partial_backward(grad.data(), lse.data(), t.data(), N, V, vocab_start,
                                             scale, kStream) == cudaSuccess);
  cpu().cross_entropy_partial_backward(grad_want.data(), lse.data(), t.data(), N, V, vocab_start,
                                       scale);
  check_close("cross_entropy_partial_backward", grad, grad_want, 1e-5f, 1e-7f);
}

// One (N, V) case: forward only (scale 0) and with the gradient; `twice`: run again and compare.
void check_fused(int N, int V, uint32_t seed, bool twice) {
  INFO("N = " << N << ", V = " << V);
  const Vec logits = make_logits(N, V, seed);
  const Targets t = make_targets(N, V, seed + 1);
  const Partial p = cpu_partial(logits, t, N, V, 0);
  Vec loss_want(N, 0.0f);
  for (int n = 0; n < N; ++n)
    if (t[n] >= 0)
      loss_want[n] = float(double(p.row_max[n]) + std::log(double(p.row_sum[n])) -
                           double(p.target_logit[n]));
  const float scale = 0.25f;
  Vec grad_want = logits;
  const Vec lse = lse_of(p);
  cpu().cross_entropy_partial_backward(grad_want.data(), lse.data(), t.data(), N, V, 0, scale);

  // Forward only: losses, logits untouched.
  Vec fwd = logits, loss_fwd(N, -7.0f);
  REQUIRE(cu::cross_entropy_fused(fwd.data(), loss_fwd.data(), t.data(), N, V, 0.0f, kStream) ==
          cudaSuccess);
  check_close("cross_entropy_fused loss (forward only)", loss_fwd, loss_want, 1e-5f, 1e-5f);
  check_equal("cross_entropy_fused scale 0 leaves the logits", fwd, logits);

  // Loss and gradient.
  Vec grad = logits, loss(N, -7.0f);
  REQUIRE(cu::cross_entropy_fused(grad.data(), loss.data(), t.data(), N, V, scale, kStream) ==
          cudaSuccess);
  check_equal("cross_entropy_fused loss with and without the gradient", loss, loss_fwd);
  check_close("cross_entropy_fused gradient", grad, grad_want, 1e-5f, 1e-7f);

  // The gradient straight into bf16: the loss as above, the bits of the fp32 gradient rounded by
  // cast_f32_to_bf16, the logits only read.
  std::vector<__nv_bfloat16> g16(size_t(N) * V), g16_want(size_t(N) * V);
  REQUIRE(cu::cast_f32_to_bf16(g16_want.data(), grad.data(), grad.size(), kStream) == cudaSuccess);
  Vec read = logits, loss16(N, -7.0f);
  REQUIRE(cu::cross_entropy_fused_bf16(g16.data(), loss16.data(), read.data(), t.data(), N, V, scale,
                                       kStream) == cudaSuccess);
  check_equal("cross_entropy_fused_bf16 loss", loss16, loss);
  check_equal("cross_entropy_fused_bf16 leaves the logits", read, logits);
  CHECK(std::memcmp(g16.data(), g16_want.data(), g16.size() * sizeof(__nv_bfloat16)) == 0);

  if (twice) {
    Vec grad2 = logits, loss2(N);
    REQUIRE(cu::cross_entropy_fused(grad2.data(), loss2.data(), t.data(), N, V, scale, kStream) ==
            cudaSuccess);
    check_equal("cross_entropy_fused loss, run twice", loss2, loss);
    check_equal("cross_entropy_fused gradient, run twice", grad2, grad);
  }
}

// (N, V, vocab_start): every N of {1, 3, 17} and V of {1, 5, 31, 33, 257, 1000}, both slice
// offsets, without the full cross product (the emulator's threads are slow to spawn). N = 17 with
// V = 1000 is the multi-warp, multi-row case that is also run twice.
struct Case {
  int N, V, vocab_start;
};
constexpr Case kCases[] = {{1, 1, 0},    {3, 1, 613},   {3, 5, 0},       {1, 5, 613},
                           {17, 31, 613}, {1, 31, 0},   {3, 33, 0},      {17, 33, 613},
                           {1, 257, 613}, {17, 257, 0}, {3, 1000, 613},  {1, 1000, 0},
                           {17, 1000, 0}};

}  // namespace

TEST_CASE("cross_entropy_partial and backward (vocab slices, ignored targets)", "[cross_entropy]") {
  uint32_t seed = 100;
  for (const Case& c : kCases)
    check_partial_and_backward(c.N, c.V, c.vocab_start, seed += 10, c.N == 17 && c.V == 1000);
  // Real vocabularies: 1024 threads per row, ~49 and ~125 logits per thread.
  check_partial_and_backward(1, 50257, 50257, 7, false);
  check_partial_and_backward(1, 128256, 0, 8, false);

  float f = 0.0f;
  const int32_t t = 0;
  CHECK(cu::cross_entropy_partial(&f, &f, &f, &f, &t, 1, 0, 0, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_partial(&f, &f, &f, &f, &t, -1, 4, 0, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_partial(&f, &f, &f, &f, &t, 1, 4, -1, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_partial_backward(&f, &f, &t, 1, 0, 0, 1.0f, kStream) ==
        cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_partial(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 0, kStream) ==
        cudaSuccess);
}

TEST_CASE("cross_entropy_fused (loss and in-place gradient, ignored targets)", "[cross_entropy]") {
  uint32_t seed = 900;
  for (const Case& c : kCases) check_fused(c.N, c.V, seed += 10, c.N == 17 && c.V == 1000);
  check_fused(1, 50257, 11, false);
  check_fused(1, 128256, 12, false);

  // A target outside the vocabulary is not read out of bounds: its loss is NaN.
  Vec logits = make_logits(1, 7, 3), loss(1);
  const Targets bad{7};
  REQUIRE(cu::cross_entropy_fused(logits.data(), loss.data(), bad.data(), 1, 7, 1.0f, kStream) ==
          cudaSuccess);
  CHECK(std::isnan(loss[0]));

  float f = 0.0f;
  const int32_t t = 0;
  CHECK(cu::cross_entropy_fused(&f, &f, &t, 1, 0, 1.0f, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_fused(&f, &f, &t, -1, 1, 1.0f, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_fused(nullptr, nullptr, nullptr, 0, 1, 1.0f, kStream) == cudaSuccess);
  __nv_bfloat16 h{};
  CHECK(cu::cross_entropy_fused_bf16(&h, &f, &f, &t, 1, 0, 1.0f, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_fused_bf16(&h, &f, &f, &t, 1, 1, 0.0f, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_fused_bf16(nullptr, &f, &f, &t, 1, 1, 1.0f, kStream) == cudaErrorInvalidValue);
  CHECK(cu::cross_entropy_fused_bf16(nullptr, nullptr, nullptr, nullptr, 0, 1, 1.0f, kStream) == cudaSuccess);
}

TEST_CASE("sum_squares (double, deterministic)", "[sum_squares]") {
  std::vector<double> partials(cu::sum_squares_partials());
  for (size_t n : {size_t(0), size_t(1), size_t(1000), size_t(100003)}) {
    INFO("n = " << n);
    const Vec x = random_vec(n, uint32_t(n + 5), -3.0f, 3.0f);
    double got = std::numeric_limits<double>::quiet_NaN(), again = got;
    REQUIRE(cu::sum_squares(&got, x.data(), n, partials.data(), kStream) == cudaSuccess);
    REQUIRE(cu::sum_squares(&again, x.data(), n, partials.data(), kStream) == cudaSuccess);
    const double want = cpu().sum_squares(x.data(), n);
    if (n == 0) {
      CHECK(got == 0.0);
    } else {
      CHECK(std::fabs(got - want) <= 1e-12 * want);
    }
    CHECK(std::memcmp(&got, &again, sizeof got) == 0);
  }
  double out = 0.0;
  float f = 0.0f;
  CHECK(cu::sum_squares(nullptr, &f, 1, partials.data(), kStream) == cudaErrorInvalidValue);
  CHECK(cu::sum_squares(&out, &f, 1, nullptr, kStream) == cudaErrorInvalidValue);
  CHECK(cu::sum_squares(&out, nullptr, 0, nullptr, kStream) == cudaSuccess);
}

TEST_CASE("add and scale (aliasing, bitwise equal to the CPU)", "[add][scale]") {
  for (size_t n : {size_t(1), size_t(1000), size_t(2053)}) {
    INFO("n = " << n);
    const Vec a = random_vec(n, uint32_t(n), -5.0f, 5.0f);
    const Vec b = random_vec(n, uint32_t(n + 1), -5.0f, 5.0f);
    Vec out(n), want(n);
    REQUIRE(cu::add(out.data(), a.data(), b.data(), n, kStream) == cudaSuccess);
    cpu().add(want.data(), a.data(), b.data(), n);
    check_equal("add", out, want);
    Vec alias_a = a, alias_b = b;
    REQUIRE(cu::add(alias_a.data(), alias_a.data(), b.data(), n, kStream) == cudaSuccess);
    REQUIRE(cu::add(alias_b.data(), a.data(), alias_b.data(), n, kStream) == cudaSuccess);
    check_equal("add, out aliasing a", alias_a, want);
    check_equal("add, out aliasing b", alias_b, want);

    Vec x = a, x_want = a;
    REQUIRE(cu::scale(x.data(), -0.3f, n, kStream) == cudaSuccess);
    cpu().scale(x_want.data(), -0.3f, n);
    check_equal("scale", x, x_want);
  }
  CHECK(cu::add(nullptr, nullptr, nullptr, 0, kStream) == cudaSuccess);
  CHECK(cu::scale(nullptr, 2.0f, 0, kStream) == cudaSuccess);
  CHECK(cu::scale(nullptr, 2.0f, 1, kStream) == cudaErrorInvalidValue);
}

TEST_CASE("bias_grad (column sums, accumulating, deterministic)", "[bias_grad]") {
  for (int N : {1, 37}) {
    for (int OC : {1, 31, 100}) {
      INFO("N = " << N << ", OC = " << OC);
      const Vec dout = random_vec(size_t(N) * OC, uint32_t(N * 1000 + OC));
      const Vec start = random_vec(OC, uint32_t(OC + 7));  // dbias accumulates
      Vec db = start, db_want = start;
      REQUIRE(cu::bias_grad(db.data(), dout.data(), N, OC, kStream) == cudaSuccess);
      // The CPU reference: linear_backward with IC = 1 (its dweight is not compared).
      const Vec inp(N, 1.0f), weight(OC, 1.0f);
      Vec dweight(OC, 0.0f);
      cpu().linear_backward(nullptr, dweight.data(), db_want.data(), dout.data(), inp.data(),
                            weight.data(), N, 1, OC);
      check_close("bias_grad", db, db_want, 1e-5f, 1e-5f);
      if (N == 37 && OC == 100) {
        Vec db2 = start;
        REQUIRE(cu::bias_grad(db2.data(), dout.data(), N, OC, kStream) == cudaSuccess);
        check_equal("bias_grad, run twice", db2, db);
      }
    }
  }
  float f = 0.0f;
  CHECK(cu::bias_grad(&f, &f, 1, 0, kStream) == cudaErrorInvalidValue);
  CHECK(cu::bias_grad(&f, &f, -1, 1, kStream) == cudaErrorInvalidValue);
  CHECK(cu::bias_grad(&f, &f, 0, 1, kStream) == cudaSuccess);
}

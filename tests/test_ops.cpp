// CPU backend ops against independent double-precision references and finite differences.
//
// Method, for every op:
//   - forward: the backend's fp32 output against a naive double implementation written here
//     (loops, no BLAS, no shared code with src/backend), on awkward sizes: odd, prime, not a
//     multiple of 16 or of the attention row block (64);
//   - backward: a scalar loss L = sum(out * R) with a fixed random R, so dL/dout = R. The
//     backend's analytic gradient of every input and parameter is compared with CENTRAL
//     DIFFERENCES IN DOUBLE of the naive double forward (step 1e-6), so the check is limited by
//     the fp32 backward (~1e-6 relative), not by fp32 rounding in the differences. Where the
//     inputs are too many for full differences (attention, the big LM head) a random sample of
//     entries is differenced, plus one directional derivative along a random vector that touches
//     every entry.
// Errors are measured as max |got - want| / max |want| over the tensor (the scale of the
// reference), and each reference is required to be non-trivial (max |want| > 0) so that no
// comparison can pass vacuously.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/rng.hpp"

namespace {

using nuri::CpuBackend;
using nuri::Rng;
using Vec = std::vector<float>;
using DVec = std::vector<double>;

constexpr int kThreads = 2;  // exercise the multi-threaded paths (the CI machine has 2 cores)

Vec randn(size_t n, Rng& rng, double scale = 1.0) {
  Vec v(n);
  for (auto& x : v) x = float(rng.normal() * scale);
  return v;
}

DVec to_double(const Vec& v) { return DVec(v.begin(), v.end()); }

DVec minus(const Vec& a, const Vec& b) {
  DVec d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = double(a[i]) - double(b[i]);
  return d;
}

// max |got - want| <= tol * max |want|, with the worst entry in the failure message.
template <class Got>
void check_close(const Got& got, const DVec& want, double tol, const std::string& what) {
  REQUIRE(got.size() == want.size());
  double scale = 0.0, err = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::abs(want[i]));
    const double e = std::abs(double(got[i]) - want[i]);
    if (!(e <= err)) {  // also catches NaN
      err = e;
      worst = i;
    }
  }
  INFO(what << ": max |error| " << err << " at [" << worst << "] (got " << double(got[worst])
            << ", want " << want[worst] << "), reference scale " << scale << ", tol " << tol);
  REQUIRE(scale > 0.0);
  CHECK(err <= tol * scale);
}

// dL/dx by central differences in double; `loss` reads x (captured by reference elsewhere).
template <class Loss>
DVec central_diff(DVec& x, Loss&& loss, double eps = 1e-6) {
  DVec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double lp = loss();
    x[i] = keep - eps;
    const double lm = loss();
    x[i] = keep;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

// Central differences at the given indices only; compares with got[idx].
template <class Got, class Loss>
void check_grad_sampled(const Got& got, DVec& x, const std::vector<size_t>& idx, Loss&& loss,
                        double tol, const std::string& what, double eps = 1e-6) {
  DVec want(idx.size()), have(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    const size_t i = idx[k];
    const double keep = x[i];
    x[i] = keep + eps;
    const double lp = loss();
    x[i] = keep - eps;
    const double lm = loss();
    x[i] = keep;
    want[k] = (lp - lm) / (2 * eps);
    have[k] = got[i];
  }
  check_close(have, want, tol, what);
}

// Every entry of x by central differences when `full`, else `samples` random entries.
template <class Got, class Loss>
void check_grad(const Got& got, DVec& x, Loss&& loss, double tol, const std::string& what, Rng& rng,
                int samples, bool full) {
  if (full) {
    check_close(got, central_diff(x, loss), tol, what);
    return;
  }
  std::vector<size_t> idx;
  for (int k = 0; k < samples; ++k) idx.push_back(rng.below(x.size()));
  check_grad_sampled(got, x, idx, loss, tol, what + " (sampled)");
}

double dot(const DVec& a, const DVec& r) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
  return s;
}

// ---------------------------------------------------------------- naive double references

// out (N,OC) = inp (N,IC) W^T + b
DVec ref_linear(const DVec& inp, const DVec& w, const DVec* b, int N, int IC, int OC) {
  DVec out(size_t(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = b ? (*b)[o] : 0.0;
      for (int i = 0; i < IC; ++i) s += inp[size_t(n) * IC + i] * w[size_t(o) * IC + i];
      out[size_t(n) * OC + o] = s;
    }
  return out;
}

DVec ref_layernorm(const DVec& x, const DVec& w, const DVec& b, int N, int C, double eps,
                   DVec* mean = nullptr, DVec* rstd = nullptr) {
  DVec out(x.size());
  if (mean) mean->assign(N, 0.0);
  if (rstd) rstd->assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    const double* r = &x[size_t(n) * C];
    double m = 0.0;
    for (int c = 0; c < C; ++c) m += r[c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; ++c) var += (r[c] - m) * (r[c] - m);
    var /= C;
    const double rs = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < C; ++c) out[size_t(n) * C + c] = (r[c] - m) * rs * w[c] + b[c];
    if (mean) (*mean)[n] = m;
    if (rstd) (*rstd)[n] = rs;
  }
  return out;
}

DVec ref_rmsnorm(const DVec& x, const DVec& w, int N, int C, double eps, DVec* rstd = nullptr) {
  DVec out(x.size());
  if (rstd) rstd->assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    double ss = 0.0;
    for (int c = 0; c < C; ++c) ss += x[size_t(n) * C + c] * x[size_t(n) * C + c];
    const double rs = 1.0 / std::sqrt(ss / C + eps);
    for (int c = 0; c < C; ++c) out[size_t(n) * C + c] = x[size_t(n) * C + c] * rs * w[c];
    if (rstd) (*rstd)[n] = rs;
  }
  return out;
}

double ref_gelu(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

DVec ref_swiglu(const DVec& inp, int N, int F) {
  DVec out(size_t(N) * F);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < F; ++j) {
      const double g = inp[size_t(n) * 2 * F + j], u = inp[size_t(n) * 2 * F + F + j];
      out[size_t(n) * F + j] = g / (1.0 + std::exp(-g)) * u;
    }
  return out;
}

// Rotates x (B,T,nh,D) with row stride rs, half-split pairs, by +angle (sign=1) or -angle.
DVec ref_rope(const DVec& x, int B, int T, int nh, int D, int rs, double theta, double sign) {
  DVec y = x;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < nh; ++h)
        for (int i = 0; i < D / 2; ++i) {
          const double a = sign * t * std::pow(theta, -2.0 * i / D);
          const size_t p = (size_t(b) * T + t) * rs + size_t(h) * D + i, q = p + D / 2;
          y[p] = x[p] * std::cos(a) - x[q] * std::sin(a);
          y[q] = x[p] * std::sin(a) + x[q] * std::cos(a);
        }
  return y;
}

// Causal GQA attention with an explicit softmax over each score row.
DVec ref_attention(const DVec& qkv, int B, int T, int H, int KV, int D, DVec* lse = nullptr) {
  const int R = (H + 2 * KV) * D;
  DVec out(size_t(B) * T * H * D, 0.0);
  if (lse) lse->assign(size_t(B) * H * T, 0.0);
  std::vector<double> s(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int kvh = h / (H / KV);
      for (int i = 0; i < T; ++i) {
        const double* q = &qkv[(size_t(b) * T + i) * R + size_t(h) * D];
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          const double* k = &qkv[(size_t(b) * T + j) * R + size_t(H + kvh) * D];
          double d = 0.0;
          for (int e = 0; e < D; ++e) d += q[e] * k[e];
          s[j] = d / std::sqrt(double(D));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= i; ++j) sum += std::exp(s[j] - mx);
        if (lse) (*lse)[(size_t(b) * H + h) * T + i] = mx + std::log(sum);
        double* o = &out[(size_t(b) * T + i) * H * D + size_t(h) * D];
        for (int j = 0; j <= i; ++j) {
          const double p = std::exp(s[j] - mx) / sum;
          const double* v = &qkv[(size_t(b) * T + j) * R + size_t(H + KV + kvh) * D];
          for (int e = 0; e < D; ++e) o[e] += p * v[e];
        }
      }
    }
  return out;
}

// Sum over rows with target >= 0 of logsumexp(logits) - logits[target]; logits = x W^T.
double ref_cross_entropy(const DVec& x, const DVec& w, const std::vector<int32_t>& tg, int N,
                         int C, int V) {
  double total = 0.0;
  DVec l(V);
  for (int n = 0; n < N; ++n) {
    if (tg[n] < 0) continue;
    double mx = -INFINITY;
    for (int v = 0; v < V; ++v) {
      double s = 0.0;
      for (int c = 0; c < C; ++c) s += x[size_t(n) * C + c] * w[size_t(v) * C + c];
      l[v] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    total += mx + std::log(sum) - l[tg[n]];
  }
  return total;
}

}  // namespace

// ===================================================================== memory and vectors

TEST_CASE("alloc is zeroed and 64-byte aligned; zero and copy", "[ops][memory]") {
  CpuBackend be(kThreads);
  for (size_t count : {size_t(1), size_t(13), size_t(100003)}) {
    float* p = be.alloc(count);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < count; ++i) nonzero += p[i] != 0.0f;
    CHECK(nonzero == 0);
    Rng rng(1);
    Vec src = randn(count, rng);
    be.copy(p, src.data(), count);
    CHECK(std::memcmp(p, src.data(), count * sizeof(float)) == 0);
    be.zero(p, count);
    nonzero = 0;
    for (size_t i = 0; i < count; ++i) nonzero += p[i] != 0.0f;
    CHECK(nonzero == 0);
    be.free(p);
  }
}

TEST_CASE("add, scale and sum_squares", "[ops][vector]") {
  CpuBackend be(kThreads);
  Rng rng(2);
  for (size_t n : {size_t(7), size_t(100003)}) {
    CAPTURE(n);
    const Vec a = randn(n, rng), b = randn(n, rng);
    // add: exact, elementwise fp32, also in place (out aliases a).
    Vec out(n), inplace = a;
    be.add(out.data(), a.data(), b.data(), n);
    be.add(inplace.data(), inplace.data(), b.data(), n);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += out[i] != a[i] + b[i] || inplace[i] != a[i] + b[i];
    CHECK(bad == 0);
    // scale: exact.
    Vec x = a;
    be.scale(x.data(), -0.37f, n);
    bad = 0;
    for (size_t i = 0; i < n; ++i) bad += x[i] != a[i] * -0.37f;
    CHECK(bad == 0);
    // sum_squares: double accumulation, so only the summation order differs.
    double want = 0.0;
    for (float v : a) want += double(v) * double(v);
    CHECK(std::abs(be.sum_squares(a.data(), n) - want) <= 1e-12 * want);
  }
}

// ===================================================================== dense algebra

TEST_CASE("gemm: all four transpose combinations with padded leading dimensions", "[ops][gemm]") {
  CpuBackend be(kThreads);
  Rng rng(3);
  const int M = 7, N = 13, K = 11;
  const float alpha = 0.7f, beta = 0.3f;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      CAPTURE(ta, tb);
      // Stored shapes: A is (M,K) or (K,M); B is (K,N) or (N,K); rows padded past their length.
      const int a_rows = ta ? K : M, a_cols = ta ? M : K, lda = a_cols + 3;
      const int b_rows = tb ? N : K, b_cols = tb ? K : N, ldb = b_cols + 5;
      const int ldc = N + 2;
      const Vec A = randn(size_t(a_rows) * lda, rng), B = randn(size_t(b_rows) * ldb, rng);
      const Vec C0 = randn(size_t(M) * ldc, rng);
      Vec C = C0;
      be.gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      DVec want(C.size());
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < ldc; ++n) {
          if (n >= N) {  // padding must be left alone
            want[size_t(m) * ldc + n] = C0[size_t(m) * ldc + n];
            continue;
          }
          double s = 0.0;
          for (int k = 0; k < K; ++k) {
            const double a = ta ? A[size_t(k) * lda + m] : A[size_t(m) * lda + k];
            const double b = tb ? B[size_t(n) * ldb + k] : B[size_t(k) * ldb + n];
            s += a * b;
          }
          want[size_t(m) * ldc + n] = alpha * s + beta * double(C0[size_t(m) * ldc + n]);
        }
      check_close(C, want, 1e-6, "gemm C");
    }
}

TEST_CASE("gemm rejects a leading dimension shorter than the row", "[ops][gemm]") {
  CpuBackend be(kThreads);
  Vec a(64), b(64), c(64);
  CHECK_THROWS_AS(be.gemm(false, false, 3, 3, 4, 1.0f, a.data(), 3, b.data(), 3, 0.0f, c.data(), 3),
                  nuri::Error);
}

TEST_CASE("linear forward and backward", "[ops][linear]") {
  CpuBackend be(kThreads);
  Rng rng(4);
  // (7,13,11): tiny and odd; (67,19,521): N*OC above the threshold where the bias broadcast and
  // the column sums go multi-threaded, with OC not a multiple of the 16-column split.
  const int sizes[2][3] = {{7, 13, 11}, {67, 19, 521}};
  for (const auto& sz : sizes) {
    const int N = sz[0], IC = sz[1], OC = sz[2];
    for (bool with_bias : {true, false})
      for (bool accumulate : {false, true}) {
        CAPTURE(N, IC, OC, with_bias, accumulate);
        const Vec inp = randn(size_t(N) * IC, rng), w = randn(size_t(OC) * IC, rng);
        const Vec b = randn(OC, rng), out0 = randn(size_t(N) * OC, rng);
        Vec out = out0;
        be.linear_forward(out.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, N, IC,
                          OC, accumulate);
        const DVec bd = to_double(b);
        DVec want = ref_linear(to_double(inp), to_double(w), with_bias ? &bd : nullptr, N, IC, OC);
        if (accumulate)
          for (size_t i = 0; i < want.size(); ++i) want[i] += out0[i];
        check_close(out, want, 1e-6, "linear out");
      }

    // Backward: L = sum(out * R). Parameter gradients start non-zero to check they accumulate;
    // dinp starts as garbage to check it is overwritten.
    for (bool with_bias : {true, false}) {
      CAPTURE(N, IC, OC, with_bias);
      const Vec inp = randn(size_t(N) * IC, rng), w = randn(size_t(OC) * IC, rng);
      const Vec b = randn(OC, rng), R = randn(size_t(N) * OC, rng);
      const Vec dw0 = randn(w.size(), rng), db0 = randn(OC, rng);
      Vec dinp(inp.size(), 1e3f), dw = dw0, db = db0;
      be.linear_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, R.data(),
                         inp.data(), w.data(), N, IC, OC);
      DVec xi = to_double(inp), xw = to_double(w), xb = to_double(b);
      const DVec Rd = to_double(R);
      auto loss = [&] { return dot(ref_linear(xi, xw, with_bias ? &xb : nullptr, N, IC, OC), Rd); };
      if (N * OC < 10000) {  // full central differences on the small case
        check_close(dinp, central_diff(xi, loss), 1e-5, "linear dinp vs FD");
        check_close(minus(dw, dw0), central_diff(xw, loss), 1e-5, "linear dweight vs FD");
        if (with_bias) check_close(minus(db, db0), central_diff(xb, loss), 1e-5, "linear dbias vs FD");
      } else {  // the big case against the closed forms dW = R^T inp, db = colsum(R)
        DVec want_dw(w.size(), 0.0), want_db(OC, 0.0);
        for (int n = 0; n < N; ++n)
          for (int o = 0; o < OC; ++o) {
            want_db[o] += Rd[size_t(n) * OC + o];
            for (int i = 0; i < IC; ++i)
              want_dw[size_t(o) * IC + i] += Rd[size_t(n) * OC + o] * xi[size_t(n) * IC + i];
          }
        check_close(minus(dw, dw0), want_dw, 1e-5, "linear dweight vs closed form");
        if (with_bias) check_close(minus(db, db0), want_db, 1e-5, "linear dbias vs closed form");
        std::vector<size_t> idx;
        for (int k = 0; k < 40; ++k) idx.push_back(rng.below(xi.size()));
        check_grad_sampled(dinp, xi, idx, loss, 1e-5, "linear dinp vs FD (sampled)");
      }
      if (!with_bias) CHECK(std::equal(db.begin(), db.end(), db0.begin()));
    }
  }

  SECTION("dinp may be null") {
    const int N = 5, IC = 3, OC = 4;
    const Vec inp = randn(size_t(N) * IC, rng), w = randn(size_t(OC) * IC, rng);
    const Vec R = randn(size_t(N) * OC, rng);
    Vec dw(w.size(), 0.0f);
    be.linear_backward(nullptr, dw.data(), nullptr, R.data(), inp.data(), w.data(), N, IC, OC);
    DVec want(w.size(), 0.0);
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o)
        for (int i = 0; i < IC; ++i)
          want[size_t(o) * IC + i] += double(R[size_t(n) * OC + o]) * inp[size_t(n) * IC + i];
    check_close(dw, want, 1e-6, "linear dweight without dinp");
  }
}

// ===================================================================== norms

TEST_CASE("layernorm forward and backward", "[ops][layernorm]") {
  CpuBackend be(kThreads);
  Rng rng(5);
  const float eps = 1e-5f;
  // (7,13): small, full differences. (37,515): above the multi-threading threshold.
  for (auto [N, C] : {std::pair{7, 13}, std::pair{37, 515}}) {
    CAPTURE(N, C);
    // An offset mean checks the two-pass variance.
    Vec x = randn(size_t(N) * C, rng, 2.0);
    for (auto& v : x) v += 3.0f;
    const Vec w = randn(C, rng), b = randn(C, rng), R = randn(size_t(N) * C, rng);
    Vec out(x.size()), mean(N), rstd(N);
    be.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                         eps);
    DVec xd = to_double(x), wd = to_double(w), bd = to_double(b), want_mean, want_rstd;
    check_close(out, ref_layernorm(xd, wd, bd, N, C, eps, &want_mean, &want_rstd), 1e-5,
                "layernorm out");
    check_close(mean, want_mean, 1e-6, "layernorm mean");
    check_close(rstd, want_rstd, 1e-5, "layernorm rstd");

    // Backward accumulates into dinp, dweight and dbias, so all three start non-zero.
    const Vec dx0 = randn(x.size(), rng), dw0 = randn(C, rng), db0 = randn(C, rng);
    Vec dx = dx0, dw = dw0, db = db0;
    be.layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), N, C);
    const DVec Rd = to_double(R);
    auto loss = [&] { return dot(ref_layernorm(xd, wd, bd, N, C, eps), Rd); };
    const DVec ddx = minus(dx, dx0);
    check_grad(ddx, xd, loss, 2e-5, "layernorm dinp vs FD", rng, 60, N * C < 1000);
    check_close(minus(dw, dw0), central_diff(wd, loss), 2e-5, "layernorm dweight vs FD");
    check_close(minus(db, db0), central_diff(bd, loss), 2e-5, "layernorm dbias vs FD");
  }

  SECTION("no bias") {
    const int N = 3, C = 5;
    const Vec x = randn(size_t(N) * C, rng), w = randn(C, rng);
    Vec out(x.size()), mean(N), rstd(N);
    be.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), nullptr, N, C,
                         eps);
    check_close(out, ref_layernorm(to_double(x), to_double(w), DVec(C, 0.0), N, C, eps), 1e-5,
                "layernorm out without bias");
    Vec dx(x.size(), 0.0f), dw(C, 0.0f);
    const Vec R = randn(x.size(), rng);
    be.layernorm_backward(dx.data(), dw.data(), nullptr, R.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), N, C);
    DVec wd = to_double(w);
    const DVec xd = to_double(x), Rd = to_double(R);
    auto loss = [&] { return dot(ref_layernorm(xd, wd, DVec(C, 0.0), N, C, eps), Rd); };
    check_close(dw, central_diff(wd, loss), 2e-5, "layernorm dweight without dbias");
  }
}

TEST_CASE("rmsnorm forward and backward", "[ops][rmsnorm]") {
  CpuBackend be(kThreads);
  Rng rng(6);
  const float eps = 1e-5f;
  for (auto [N, C] : {std::pair{7, 13}, std::pair{37, 515}}) {
    CAPTURE(N, C);
    const Vec x = randn(size_t(N) * C, rng, 1.5), w = randn(C, rng), R = randn(x.size(), rng);
    Vec out(x.size()), rstd(N);
    be.rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    DVec xd = to_double(x), wd = to_double(w), want_rstd;
    check_close(out, ref_rmsnorm(xd, wd, N, C, eps, &want_rstd), 1e-5, "rmsnorm out");
    check_close(rstd, want_rstd, 1e-5, "rmsnorm rstd");

    const Vec dx0 = randn(x.size(), rng), dw0 = randn(C, rng);
    Vec dx = dx0, dw = dw0;
    be.rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
    const DVec Rd = to_double(R);
    auto loss = [&] { return dot(ref_rmsnorm(xd, wd, N, C, eps), Rd); };
    const DVec ddx = minus(dx, dx0);
    check_grad(ddx, xd, loss, 2e-5, "rmsnorm dinp vs FD", rng, 60, N * C < 1000);
    check_close(minus(dw, dw0), central_diff(wd, loss), 2e-5, "rmsnorm dweight vs FD");
  }
}

// ===================================================================== activations

TEST_CASE("gelu forward and backward", "[ops][gelu]") {
  CpuBackend be(kThreads);
  Rng rng(7);
  for (size_t n : {size_t(37), size_t(40009)}) {
    CAPTURE(n);
    // Wide inputs (sd 3) reach both saturated tails.
    const Vec x = randn(n, rng, 3.0), R = randn(n, rng);
    Vec out(n);
    be.gelu_forward(out.data(), x.data(), n);
    DVec want(n);
    for (size_t i = 0; i < n; ++i) want[i] = ref_gelu(x[i]);
    check_close(out, want, 1e-6, "gelu out");
    Vec inplace = x;  // out may alias inp
    be.gelu_forward(inplace.data(), inplace.data(), n);
    check_close(inplace, want, 1e-6, "gelu out in place");

    Vec dx(n, 1e3f);
    be.gelu_backward(dx.data(), x.data(), R.data(), n);
    // Elementwise: dL/dx_i = R_i gelu'(x_i), each by a central difference of the double gelu.
    DVec fd(n);
    for (size_t i = 0; i < n; ++i) {
      const double h = 1e-6;
      fd[i] = R[i] * (ref_gelu(double(x[i]) + h) - ref_gelu(double(x[i]) - h)) / (2 * h);
    }
    check_close(dx, fd, 1e-5, "gelu dinp vs FD");
  }
}

TEST_CASE("swiglu forward and backward", "[ops][swiglu]") {
  CpuBackend be(kThreads);
  Rng rng(8);
  for (auto [N, F] : {std::pair{7, 13}, std::pair{29, 601}}) {
    CAPTURE(N, F);
    const Vec inp = randn(size_t(N) * 2 * F, rng, 2.0), R = randn(size_t(N) * F, rng);
    Vec out(size_t(N) * F);
    be.swiglu_forward(out.data(), inp.data(), N, F);
    DVec xd = to_double(inp);
    check_close(out, ref_swiglu(xd, N, F), 1e-6, "swiglu out");
    Vec dinp(inp.size(), 1e3f);
    be.swiglu_backward(dinp.data(), inp.data(), R.data(), N, F);
    const DVec Rd = to_double(R);
    auto loss = [&] { return dot(ref_swiglu(xd, N, F), Rd); };
    check_grad(dinp, xd, loss, 1e-5, "swiglu dinp vs FD", rng, 80, N * F < 1000);
  }
}

// ===================================================================== rope

TEST_CASE("rope: forward, inverse, backward", "[ops][rope]") {
  CpuBackend be(kThreads);
  Rng rng(9);
  struct Case {
    int B, T, nh, D, pad;
    float theta;
  };
  // Padded rows (row_stride > nh*D) check that only the heads are touched; T=1000 checks that
  // the angle t*theta^(-2i/D) keeps its precision far along the sequence.
  for (const Case& k : {Case{2, 7, 3, 8, 5, 10000.0f}, Case{1, 67, 2, 16, 0, 500.0f},
                        Case{1, 1000, 1, 64, 3, 10000.0f}}) {
    CAPTURE(k.B, k.T, k.nh, k.D, k.pad, k.theta);
    const int rs = k.nh * k.D + k.pad;
    const size_t n = size_t(k.B) * k.T * rs;
    const Vec x0 = randn(n, rng);
    Vec x = x0;
    be.rope(x.data(), k.B, k.T, k.nh, k.D, rs, k.theta, false);
    DVec xd = to_double(x0);
    check_close(x, ref_rope(xd, k.B, k.T, k.nh, k.D, rs, k.theta, 1.0), 1e-6, "rope forward");
    Vec back = x;
    be.rope(back.data(), k.B, k.T, k.nh, k.D, rs, k.theta, true);
    check_close(back, xd, 1e-6, "rope inverse(forward(x)) == x");

    // Backward of the forward rotation = the inverse rotation applied to dL/dy = R.
    if (n > 2000) continue;
    Vec R = randn(n, rng);
    for (int r = 0; r < k.B * k.T; ++r)  // the padding is not part of the output
      for (int j = k.nh * k.D; j < rs; ++j) R[size_t(r) * rs + j] = 0.0f;
    Vec dx = R;
    be.rope(dx.data(), k.B, k.T, k.nh, k.D, rs, k.theta, true);
    const DVec Rd = to_double(R);
    // The padding passes through unchanged, as in the identity, so its gradient is R's zero.
    auto loss = [&] {
      DVec y = ref_rope(xd, k.B, k.T, k.nh, k.D, rs, k.theta, 1.0);
      return dot(y, Rd);
    };
    check_close(dx, central_diff(xd, loss), 1e-5, "rope backward (inverse) vs FD");
  }
  Vec odd(10);
  CHECK_THROWS_AS(be.rope(odd.data(), 1, 1, 1, 5, 5, 10000.0f, false), nuri::Error);
}

// ===================================================================== attention

TEST_CASE("attention forward and backward (causal, GQA)", "[ops][attention]") {
  CpuBackend be(kThreads);
  Rng rng(10);
  struct Case {
    int B, T, H, KV, D;
  };
  // T = 67 crosses the 64-row block; KV = 4, 2, 1 are MHA, GQA and MQA.
  std::vector<Case> cases;
  for (int KV : {4, 2, 1})
    for (int D : {8, 16}) cases.push_back({2, 67, 4, KV, D});
  cases.push_back({1, 1, 2, 1, 8});    // a single position: out = v
  cases.push_back({1, 130, 2, 2, 8});  // three row blocks, the last of 2 rows
  for (const Case& k : cases) {
    const int B = k.B, T = k.T, H = k.H, KV = k.KV, D = k.D;
    CAPTURE(B, T, H, KV, D);
    const int R = (H + 2 * KV) * D;
    const Vec qkv = randn(size_t(B) * T * R, rng, 1.3);
    Vec out(size_t(B) * T * H * D), lse(size_t(B) * H * T);
    be.attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, KV, D);
    DVec xd = to_double(qkv), want_lse;
    check_close(out, ref_attention(xd, B, T, H, KV, D, &want_lse), 1e-5, "attention out");
    check_close(lse, want_lse, 1e-5, "attention lse");

    // Backward with dout = R; dqkv starts as garbage because it must be overwritten.
    const Vec dout = randn(out.size(), rng);
    Vec dqkv(qkv.size(), 1e3f);
    be.attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, H,
                          KV, D);
    const DVec Rd = to_double(dout);
    auto loss = [&] { return dot(ref_attention(xd, B, T, H, KV, D), Rd); };
    // Sampled central differences: 30 entries each of q, k and v, half of them in rows >= 64.
    std::vector<size_t> idx;
    for (int part = 0; part < 3; ++part) {
      const int c0 = part == 0 ? 0 : part == 1 ? H * D : (H + KV) * D;
      const int width = part == 0 ? H * D : KV * D;
      for (int s = 0; s < 30; ++s) {
        const int b = int(rng.below(B));
        const int t = (s % 2 && T > 64) ? 64 + int(rng.below(T - 64)) : int(rng.below(T));
        idx.push_back((size_t(b) * T + t) * R + c0 + rng.below(width));
      }
    }
    check_grad_sampled(dqkv, xd, idx, loss, 1e-4, "attention dqkv vs FD (sampled)");
    // One directional derivative along a random u covers every entry: dL/de L(x + e u) = g.u.
    const DVec u = to_double(randn(xd.size(), rng));
    const double h = 1e-6;
    const DVec x_keep = xd;
    for (size_t i = 0; i < xd.size(); ++i) xd[i] = x_keep[i] + h * u[i];
    const double lp = loss();
    for (size_t i = 0; i < xd.size(); ++i) xd[i] = x_keep[i] - h * u[i];
    const double lm = loss();
    xd = x_keep;
    const double fd = (lp - lm) / (2 * h), analytic = dot(to_double(dqkv), u);
    INFO("directional derivative: analytic " << analytic << ", FD " << fd);
    CHECK(std::abs(analytic - fd) <= 1e-4 * std::max(1.0, std::abs(fd)));
  }
  Vec dummy(64);
  CHECK_THROWS_AS(be.attention_forward(dummy.data(), dummy.data(), dummy.data(), 1, 1, 3, 2, 4),
                  nuri::Error);
}

// ===================================================================== embedding

TEST_CASE("embedding forward and backward with repeated tokens", "[ops][embedding]") {
  CpuBackend be(kThreads);
  Rng rng(11);
  struct Case {
    int N, T, V, C;
  };
  // The second case is above the threading threshold with C = 100 split across threads and
  // every token repeated ~40 times: a racy scatter-add would lose updates.
  for (const Case& k : {Case{11, 5, 6, 13}, Case{301, 7, 7, 100}}) {
    const int N = k.N, T = k.T, V = k.V, C = k.C;
    CAPTURE(N, T, V, C);
    std::vector<int32_t> tokens(N);
    for (auto& t : tokens) t = int32_t(rng.below(V));
    tokens[1] = tokens[0];  // at least one repeat for sure
    const Vec wte = randn(size_t(V) * C, rng), wpe = randn(size_t(T) * C, rng);
    for (bool with_wpe : {true, false}) {
      CAPTURE(with_wpe);
      Vec out(size_t(N) * C, 1e3f);
      be.embedding_forward(out.data(), tokens.data(), wte.data(), with_wpe ? wpe.data() : nullptr,
                           N, T, C);
      DVec want(out.size());
      for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)
          want[size_t(n) * C + c] = double(wte[size_t(tokens[n]) * C + c]) +
                                    (with_wpe ? double(wpe[size_t(n % T) * C + c]) : 0.0);
      check_close(out, want, 1e-7, "embedding out");

      const Vec dout = randn(out.size(), rng);
      const Vec dwte0 = randn(wte.size(), rng), dwpe0 = randn(wpe.size(), rng);
      Vec dwte = dwte0, dwpe = dwpe0;
      be.embedding_backward(dwte.data(), with_wpe ? dwpe.data() : nullptr, dout.data(),
                            tokens.data(), N, T, C);
      DVec want_dwte(wte.size(), 0.0), want_dwpe(wpe.size(), 0.0);
      for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c) {
          want_dwte[size_t(tokens[n]) * C + c] += dout[size_t(n) * C + c];
          want_dwpe[size_t(n % T) * C + c] += dout[size_t(n) * C + c];
        }
      check_close(minus(dwte, dwte0), want_dwte, 1e-6, "embedding dwte");
      if (with_wpe) {
        check_close(minus(dwpe, dwpe0), want_dwpe, 1e-6, "embedding dwpe");
      } else {
        CHECK(std::equal(dwpe.begin(), dwpe.end(), dwpe0.begin()));
      }
    }
  }
  // A negative token (another rank's vocabulary slice) has no wte row: wpe only (or zero) in the
  // forward, no dwte in the backward, dwpe as usual.
  const int C = 3, T = 2;
  const std::vector<int32_t> toks = {1, -1};
  const Vec w = {1, 2, 3, 4, 5, 6}, pe = {10, 20, 30, 40, 50, 60};
  Vec o(6, 7.0f);
  be.embedding_forward(o.data(), toks.data(), w.data(), pe.data(), 2, T, C);
  CHECK(o == Vec{14, 25, 36, 40, 50, 60});
  be.embedding_forward(o.data(), toks.data(), w.data(), nullptr, 2, T, C);
  CHECK(o == Vec{4, 5, 6, 0, 0, 0});
  Vec dw(6, 0.0f), dp(6, 0.0f);
  const Vec dy = {1, 1, 1, 2, 2, 2};
  be.embedding_backward(dw.data(), dp.data(), dy.data(), toks.data(), 2, T, C);
  CHECK(dw == Vec{0, 0, 0, 1, 1, 1});
  CHECK(dp == Vec{1, 1, 1, 2, 2, 2});
}

TEST_CASE("cross_entropy_partial over vocabulary slices equals the full softmax cross-entropy",
          "[ops][loss]") {
  // The vocabulary-parallel loss: logits split into 3 uneven slices, each slice's statistics
  // combined as the model does, against ref_cross_entropy and lm_head_cross_entropy's gradient.
  CpuBackend be(kThreads);
  Rng rng(21);
  const int N = 9, C = 5, V = 23;
  const float scale = 0.3f;
  const Vec x = randn(size_t(N) * C, rng), w = randn(size_t(V) * C, rng, 2.0);
  std::vector<int32_t> tg(N);
  for (auto& t : tg) t = int32_t(rng.below(V));
  tg[4] = -1;
  tg[0] = 0;
  tg[8] = V - 1;
  const DVec xd = to_double(x), wd = to_double(w);
  const double want_loss = ref_cross_entropy(xd, wd, tg, N, C, V);
  Vec want_dx(x.size()), want_dw(w.size(), 0.0f);
  be.lm_head_cross_entropy(want_dx.data(), want_dw.data(), x.data(), w.data(), tg.data(), N, C, V, scale);

  const int starts[] = {0, 8, 16, V};  // slices of 8, 8 and 7 ids
  std::vector<Vec> logits(3);
  std::vector<Vec> mx(3, Vec(N)), sm(3, Vec(N)), tl(3, Vec(N));
  for (int s = 0; s < 3; ++s) {
    const int v0 = starts[s], Vs = starts[s + 1] - v0;
    logits[s].assign(size_t(N) * Vs, 0.0f);
    be.gemm(false, true, N, Vs, C, 1.0f, x.data(), C, w.data() + size_t(v0) * C, C, 0.0f, logits[s].data(), Vs);
    be.cross_entropy_partial(mx[s].data(), sm[s].data(), tl[s].data(), logits[s].data(), tg.data(), N, Vs, v0);
  }
  Vec lse(N);
  double loss = 0;
  for (int n = 0; n < N; ++n) {
    double M = -INFINITY, S = 0, t = 0;
    for (int s = 0; s < 3; ++s) M = std::max(M, double(mx[s][n]));
    for (int s = 0; s < 3; ++s) {
      S += sm[s][n] * std::exp(mx[s][n] - M);
      t += tl[s][n];
    }
    lse[n] = float(M + std::log(S));
    if (tg[n] >= 0) loss += M + std::log(S) - t;
  }
  CHECK(std::abs(loss - want_loss) <= 1e-5 * std::abs(want_loss));
  Vec dx(x.size(), 0.0f), dw(w.size(), 0.0f);
  for (int s = 0; s < 3; ++s) {
    const int v0 = starts[s], Vs = starts[s + 1] - v0;
    be.cross_entropy_partial_backward(logits[s].data(), lse.data(), tg.data(), N, Vs, v0, scale);
    be.gemm(false, false, N, C, Vs, 1.0f, logits[s].data(), Vs, w.data() + size_t(v0) * C, C, 1.0f, dx.data(), C);
    be.gemm(true, false, Vs, C, N, 1.0f, logits[s].data(), Vs, x.data(), C, 0.0f, dw.data() + size_t(v0) * C, C);
  }
  check_close(dx, to_double(want_dx), 1e-5, "vocab-parallel dx");
  check_close(dw, to_double(want_dw), 1e-5, "vocab-parallel dweight");
  for (int c = 0; c < C; ++c) CHECK(dx[size_t(4) * C + c] == 0.0f);  // ignored row
}

// ===================================================================== loss

TEST_CASE("lm_head_cross_entropy: loss, gradients, ignored targets", "[ops][loss]") {
  CpuBackend be(kThreads);
  Rng rng(12);
  const int N = 7, C = 13, V = 29;
  const float grad_scale = 0.37f;
  const Vec x = randn(size_t(N) * C, rng), w = randn(size_t(V) * C, rng);
  std::vector<int32_t> tg(N);
  for (auto& t : tg) t = int32_t(rng.below(V));
  tg[2] = -1;    // ignored
  tg[5] = -100;  // ignored (PyTorch's ignore_index)
  tg[6] = V - 1;
  DVec xd = to_double(x), wd = to_double(w);
  const double want_loss = ref_cross_entropy(xd, wd, tg, N, C, V);

  const Vec dw0 = randn(w.size(), rng);
  Vec dx(x.size(), 1e3f), dw = dw0;
  const double loss = be.lm_head_cross_entropy(dx.data(), dw.data(), x.data(), w.data(), tg.data(),
                                               N, C, V, grad_scale);
  CHECK(std::abs(loss - want_loss) <= 1e-5 * std::abs(want_loss));

  // dx = grad_scale dloss/dx, dweight += grad_scale dloss/dweight.
  auto scaled_loss = [&] { return grad_scale * ref_cross_entropy(xd, wd, tg, N, C, V); };
  check_close(dx, central_diff(xd, scaled_loss), 1e-5, "cross-entropy dx vs FD");
  check_close(minus(dw, dw0), central_diff(wd, scaled_loss), 1e-5, "cross-entropy dweight vs FD");
  for (int n : {2, 5})
    for (int c = 0; c < C; ++c) CHECK(dx[size_t(n) * C + c] == 0.0f);

  SECTION("loss only: dx null leaves dweight alone") {
    Vec dw2 = dw0;
    const double l2 = be.lm_head_cross_entropy(nullptr, dw2.data(), x.data(), w.data(), tg.data(),
                                                N, C, V, grad_scale);
    CHECK(std::abs(l2 - want_loss) <= 1e-5 * std::abs(want_loss));
    CHECK(std::equal(dw2.begin(), dw2.end(), dw0.begin()));
  }
  SECTION("a target outside the vocabulary throws a data error naming the row") {
    std::vector<int32_t> bad = tg;
    bad[3] = V;
    try {
      be.lm_head_cross_entropy(dx.data(), dw.data(), x.data(), w.data(), bad.data(), N, C, V, 1.0f);
      FAIL("no exception for target == V");
    } catch (const nuri::Error& e) {
      CHECK(e.kind() == nuri::ErrorKind::data);
      CHECK(e.message().find("row 3") != std::string::npos);
    }
  }
  SECTION("lm_head_logits") {
    Vec logits(size_t(N) * V);
    be.lm_head_logits(logits.data(), x.data(), w.data(), N, C, V);
    check_close(logits, ref_linear(xd, wd, nullptr, N, C, V), 1e-6, "lm_head_logits");
  }
}

TEST_CASE("lm_head_cross_entropy over several row chunks", "[ops][loss]") {
  CpuBackend be(kThreads);
  Rng rng(13);
  // Rows per chunk = max(16, min(N, kLmHeadChunkFloats / V)) = 39 for the V below, so N = 40 rows
  // take two chunks, the second of one row. V follows the chunk size, so the test keeps covering
  // two chunks when that constant changes.
  const int N = 40, C = 3, V = int(nuri::kLmHeadChunkFloats / 39);
  REQUIRE(nuri::kLmHeadChunkFloats / size_t(V) == 39);
  const float grad_scale = 0.5f;
  const Vec x = randn(size_t(N) * C, rng), w = randn(size_t(V) * C, rng);
  std::vector<int32_t> tg(N);
  for (auto& t : tg) t = int32_t(rng.below(V));
  tg[38] = -1;
  DVec xd = to_double(x), wd = to_double(w);
  Vec dx(x.size(), 1e3f), dw(w.size(), 0.0f);
  const double loss = be.lm_head_cross_entropy(dx.data(), dw.data(), x.data(), w.data(), tg.data(),
                                               N, C, V, grad_scale);
  const double want_loss = ref_cross_entropy(xd, wd, tg, N, C, V);
  CHECK(std::abs(loss - want_loss) <= 1e-5 * std::abs(want_loss));

  // Closed-form double gradient: dlogits = grad_scale (softmax - onehot), dx = dlogits W,
  // dW = dlogits^T x; then a few central differences, including the last row (second chunk).
  DVec want_dx(x.size(), 0.0), want_dw(w.size(), 0.0), l(V);
  for (int n = 0; n < N; ++n) {
    if (tg[n] < 0) continue;
    double mx = -INFINITY, sum = 0.0;
    for (int v = 0; v < V; ++v) {
      l[v] = 0.0;
      for (int c = 0; c < C; ++c) l[v] += xd[size_t(n) * C + c] * wd[size_t(v) * C + c];
      mx = std::max(mx, l[v]);
    }
    for (int v = 0; v < V; ++v) sum += std::exp(l[v] - mx);
    for (int v = 0; v < V; ++v) {
      const double g = grad_scale * (std::exp(l[v] - mx) / sum - (v == tg[n] ? 1.0 : 0.0));
      for (int c = 0; c < C; ++c) {
        want_dx[size_t(n) * C + c] += g * wd[size_t(v) * C + c];
        want_dw[size_t(v) * C + c] += g * xd[size_t(n) * C + c];
      }
    }
  }
  check_close(dx, want_dx, 1e-5, "chunked cross-entropy dx");
  check_close(dw, want_dw, 1e-5, "chunked cross-entropy dweight");
  auto scaled_loss = [&] { return grad_scale * ref_cross_entropy(xd, wd, tg, N, C, V); };
  check_grad_sampled(dx, xd, {0, size_t(39) * C, size_t(39) * C + 2}, scaled_loss, 1e-4,
                     "chunked cross-entropy dx vs FD");
  check_grad_sampled(dw, wd, {size_t(tg[39]) * C, size_t(tg[0]) * C + 1}, scaled_loss, 1e-4,
                     "chunked cross-entropy dweight vs FD");
}

// ===================================================================== optimizer

TEST_CASE("adamw matches a scalar double implementation over 3 steps", "[ops][adamw]") {
  CpuBackend be(kThreads);
  Rng rng(14);
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
  // 37: scalar path only; 100003: vector blocks, threads and a 3-element tail.
  for (size_t n : {size_t(37), size_t(100003)}) {
    CAPTURE(n);
    Vec p = randn(n, rng), m(n, 0.0f), v(n, 0.0f);
    DVec pd = to_double(p), md(n, 0.0), vd(n, 0.0);
    for (int step = 1; step <= 3; ++step) {
      const Vec g = randn(n, rng);
      be.adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, step, gs);
      const double bc1 = 1.0 - std::pow(double(b1), step), bc2 = 1.0 - std::pow(double(b2), step);
      for (size_t i = 0; i < n; ++i) {
        const double gi = double(g[i]) * gs;
        md[i] = b1 * md[i] + (1.0 - b1) * gi;
        vd[i] = b2 * vd[i] + (1.0 - b2) * gi * gi;
        pd[i] -= lr * ((md[i] / bc1) / (std::sqrt(vd[i] / bc2) + eps) + wd * pd[i]);
      }
    }
    check_close(m, md, 1e-6, "adamw m");
    check_close(v, vd, 1e-6, "adamw v");
    // The parameters moved by ~3 lr; check the movement, not just the parameters.
    check_close(p, pd, 1e-6, "adamw param");
  }
}

// ===================================================================== construction

TEST_CASE("make_backend and default threads", "[ops][backend]") {
  auto cpu = nuri::make_backend("cpu", 3);
  CHECK(cpu->name() == "cpu");
  CHECK(cpu->threads() == 3);
  CHECK(nuri::make_backend("cpu", 0)->threads() >= 1);
  // "cuda": a backend where there is a GPU (and nvcc at build time); elsewhere a clear refusal
  // that says why and points at the CPU backend.
  try {
    auto gpu = nuri::make_backend("cuda");
    CHECK(gpu->name() == "cuda");
  } catch (const nuri::Error& e) {
    CHECK(e.kind() == nuri::ErrorKind::backend);
    CHECK(e.message().find("backend = \"cpu\"") != std::string::npos);
  }
  try {
    nuri::make_backend("tpu");
    FAIL("unknown backend accepted");
  } catch (const nuri::Error& e) {
    CHECK(e.kind() == nuri::ErrorKind::config);
    CHECK(e.message().find("tpu") != std::string::npos);
  }

  // default_cpu_threads reads the environment; restore it afterwards.
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const std::string saved = omp ? omp : "";
  setenv("OMP_NUM_THREADS", "3", 1);
  CHECK(nuri::default_cpu_threads() == 3);
  unsetenv("OMP_NUM_THREADS");
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "100000", 1);  // more ranks than cores: still 1 thread
  CHECK(nuri::default_cpu_threads() == 1);
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  CHECK(nuri::default_cpu_threads() >= 1);
  if (omp) setenv("OMP_NUM_THREADS", saved.c_str(), 1);
  CpuBackend restore(kThreads);  // make_backend("cpu", 3) changed the OpenMP thread count
}

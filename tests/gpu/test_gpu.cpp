// test_gpu (ctest `gpu`): nuri's CUDA kernels on a real GPU against the CPU backend, on the same
// awkward shapes as the emulation test (tests/cuda_emu). Where there is no usable GPU it prints
// one line starting "SKIPPED:" and ctest reports the test as not run (never as passed).
// Covered on hardware: GELU forward/backward, SwiGLU forward, RMSNorm forward/backward, LayerNorm
// forward, embedding forward, AdamW, causal GQA attention forward and backward, the bf16
// tensor-core GEMM (four layouts, epilogues, 4096-sized and odd shapes); then the cuda backend
// (gpu_backend_checks.cpp): its ops at model sizes, and end-to-end bf16 training of gpt2 and
// llama that must follow the CPU fp32 loss. Exits 1 on any difference beyond the tolerance.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_runs.cuh"
#include "nuri/backend.hpp"
#include "nuri/rng.hpp"

namespace nuri::gpu_test {
// gpu_backend_checks.cpp: `gpu` (the cuda backend) against `cpu`; returns its failures.
int backend_checks(Backend& gpu, Backend& cpu);
}  // namespace nuri::gpu_test

namespace {

int failures = 0;

std::vector<float> randn(size_t n, uint64_t seed, double scale = 1.0) {
  nuri::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(scale * rng.normal());
  return v;
}

// |got - want| <= rtol |want| + atol for every element, as the emulation test checks: the GPU's
// expf and fused multiply-adds, and its summation orders, differ from the CPU's by a few ulps,
// which near zero (a derivative at its zero, a normalised value its bias cancels, a sum of terms
// of both signs) is a large relative difference but a tiny absolute one. Prints the worst element
// (its difference over the bound) and counts a failure.
void compare(const char* what, const std::vector<float>& got, const std::vector<float>& want, double rtol,
             double atol = 1e-6) {
  double worst = 0;  // max |got - want| / (rtol |want| + atol): <= 1 passes
  const bool sizes = got.size() == want.size();
  for (size_t i = 0; sizes && i < want.size(); ++i) {
    const double d = std::abs(double(got[i]) - want[i]), bound = rtol * std::abs(double(want[i])) + atol;
    worst = std::max(worst, bound > 0 ? d / bound : d > 0 ? HUGE_VAL : 0.0);  // bound 0: exact
    if (std::isnan(d)) worst = HUGE_VAL;
  }
  const bool ok = sizes && worst <= 1.0;
  std::printf("%-4s %-40s difference / bound %.3g (rtol %.0e, atol %.0e)\n", ok ? "ok" : "FAIL", what, worst, rtol,
              atol);
  failures += !ok;
}

// x rounded to the nearest bf16 (ties to even), as an fp32 value; finite inputs only.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// gemm_bf16 against the CPU backend's fp32 gemm on the same bf16-rounded inputs. The sums run in
// different orders, so the bound is relative to the terms: |got - want| <= 1e-5 s + 1e-6 with
// s = |alpha| sum_k |a_ik b_kj| + |beta c_ij| + |bias_j|; after GELU 1.2 times that + 1e-5 |want|.
// Prints the worst |got - want| / bound (<= 1 passes) for C and, when stored, pre_gelu.
struct GemmShape {
  bool trans_a, trans_b;
  int M, N, K;
  float alpha, beta;
  int pad;       // extra row stride of A, B and C (odd pads force the scalar-load path)
  int epilogue;  // 0 none, 1 bias, 2 bias_gelu
  bool pre_gelu;
};

void compare_gemm(nuri::Backend& cpu, const GemmShape& g) {
  namespace gt = nuri::gpu_test;
  const int a_rows = g.trans_a ? g.K : g.M, a_cols = g.trans_a ? g.M : g.K;
  const int b_rows = g.trans_b ? g.N : g.K, b_cols = g.trans_b ? g.K : g.N;
  const int lda = a_cols + g.pad, ldb = b_cols + g.pad, ldc = g.N + g.pad;
  const uint64_t seed = uint64_t(g.M) * 7919 + uint64_t(g.N) * 31 + uint64_t(g.K);
  std::vector<float> A = randn(size_t(a_rows) * lda, seed), B = randn(size_t(b_rows) * ldb, seed + 1);
  for (float& x : A) x = round_bf16(x);
  for (float& x : B) x = round_bf16(x);
  std::vector<float> Aabs(A.size()), Babs(B.size());
  for (size_t i = 0; i < A.size(); ++i) Aabs[i] = std::abs(A[i]);
  for (size_t i = 0; i < B.size(); ++i) Babs[i] = std::abs(B[i]);
  const std::vector<float> C0 = randn(size_t(g.M) * ldc, seed + 2);
  const std::vector<float> bias = g.epilogue ? randn(size_t(g.N), seed + 3) : std::vector<float>();

  std::vector<float> want = C0, scale(C0.size(), 0.0f);
  cpu.gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, g.alpha, A.data(), lda, B.data(), ldb, g.beta, want.data(), ldc);
  cpu.gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, std::abs(g.alpha), Aabs.data(), lda, Babs.data(), ldb, 0.0f,
           scale.data(), ldc);
  std::vector<float> want_pre(size_t(g.M) * g.N), want_c(want_pre.size()), bound(want_pre.size());
  for (int i = 0; i < g.M; ++i)
    for (int j = 0; j < g.N; ++j) {
      const size_t k = size_t(i) * ldc + j, o = size_t(i) * g.N + j;
      const float b = bias.empty() ? 0.0f : bias[j];
      want_pre[o] = want[k] + b;
      bound[o] = 1e-5f * (scale[k] + std::abs(g.beta * C0[k]) + std::abs(b)) + 1e-6f;
    }
  want_c = want_pre;
  if (g.epilogue == 2) cpu.gelu_forward(want_c.data(), want_pre.data(), want_pre.size());

  std::vector<float> C = C0, pre;
  gt::gemm_bf16(C, g.pre_gelu ? &pre : nullptr, g.trans_a, g.trans_b, g.M, g.N, g.K, g.alpha, A, lda, B, ldb,
                g.beta, ldc, bias, g.epilogue);
  double worst_c = 0, worst_pre = 0;
  for (int i = 0; i < g.M; ++i)
    for (int j = 0; j < g.N; ++j) {
      const size_t k = size_t(i) * ldc + j, o = size_t(i) * g.N + j;
      const double bc = g.epilogue == 2 ? 1.2 * bound[o] + 1e-5 * std::abs(want_c[o]) : bound[o];
      const double dc = std::abs(double(C[k]) - want_c[o]);
      worst_c = std::max(worst_c, std::isfinite(dc) ? dc / bc : 1e30);
      if (g.pre_gelu) {
        const double dp = std::abs(double(pre[k]) - want_pre[o]);
        worst_pre = std::max(worst_pre, std::isfinite(dp) ? dp / bound[o] : 1e30);
      }
    }
  const char* epi[] = {"none", "bias", "bias_gelu"};
  char what[160];
  std::snprintf(what, sizeof what, "gemm_bf16 %c%c M=%d N=%d K=%d %s%s", g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N',
                g.M, g.N, g.K, epi[g.epilogue], g.pad % 8 ? " scalar" : "");
  const bool ok = worst_c <= 1.0 && worst_pre <= 1.0;
  std::printf("%-4s %-56s worst |diff| / bound %.3g (pre_gelu %.3g; pass <= 1)\n", ok ? "ok" : "FAIL", what,
              worst_c, worst_pre);
  failures += !ok;
}

}  // namespace

int main() {
  namespace g = nuri::gpu_test;
  if (g::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device here (cudaGetDeviceCount found none); run ctest -R '^gpu$' on a GPU host\n");
    return 0;
  }
  std::printf("GPU: %s\n", g::device_name());
  auto cpu = nuri::make_backend("cpu", 1);
  try {
    for (size_t n : {size_t(1), size_t(33), size_t(1000), size_t(100003)}) {
      const std::vector<float> x = randn(n, 1 + n, 2.0), dy = randn(n, 2 + n);
      std::vector<float> want(n), dwant(n);
      cpu->gelu_forward(want.data(), x.data(), n);
      cpu->gelu_backward(dwant.data(), x.data(), dy.data(), n);
      compare(("gelu_forward n=" + std::to_string(n)).c_str(), g::gelu_forward(x), want, 1e-5);
      compare(("gelu_backward n=" + std::to_string(n)).c_str(), g::gelu_backward(x, dy), dwant, 1e-5);
    }
    for (int C : {1, 31, 33, 300, 1000}) {
      const int N = 7;
      const std::vector<float> x = randn(size_t(N) * C, 10 + C), w = randn(size_t(C), 11 + C),
                               b = randn(size_t(C), 12 + C), dy = randn(size_t(N) * C, 13 + C);
      std::vector<float> out(size_t(N) * C), rstd(static_cast<size_t>(N)), mean(static_cast<size_t>(N));
      cpu->rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
      std::vector<float> gout, grstd;
      g::rmsnorm_forward(gout, grstd, x, w, N, C, 1e-5f);
      compare(("rmsnorm_forward C=" + std::to_string(C)).c_str(), gout, out, 1e-5);
      std::vector<float> dx(x.size(), 0.5f), dw(size_t(C), 0.25f), gdx = dx, gdw = dw;
      cpu->rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
      g::rmsnorm_backward(gdx, gdw, dy, x, w, rstd, N, C);
      compare(("rmsnorm_backward dx C=" + std::to_string(C)).c_str(), gdx, dx, 1e-4);
      compare(("rmsnorm_backward dw C=" + std::to_string(C)).c_str(), gdw, dw, 1e-4);
      cpu->layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
      std::vector<float> gmean;
      g::layernorm_forward(gout, gmean, grstd, x, w, b, N, C, 1e-5f);
      compare(("layernorm_forward C=" + std::to_string(C)).c_str(), gout, out, 1e-5);
    }
    {
      const int N = 13, F = 77;
      const std::vector<float> x = randn(size_t(N) * 2 * F, 21);
      std::vector<float> want(size_t(N) * F);
      cpu->swiglu_forward(want.data(), x.data(), N, F);
      compare("swiglu_forward N=13 F=77", g::swiglu_forward(x, N, F), want, 1e-5);
    }
    {
      const int N = 22, T = 11, C = 37, V = 50;
      std::vector<int32_t> tokens(N);
      for (int i = 0; i < N; ++i) tokens[i] = (i * 7) % V;
      tokens[3] = -1;  // another rank's vocabulary slice: no wte row
      const std::vector<float> wte = randn(size_t(V) * C, 31), wpe = randn(size_t(T) * C, 32);
      std::vector<float> want(size_t(N) * C);
      cpu->embedding_forward(want.data(), tokens.data(), wte.data(), wpe.data(), N, T, C);
      compare("embedding_forward N=22 T=11 C=37", g::embedding_forward(tokens, wte, wpe, N, T, C), want, 0, 0);
    }
    struct Att {
      int B, T, H, KV, D;
    };
    for (const Att& a : {Att{2, 7, 4, 2, 64}, Att{1, 33, 4, 4, 64}, Att{1, 257, 8, 2, 128}, Att{1, 70, 4, 1, 8}}) {
      const size_t rows = size_t(a.B) * a.T;
      const std::vector<float> qkv = randn(rows * (a.H + 2 * a.KV) * a.D, 50 + a.T);
      const std::vector<float> dout = randn(rows * a.H * a.D, 51 + a.T);
      std::vector<float> out(rows * a.H * a.D), lse(size_t(a.B) * a.H * a.T), dqkv(qkv.size());
      cpu->attention_forward(out.data(), lse.data(), qkv.data(), a.B, a.T, a.H, a.KV, a.D);
      cpu->attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), a.B, a.T, a.H, a.KV, a.D);
      std::vector<float> gout, glse, gdqkv;
      g::attention(gout, glse, gdqkv, qkv, dout, a.B, a.T, a.H, a.KV, a.D);
      const std::string shape = " T=" + std::to_string(a.T) + " H=" + std::to_string(a.H) + " KV=" +
                                std::to_string(a.KV) + " D=" + std::to_string(a.D);
      compare(("attention out" + shape).c_str(), gout, out, 1e-3, 2e-5);
      compare(("attention lse" + shape).c_str(), glse, lse, 1e-3, 2e-5);
      compare(("attention dqkv" + shape).c_str(), gdqkv, dqkv, 1e-3, 2e-5);
    }
    for (int step : {1, 10}) {
      const size_t n = 1001;
      std::vector<float> p = randn(n, 41), grad = randn(n, 42), m = randn(n, 43, 0.1), v = randn(n, 44, 0.1);
      for (float& x : v) x = std::abs(x);
      std::vector<float> gp = p, gm = m, gv = v;
      cpu->adamw_update(p.data(), grad.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f);
      g::adamw_update(gp, grad, gm, gv, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f);
      compare(("adamw_update step=" + std::to_string(step)).c_str(), gp, p, 1e-5);
    }
    // GEMM: the linear layer's three layouts at GPT-2-like sizes, the fourth layout, odd sizes,
    // odd strides (scalar loads), tiny M, and a 4096 cube.
    const GemmShape gemms[] = {
        {false, true, 4096, 4096, 4096, 1.0f, 0.0f, 0, 0, false},
        {false, true, 4096, 3072, 768, 1.0f, 0.0f, 0, 2, true},     // forward fc + GELU
        {false, false, 4096, 768, 3072, 1.0f, 0.0f, 0, 0, false},   // backward dinp
        {true, false, 768, 3072, 4096, 1.0f, 1.0f, 0, 0, false},    // backward dW (accumulate)
        {true, true, 333, 517, 1001, -0.5f, 0.25f, 0, 1, false},
        {false, true, 4099, 1001, 777, 0.5f, 0.5f, 3, 2, true},     // odd everything, scalar loads
        {true, false, 130, 4097, 95, 2.0f, 0.0f, 1, 1, false},
        {false, true, 1, 50257, 768, 1.0f, 0.0f, 0, 1, false},     // one row, wide N
        {false, false, 17, 5, 3, 1.0f, 0.0f, 0, 0, false},
    };
    for (const GemmShape& gs : gemms) compare_gemm(*cpu, gs);
    failures += nuri::gpu_test::backend_checks(*nuri::make_backend("cuda"), *cpu);
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d comparison(s) failed\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}

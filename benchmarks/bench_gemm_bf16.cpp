// GFLOP/s of gemm_bf16 (experimental: bf16 inputs rounded while packing, fp32 accumulation,
// AVX512_BF16) against two fp32 products: cblas_sgemm (OpenMP OpenBLAS, with whatever kernel
// OPENBLAS_CORETYPE gives it) and nuri::cpu::sgemm, the CPU backend's fp32 path as chosen on this
// machine ("auto": OpenBLAS or Eigen), at the matrix shapes of nuri's models, in the three
// layouts a linear layer uses:
//   fwd   out (N,OC)  = inp (N,IC) @ W (OC,IC)^T        gemm(N,T)  M=N  N=OC K=IC  beta 0
//   dinp  dinp (N,IC) = dout (N,OC) @ W (OC,IC)        gemm(N,N)  M=N  N=IC K=OC  beta 0
//   dW    dW (OC,IC) += dout (N,OC)^T @ inp (N,IC)     gemm(T,N)  M=OC N=IC K=N   beta 1
// All run in the same process on the same threads, alternating call by call; each figure is the
// median over repeats. Then the accuracy of both against an fp64 product on one shape.
// Usage: bench_gemm_bf16 [threads=2] [seconds per measurement=0.4]
#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <omp.h>
#include <vector>

#include "backend/cpu/gemm_bf16.hpp"
#include "backend/cpu/sgemm.hpp"
#include "nuri/rng.hpp"
#include "nuri/timer.hpp"

namespace {

struct Shape {
  const char* model;
  const char* what;
  int rows, OC, IC;  // a linear layer inp (rows,IC) -> out (rows,OC)
};

struct Gemm {
  bool ta, tb;
  int M, N, K;
  float beta;
};

enum Layout { kFwd, kDinp, kDweight };
const char* layout_name[] = {"fwd  NT", "dinp NN", "dW   TN"};

Gemm gemm_for(const Shape& s, Layout l) {
  switch (l) {
    case kFwd: return {false, true, s.rows, s.OC, s.IC, 0.0f};
    case kDinp: return {false, false, s.rows, s.IC, s.OC, 0.0f};
    default: return {true, false, s.OC, s.IC, s.rows, 1.0f};
  }
}

struct Operands {
  std::vector<float> A, B, C;
  int lda, ldb, ldc;
};

Operands make_operands(const Gemm& g, uint64_t seed) {
  Operands o;
  const size_t a_rows = g.ta ? g.K : g.M, b_rows = g.tb ? g.N : g.K;
  o.lda = g.ta ? g.M : g.K;
  o.ldb = g.tb ? g.K : g.N;
  o.ldc = g.N;
  nuri::Rng rng(seed);
  o.A.resize(a_rows * o.lda);
  o.B.resize(b_rows * o.ldb);
  o.C.assign(size_t(g.M) * g.N, 0.0f);
  for (auto& x : o.A) x = float(rng.normal());
  for (auto& x : o.B) x = float(rng.normal() * 0.05);
  return o;
}

void run_blas(const Gemm& g, Operands& o) {
  cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans,
              g.M, g.N, g.K, 1.0f, o.A.data(), o.lda, o.B.data(), o.ldb, g.beta, o.C.data(),
              o.ldc);
}

void run_nuri_fp32(const Gemm& g, Operands& o) {
  nuri::cpu::sgemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, o.A.data(), o.lda, o.B.data(), o.ldb, g.beta,
                   o.C.data(), o.ldc);
}

void run_bf16(const Gemm& g, Operands& o) {
  nuri::gemm_bf16(g.ta, g.tb, g.M, g.N, g.K, 1.0f, o.A.data(), o.lda, o.B.data(), o.ldb, g.beta,
                  o.C.data(), o.ldc);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median GFLOP/s of the three, measured alternately (so that a noisy neighbour hits all alike).
void measure(const Gemm& g, Operands& o, double budget_s, double& blas, double& fp32,
             double& bf16) {
  const double flops = 2.0 * g.M * g.N * g.K;
  run_blas(g, o);
  run_nuri_fp32(g, o);
  run_bf16(g, o);
  std::vector<double> rb, rf, rh;
  nuri::Timer total;
  for (int rep = 0; rep < 200 && (rep < 5 || total.seconds() < budget_s); ++rep) {
    nuri::Timer t;
    run_blas(g, o);
    rb.push_back(flops / t.seconds() / 1e9);
    t.reset();
    run_nuri_fp32(g, o);
    rf.push_back(flops / t.seconds() / 1e9);
    t.reset();
    run_bf16(g, o);
    rh.push_back(flops / t.seconds() / 1e9);
  }
  blas = median(rb);
  fp32 = median(rf);
  bf16 = median(rh);
}

// Round to nearest even bf16 (denormals to zero), as gemm_bf16 packs.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u & 0x7F800000u) == 0 ? u & 0x80000000u : (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// max |got - want| / max |want| against a double product of the inputs (bf16-rounded first when
// `round`).
double relative_error(const Gemm& g, const Operands& o, const std::vector<float>& got, bool round) {
  auto r = [&](float x) { return double(round ? round_bf16(x) : x); };
  double err = 0.0, scale = 0.0;
  for (int i = 0; i < g.M; ++i)
    for (int j = 0; j < g.N; ++j) {
      double s = 0.0;
      for (int k = 0; k < g.K; ++k) {
        const double a = r(g.ta ? o.A[size_t(k) * o.lda + i] : o.A[size_t(i) * o.lda + k]);
        const double b = r(g.tb ? o.B[size_t(j) * o.ldb + k] : o.B[size_t(k) * o.ldb + j]);
        s += a * b;
      }
      scale = std::max(scale, std::abs(s));
      err = std::max(err, std::abs(double(got[size_t(i) * o.ldc + j]) - s));
    }
  return err / scale;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const double budget = argc > 2 ? std::atof(argv[2]) : 0.4;
  omp_set_num_threads(threads);
  if (!nuri::gemm_bf16_available()) {
    std::printf("SKIPPED: this CPU has no avx512bf16; nothing to compare\n");
    return 0;
  }
  const Shape shapes[] = {
      {"gpt2-tiny", "qkv", 2048, 1152, 384},       {"gpt2-tiny", "attn proj", 2048, 384, 384},
      {"gpt2-tiny", "mlp fc", 2048, 1536, 384},    {"gpt2-tiny", "mlp proj", 2048, 384, 1536},
      {"gpt2-tiny", "lm head", 2048, 8192, 384},   {"gpt2-124m", "qkv", 1024, 2304, 768},
      {"gpt2-124m", "attn proj", 1024, 768, 768},  {"gpt2-124m", "mlp fc", 1024, 3072, 768},
      {"gpt2-124m", "mlp proj", 1024, 768, 3072},  {"gpt2-124m", "lm head chunk", 166, 50257, 768},
  };
  nuri::cpu::set_gemm_library(nuri::cpu::resolve_gemm_library("auto"));
  const char* fp32_name = nuri::cpu::gemm_library_name(nuri::cpu::gemm_library());
  std::printf("gemm_bf16 (bf16 in, fp32 accumulate) vs fp32: cblas_sgemm (OpenBLAS) and "
              "nuri::cpu::sgemm (auto: %s; %s), %d threads, median GFLOP/s, alternating calls\n",
              fp32_name, nuri::cpu::gemm_library_reason(), threads);
  std::printf("%-10s %-14s %-8s %6s %6s %6s %9s %9s %9s %8s %8s\n", "model", "layer", "layout", "M",
              "N", "K", "sgemm", "nuri-fp32", "bf16", "/sgemm", "/fp32");
  std::vector<double> ratios, ratios_fp32;
  // Per model: time-weighted ratio = (sum of fp32 times) / (sum of bf16 times), which is what a
  // training step would see from these GEMMs (each layer's three products once).
  double t_blas[2] = {0, 0}, t_fp32[2] = {0, 0}, t_bf16[2] = {0, 0};
  for (const Shape& s : shapes) {
    const int model = s.model[5] == 't' ? 0 : 1;
    for (Layout l : {kFwd, kDinp, kDweight}) {
      const Gemm g = gemm_for(s, l);
      Operands o = make_operands(g, 7);
      double blas, fp32, bf16;
      measure(g, o, budget, blas, fp32, bf16);
      const double gf = 2.0 * g.M * g.N * g.K / 1e9;
      t_blas[model] += gf / blas;
      t_fp32[model] += gf / fp32;
      t_bf16[model] += gf / bf16;
      ratios.push_back(bf16 / blas);
      ratios_fp32.push_back(bf16 / fp32);
      std::printf("%-10s %-14s %-8s %6d %6d %6d %9.1f %9.1f %9.1f %8.2f %8.2f\n", s.model, s.what,
                  layout_name[l], g.M, g.N, g.K, blas, fp32, bf16, bf16 / blas, bf16 / fp32);
      std::fflush(stdout);
    }
  }
  for (int which = 0; which < 2; ++which) {
    std::vector<double> sorted = which == 0 ? ratios : ratios_fp32;
    std::sort(sorted.begin(), sorted.end());
    double log_sum = 0.0;
    for (double r : sorted) log_sum += std::log(r);
    std::printf("ratio bf16/%s: median %.2f, geometric mean %.2f, min %.2f, max %.2f\n",
                which == 0 ? "sgemm" : fp32_name, sorted[sorted.size() / 2],
                std::exp(log_sum / sorted.size()), sorted.front(), sorted.back());
  }
  std::printf("time-weighted (all the shapes above once): gpt2-tiny %.2fx sgemm, %.2fx %s; "
              "gpt2-124m %.2fx sgemm, %.2fx %s\n", t_blas[0] / t_bf16[0], t_fp32[0] / t_bf16[0],
              fp32_name, t_blas[1] / t_bf16[1], t_fp32[1] / t_bf16[1], fp32_name);

  // Accuracy on the gpt2-tiny attention projection (forward), against fp64 of the fp32 inputs.
  const Gemm g = gemm_for(shapes[1], kFwd);
  Operands o = make_operands(g, 11);
  run_blas(g, o);
  const std::vector<float> c_blas = o.C;
  run_bf16(g, o);
  std::printf("max |error| / max |C| vs fp64 of the fp32 inputs, %dx%dx%d fwd: sgemm %.2e, "
              "gemm_bf16 %.2e\n", g.M, g.N, g.K, relative_error(g, o, c_blas, false),
              relative_error(g, o, o.C, false));
  std::printf("gemm_bf16 vs fp64 of the bf16-rounded inputs (fp32 accumulation alone): %.2e\n",
              relative_error(g, o, o.C, true));
  return 0;
}

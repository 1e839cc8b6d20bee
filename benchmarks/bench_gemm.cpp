// GEMM GFLOP/s of OpenBLAS (cblas_sgemm, the CPU backend's choice) and Eigen at the matrix
// shapes of nuri's models: out (N,OC) = inp (N,IC) @ W (OC,IC)^T, as in linear_forward.
// Prints a table and the median ratio OpenBLAS/Eigen. Usage: bench_gemm [threads]
#include <Eigen/Dense>
#include <algorithm>
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <omp.h>
#include <vector>

extern "C" char* openblas_get_corename(void);

#include "nuri/rng.hpp"
#include "nuri/timer.hpp"

namespace {

struct Shape {
  const char* what;
  int N, OC, IC;
};

template <typename F>
double best_gflops(F&& f, double flops) {
  f();  // warm-up
  std::vector<double> rates;
  nuri::Timer total;
  for (int rep = 0; rep < 50 && (rep < 5 || total.seconds() < 0.6); ++rep) {
    nuri::Timer t;
    f();
    rates.push_back(flops / t.seconds() / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];  // median
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
  const Shape shapes[] = {
      {"gpt2-tiny qkv (B8,T256)", 2048, 1152, 384},  {"gpt2-tiny attn proj", 2048, 384, 384},
      {"gpt2-tiny mlp fc", 2048, 1536, 384},         {"gpt2-tiny mlp proj", 2048, 384, 1536},
      {"gpt2-tiny lm head", 2048, 8192, 384},        {"gpt2-124m qkv (B4,T256)", 1024, 2304, 768},
      {"gpt2-124m attn proj", 1024, 768, 768},       {"gpt2-124m mlp fc", 1024, 3072, 768},
      {"gpt2-124m mlp proj", 1024, 768, 3072},       {"gpt2-124m lm head chunk", 166, 50257, 768},
      {"square 1024", 1024, 1024, 1024},
  };
  std::printf("GEMM out(N,OC) = inp(N,IC) @ W(OC,IC)^T, fp32, %d threads, median GFLOP/s\n", threads);
  std::printf("%-28s %6s %6s %6s %10s %10s %8s\n", "shape", "N", "OC", "IC", "OpenBLAS", "Eigen", "ratio");
  std::vector<double> ratios;
  for (const Shape& s : shapes) {
    using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMat a(s.N, s.IC), w(s.OC, s.IC), c(s.N, s.OC);
    nuri::Rng rng(1);
    for (int i = 0; i < a.size(); ++i) a.data()[i] = float(rng.normal());
    for (int i = 0; i < w.size(); ++i) w.data()[i] = float(rng.normal());
    const double flops = 2.0 * s.N * s.OC * s.IC;
    const double blas = best_gflops([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.N, s.OC, s.IC, 1.0f, a.data(), s.IC,
                  w.data(), s.IC, 0.0f, c.data(), s.OC);
    }, flops);
    const double eigen = best_gflops([&] { c.noalias() = a * w.transpose(); }, flops);
    ratios.push_back(blas / eigen);
    std::printf("%-28s %6d %6d %6d %10.1f %10.1f %8.2f\n", s.what, s.N, s.OC, s.IC, blas, eigen, blas / eigen);
  }
  std::sort(ratios.begin(), ratios.end());
  const char* core = openblas_get_corename();
  std::printf("median OpenBLAS/Eigen: %.2f (OpenBLAS kernel: %s) -> the faster here is %s; the CPU\n"
              "backend's cpu_gemm = \"auto\" picks Eigen exactly when the CPU has AVX-512 and\n"
              "OpenBLAS's kernel does not (see src/backend/cpu/sgemm.hpp)\n",
              ratios[ratios.size() / 2], core ? core : "?",
              ratios[ratios.size() / 2] >= 1.0 ? "OpenBLAS" : "Eigen");
  return 0;
}

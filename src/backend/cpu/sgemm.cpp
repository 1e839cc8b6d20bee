// One row-major sgemm for the CPU backend, on OpenBLAS or Eigen (see sgemm.hpp).
//
// Why two: benchmarks/bench_gemm measures both at the models' shapes. Where OpenBLAS runs an
// AVX-512 kernel it is the faster; where it is held to an AVX2 kernel (e.g. OPENBLAS_CORETYPE=
// Haswell, which some machines set because older OpenBLAS builds misbehave on newer CPUs) Eigen
// compiled with -march=native is faster, by 1.2-1.4x on the machine the README names.
// Eigen parallelises its products with OpenMP; inside a parallel region it runs on the calling
// thread, like OpenBLAS's OpenMP build.
#include "backend/cpu/sgemm.hpp"

#include "backend/cpu/gemm_bf16.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cblas.h>
#include <cstdlib>
#include <cstring>
#include <string>

#include "nuri/error.hpp"

extern "C" char* openblas_get_corename(void);

namespace nuri::cpu {

namespace {

std::atomic<GemmLibrary> g_library{GemmLibrary::openblas};
std::string g_reason = "default";

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstView = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using View = Eigen::Map<RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename LhsExpr, typename RhsExpr>
void eigen_product(const LhsExpr& a, const RhsExpr& b, float alpha, float beta, View& c) {
  if (beta == 0.0f) {
    c.noalias() = alpha * (a * b);
  } else {
    if (beta != 1.0f) c *= beta;
    c.noalias() += alpha * (a * b);
  }
}

void eigen_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  // Stored shapes: A is (M,K) or, transposed, (K,M); B is (K,N) or (N,K).
  const ConstView a(A, trans_a ? K : M, trans_a ? M : K, Eigen::OuterStride<>(lda));
  const ConstView b(B, trans_b ? N : K, trans_b ? K : N, Eigen::OuterStride<>(ldb));
  View c(C, M, N, Eigen::OuterStride<>(ldc));
  if (!trans_a && !trans_b) eigen_product(a, b, alpha, beta, c);
  if (!trans_a && trans_b) eigen_product(a, b.transpose(), alpha, beta, c);
  if (trans_a && !trans_b) eigen_product(a.transpose(), b, alpha, beta, c);
  if (trans_a && trans_b) eigen_product(a.transpose(), b.transpose(), alpha, beta, c);
}

bool openblas_core_has_avx512(const std::string& core) {
  for (const char* name : {"SkylakeX", "Cooperlake", "SapphireRapids", "Zen4", "Zen5"})
    if (core.find(name) != std::string::npos) return true;
  return false;
}

}  // namespace

GemmLibrary resolve_gemm_library(const char* name) {
  std::string n = name ? name : "auto";
  g_reason = "chosen by config";
  // The environment may settle "auto" (tests and benchmarks run each library this way).
  const char* env = std::getenv("NURI_CPU_GEMM");
  if (n == "auto" && env && *env) {
    n = env;
    NURI_CHECK(n == "openblas" || n == "eigen" || n == "bf16", config, "cpu gemm",
               "NURI_CPU_GEMM is '" << n << "'; set it to openblas, eigen or bf16, or unset it");
    g_reason = "NURI_CPU_GEMM";
  }
  if (n == "openblas") return GemmLibrary::openblas;
  if (n == "eigen") return GemmLibrary::eigen;
  if (n == "bf16") {
    NURI_CHECK(gemm_bf16_available(), backend, "cpu gemm",
               "cpu_gemm = \"bf16\" needs a CPU with AVX512_BF16, and this one has none; use "
               "\"auto\" (fp32)");
    g_reason += ", bf16 inputs with fp32 accumulation";
    return GemmLibrary::bf16;
  }
  NURI_CHECK(n == "auto", config, "cpu gemm",
             "unknown GEMM library '" << n << "'; choose auto, openblas, eigen or bf16");
  const char* core_c = openblas_get_corename();
  const std::string core = core_c ? core_c : "unknown";
  __builtin_cpu_init();
  const bool cpu_avx512 = __builtin_cpu_supports("avx512f");
  if (cpu_avx512 && !openblas_core_has_avx512(core)) {
    g_reason = "auto: the CPU has AVX-512 but OpenBLAS runs its " + core + " kernel";
    return GemmLibrary::eigen;
  }
  g_reason = "auto: OpenBLAS runs its " + core + " kernel";
  return GemmLibrary::openblas;
}

void set_gemm_library(GemmLibrary lib) { g_library = lib; }
GemmLibrary gemm_library() { return g_library; }
const char* gemm_library_name(GemmLibrary lib) {
  switch (lib) {
    case GemmLibrary::eigen: return "Eigen";
    case GemmLibrary::bf16: return "nuri's bf16 kernel";
    case GemmLibrary::openblas: break;
  }
  return "OpenBLAS";
}
const char* gemm_library_reason() { return g_reason.c_str(); }

void check_gemm_args(const char* op, bool trans_a, bool trans_b, int M, int N, int K, int lda,
                     int ldb, int ldc) {
  NURI_CHECK(M >= 0 && N >= 0 && K >= 0, shape, op,
             "negative size M=" << M << " N=" << N << " K=" << K);
  // Row-major: op(A) is (M,K), stored as (M,K) or, transposed, as (K,M); likewise op(B) (K,N).
  const int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  NURI_CHECK(lda >= std::max(1, a_cols) && ldb >= std::max(1, b_cols) && ldc >= std::max(1, N),
             shape, op,
             "leading dimension too small: lda=" << lda << " (needs " << a_cols << "), ldb=" << ldb
                                                 << " (needs " << b_cols << "), ldc=" << ldc
                                                 << " (needs " << N << ")");
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (g_library == GemmLibrary::eigen) {
    eigen_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else if (g_library == GemmLibrary::bf16) {
    gemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace nuri::cpu

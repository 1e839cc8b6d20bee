// Dense algebra on cpu::sgemm (row-major; OpenBLAS or Eigen, see sgemm.hpp).
//   gemm:            C (M,N) = alpha op(A) op(B) + beta C
//   linear_forward:  out (N,OC) [+]= inp (N,IC) W (OC,IC)^T + b (OC)
//   linear_backward: dinp (N,IC) = dout (N,OC) W;  dW (OC,IC) += dout^T inp;  db (OC) += colsum(dout)
// Threading: every sgemm is called outside any OpenMP region, so the GEMM library spreads it over the
// pool. The bias broadcast and the column sums are our own OpenMP loops.
// Constraints: sizes >= 0; leading dimensions at least the row length they describe (checked,
// because OpenBLAS reports a bad one by printing and returning, and Eigen not at all).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {

// Columns [lo, hi) of `cols` owned by thread `tid` of `nt`, split on 16-float (64-byte)
// boundaries so that two threads never write the same cache line.
void column_range(int cols, int tid, int nt, int& lo, int& hi) {
  const int lines = (cols + 15) / 16;
  lo = std::min(cols, 16 * (lines * tid / nt));
  hi = std::min(cols, 16 * (lines * (tid + 1) / nt));
}

}  // namespace

void CpuBackend::gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                      int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cpu::check_gemm_args("gemm", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  cpu::sgemm(trans_a,
              trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void CpuBackend::linear_forward(float* out, const float* inp, const float* weight,
                                const float* bias, int N, int IC, int OC, bool accumulate) {
  NURI_CHECK(N >= 0 && IC > 0 && OC > 0, shape, "linear_forward",
             "bad sizes N=" << N << " IC=" << IC << " OC=" << OC);
  if (N == 0) return;
  if (bias) {
    // Put the bias into out first and let the GEMM accumulate onto it: one write pass instead of
    // a read-modify-write pass after it.
    float* __restrict o = out;
    const float* __restrict b = bias;
#pragma omp parallel for schedule(static) if (size_t(N) * OC >= 32768)
    for (int n = 0; n < N; ++n) {
      float* __restrict row = o + size_t(n) * OC;
      if (accumulate) {
#pragma omp simd
        for (int j = 0; j < OC; ++j) row[j] += b[j];
      } else {
        std::memcpy(row, b, sizeof(float) * OC);
      }
    }
  }
  const float beta = (bias || accumulate) ? 1.0f : 0.0f;
  // out (N,OC) = inp (N,IC) . weight (OC,IC)^T
  cpu::sgemm(false, true, N, OC, IC, 1.0f, inp, IC, weight, IC, beta,
              out, OC);
}

void CpuBackend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int N, int IC, int OC) {
  NURI_CHECK(N >= 0 && IC > 0 && OC > 0, shape, "linear_backward",
             "bad sizes N=" << N << " IC=" << IC << " OC=" << OC);
  if (N == 0) return;
  // dinp (N,IC) = dout (N,OC) . weight (OC,IC)
  if (dinp) {
    cpu::sgemm(false, false, N, IC, OC, 1.0f, dout, OC, weight, IC,
                0.0f, dinp, IC);
  }
  // dweight (OC,IC) += dout^T (OC,N) . inp (N,IC)
  cpu::sgemm(true, false, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f,
              dweight, IC);
  if (dbias) {
    // Column sums, each thread owning a range of columns: no reduction between threads, and each
    // thread streams rows (contiguous) rather than columns.
    const float* __restrict d = dout;
    float* __restrict db = dbias;
#pragma omp parallel if (size_t(N) * OC >= 32768)
    {
      int lo, hi;
      column_range(OC, omp_get_thread_num(), omp_get_num_threads(), lo, hi);
      for (int n = 0; n < N; ++n) {
        const float* __restrict row = d + size_t(n) * OC;
#pragma omp simd
        for (int j = lo; j < hi; ++j) db[j] += row[j];
      }
    }
  }
}

}  // namespace nuri

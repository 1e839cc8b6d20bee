#pragma once
// The CPU backend's one matrix product, row-major fp32, with cblas_sgemm's meaning:
//   C (M,N) = alpha op(A) op(B) + beta C,  op(X) = X or X^T,  lda/ldb/ldc = row strides.
// Every op in src/backend/cpu calls this rather than a library, so the library is chosen in
// one place. Callable inside an OpenMP parallel region (it then runs on the calling thread).
namespace nuri::cpu {

// openblas, eigen: fp32 products. bf16: our mixed-precision kernel (gemm_bf16.hpp): inputs
// rounded to bf16, fp32 accumulation, about 3x the fp32 rate on AVX512_BF16; opt-in, since it
// changes the numbers (fp32 master weights, gradients and optimizer state stay as they are).
enum class GemmLibrary { openblas, eigen, bf16 };

// "openblas", "eigen", "bf16" or "auto". auto: OpenBLAS when the kernel it runs on this machine uses
// AVX-512 (or the CPU has none), else Eigen, which is compiled for this CPU. The choice is made
// from facts (CPU flags, OpenBLAS's core name), never from timings, so it is the same on every
// run; auto never picks bf16. With "auto", the environment variable NURI_CPU_GEMM decides
// instead. Throws Error(config) for another name, Error(backend) for bf16 on a CPU without
// AVX512_BF16.
GemmLibrary resolve_gemm_library(const char* name);
void set_gemm_library(GemmLibrary lib);  // process-wide
GemmLibrary gemm_library();
const char* gemm_library_name(GemmLibrary lib);
// What auto saw, for the start-up line ("OpenBLAS core Haswell, CPU has AVX-512").
const char* gemm_library_reason();

// Throws Error(shape) naming `op` for a negative size or a leading dimension shorter than the
// row it describes (OpenBLAS would print and return, Eigen would read out of bounds).
void check_gemm_args(const char* op, bool trans_a, bool trans_b, int M, int N, int K, int lda,
                     int ldb, int ldc);

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace nuri::cpu

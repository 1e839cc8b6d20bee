#pragma once
// Tiled bf16 tensor-core GEMM (WMMA m16n16k16, fp32 accumulation) with fused epilogues: kernels
// and launcher. See gemm.cu.
//
// The three products a linear layer needs, all row-major, with a row stride per matrix:
//   forward        out  (N,OC) = inp (N,IC) @ W (OC,IC)^T      trans_a = false, trans_b = true
//   backward dinp  dinp (N,IC) = dout (N,OC) @ W (OC,IC)        trans_a = false, trans_b = false
//   backward dW    dW  (OC,IC) += dout (N,OC)^T @ inp (N,IC)    trans_a = true,  trans_b = false
// (the fourth layout, trans_a = trans_b = true, works too).
#include "common.cuh"

namespace nuri::cuda {

// What happens to each element of the fp32 product acc = alpha * op(A) op(B) before it is stored:
//   none       C = acc + beta * C
//   bias       C = acc + bias[col] + beta * C          (bias must be non-null)
//   bias_gelu  pre = acc + bias[col] (+ beta * C, read before C is written); C = gelu(pre), and
//              pre is also stored to `pre_gelu` when that is non-null (the backward needs it).
//              bias may be null here: then it is GELU alone.
// GELU is the tanh approximation of gelu.cu. With beta == 0, C is not read (it may hold NaN).
enum class GemmEpilogue { none, bias, bias_gelu };

// Which operands are transposed, as one template argument (the kernel is instantiated for the
// four combinations; the shared-memory tiles keep each operand's global layout and the WMMA
// fragments are loaded row_major or col_major to match).
template <bool kTransA, bool kTransB>
struct GemmLayout {
  static constexpr bool trans_a = kTransA;
  static constexpr bool trans_b = kTransB;
};

// One 128 x 128 tile of C per block of 256 threads (gemm.cu). vec_a / vec_b: the operand may be
// read 8 elements (16 bytes) at a time (pointer 16-byte aligned and stride a multiple of 8).
// Out: the storage of C and pre_gelu, float or __nv_bfloat16 (the epilogue's math is fp32, its
// results rounded once).
template <class Layout, typename Out>
__global__ void gemm_bf16_kernel(int M, int N, int K, float alpha, const __nv_bfloat16* A, int lda,
                                 bool vec_a, const __nv_bfloat16* B, int ldb, bool vec_b,
                                 float beta, Out* C, int ldc, const float* bias,
                                 GemmEpilogue epilogue, Out* pre_gelu);

// C (M,N) fp32 = epilogue(alpha * op(A) op(B)); op(X) = X or X^T.
// A is (M,K) row-major with row stride lda, or (K,M) when trans_a; B is (K,N) with row stride ldb,
// or (N,K) when trans_b. C has row stride ldc; pre_gelu (M,N), when used, has row stride ldc too.
// Any M, N, K >= 0 (edges that are not multiples of the tile are handled); M = 0 or N = 0 does
// nothing; K = 0 gives the epilogue of 0 (A and B are not read and may be null then).
// Strides must be >= the row width (else InvalidValue). Also InvalidValue: a negative size, a
// null C (or A, B with K > 0) when there is work, epilogue bias with a null bias, an unknown
// epilogue, M > 65535 * 128. pre_gelu is ignored unless the epilogue is bias_gelu; C, pre_gelu
// must not overlap A, B, bias or each other. Any alignment works: 16-byte vector loads are used
// where an operand's pointer is 16-byte aligned and its stride a multiple of 8, scalar otherwise.
cudaError_t gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      float* C, int ldc, const float* bias, GemmEpilogue epilogue, float* pre_gelu,
                      cudaStream_t stream);
// The same with C and pre_gelu in bf16 (the bf16 activations the model keeps): each fp32 result
// rounded once, to nearest even; with beta != 0 the bf16 C is read widened.
cudaError_t gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      __nv_bfloat16* C, int ldc, const float* bias, GemmEpilogue epilogue,
                      __nv_bfloat16* pre_gelu, cudaStream_t stream);

}  // namespace nuri::cuda

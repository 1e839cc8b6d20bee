#pragma once
// Mixed-precision GEMM for the CPU backend: bf16 inputs, fp32 accumulation, on AVX512_BF16
// (`vdpbf16ps`, two bf16 products per fp32 lane per instruction: twice the arithmetic rate of
// fp32 FMA). Used when cpu_gemm = "bf16" (sgemm.hpp); benchmarks/bench_gemm_bf16.cpp measures
// it against OpenBLAS and Eigen, tests/test_gemm_bf16.cpp checks it.
//
// Math: C (M,N) = alpha * op(A) op(B) + beta * C, row-major, fp32 in and out, op(X) = X or X^T,
// exactly the contract of Backend::gemm (lda/ldb/ldc are row strides; beta == 0 never reads C),
// except that every element of A and B is rounded to bf16 (round to nearest even, as
// VCVTNE2PS2BF16 does; denormal inputs become zero) while it is packed, and the products are
// summed in fp32. So the result is the fp32-accumulated product of the bf16-rounded inputs:
// relative error up to 2^-8 per input (bf16 keeps 8 significant bits), so up to 2^-7 |a b| per
// product against the fp32 product; ~1e-6 against the product of the rounded inputs.
//
// Layouts (bf16 pairs along K, as vdpbf16ps multiplies them; MR x NR = 12 x 32 register tile):
//   - B panel: NR = 32 columns of op(B) for a KC block; for each k-pair p, 32 x
//     (B[2p][j], B[2p+1][j]) = two zmm. Zero-padded past N and past an odd K.
//   - A panel: MR = 12 rows of op(A); for each k-pair p, 12 x (A[i][2p], A[i][2p+1]), each pair
//     broadcast to a zmm by the micro-kernel.
//   - Micro-kernel: 24 zmm fp32 accumulators; per k-pair two B loads, 12 broadcasts and 24
//     vdpbf16ps. At the end the tile is alpha * acc + beta * C (a prefetch for write of the C
//     tile is issued before the k loop, so a tile that fell out of cache arrives in time).
//   - Packing rounds with VCVTNE2PS2BF16 and reorders with a 16 x 16 32-bit transpose (the
//     operand whose K is contiguous: A as is, B transposed) or a word interleave of two rows
//     (K strided: A transposed, B as is). All four transpose combinations run the same kernel.
// Blocking and threads (OpenMP; one team of the caller's thread count outside a parallel region,
// one thread inside one), KC = 512 (even; K is cut into equal even blocks):
//   - few rows (A packed whole <= 1.25 MiB, e.g. the LM-head chunk): every thread packs all of A,
//     then threads take 32-column panels of C dynamically, each packing its own B panel right
//     before use: no shared B, no barrier before the end, and one thread's packing (memory) overlaps the
//     other's compute;
//   - otherwise Goto/BLIS: NC = 3072 columns x KC blocks of B packed together by all threads
//     (up to 4 MiB of KC blocks per pair of barriers), rows of C split between the threads in
//     MR units (or, with fewer than 2 MR panels per thread, the column panels), each thread
//     packing its own MC = 192-row block of A.
//   Packing buffers are thread-local and kept between calls (no page faults after the first).
//
// Constraints: sizes >= 0, leading dimensions at least the row they describe (checked, as in
// Backend::gemm). Fallback: none here. The kernels are compiled for avx512f/bw/dq/bf16 through
// target attributes (the rest of the build needs no flag); gemm_bf16 throws a backend error on a
// CPU (or compiler) without avx512bf16, so callers check gemm_bf16_available() first and use the
// fp32 gemm otherwise.

namespace nuri {

// True when this CPU runs avx512bf16 (and the compiler could build the kernels).
bool gemm_bf16_available();

// C (M,N) = alpha * op(A) op(B) + beta * C with A and B rounded to bf16; see above.
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace nuri

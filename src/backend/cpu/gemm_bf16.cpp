// bf16 GEMM with fp32 accumulation on AVX512_BF16: see gemm_bf16.hpp for the math, layouts,
// blocking, constraints and fallback.
#include "backend/cpu/gemm_bf16.hpp"
#include "backend/cpu/sgemm.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "nuri/error.hpp"

#if defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && __GNUC__ >= 10))
#define NURI_GEMM_BF16_COMPILED 1
#include <immintrin.h>
#else
#define NURI_GEMM_BF16_COMPILED 0
#endif

namespace nuri {

#if NURI_GEMM_BF16_COMPILED

// GCC 12 warns "__Y may be used uninitialized" inside its own unpack/shuffle intrinsics
// (the deliberate self-initialized placeholder of _mm512_undefined_*): a false positive.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace {

#define NURI_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512bf16")))

// Register tile: MR rows x NR = 16 * NV columns of fp32 accumulators (24 of the 32 zmm). Measured
// on Zen 5 against 8x48, 14x32, 6x64 and 10x32: 12x32 is best or within noise on every shape.
constexpr int kMR = 12;
constexpr int kNV = 2;

// Cache blocking, in elements: KC along K (even; 512 beat 256 and 384 by 2-8%), MC rows of A per
// packed block, NC columns of B per packed block.
struct Blocking {
  int kc = 512;
  int mc = 192;
  int nc = 3072;
  size_t b_group_bytes = size_t(4) << 20;  // packed B per barrier pair (in L3)
  // gemm_bf16_few_rows when all of A, packed, is at most this (measured here: it wins up to
  // M=768 x K=768, 1.2 MB, and loses from M=1024 x K=768, 1.6 MB).
  size_t few_rows_a_bytes = size_t(5) << 18;
};

int ceil_div(int a, int b) { return (a + b - 1) / b; }
int round_up(int a, int b) { return ceil_div(a, b) * b; }

// A 64-byte aligned buffer that only grows; one per thread and purpose, kept between calls so
// that packing never touches fresh pages.
class Workspace {
 public:
  ~Workspace() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > bytes_) {
      std::free(ptr_);
      ptr_ = nullptr;
      bytes_ = 0;
      const size_t rounded = (bytes + 4095) / 4096 * 4096;
      ptr_ = std::aligned_alloc(64, rounded);
      NURI_CHECK(ptr_ != nullptr, backend, "gemm_bf16",
                 "cannot allocate a " << rounded << "-byte packing buffer");
      bytes_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

thread_local Workspace tls_pack_a;
thread_local Workspace tls_pack_b;
thread_local Workspace tls_pack_b_panel;

struct Problem {
  bool trans_a, trans_b;
  int M, N, K;
  float alpha;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  float beta;
  float* C;
  int ldc;
};

// Mask of the first n (clamped to 0..16) lanes.
inline __mmask16 first_lanes(int n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Rounds 32 floats, lo (elements 0..15) and hi (16..31), to bf16, in order: as 16 epi32 lanes,
// lane p holds the pair (element 2p, element 2p+1), low half first.
NURI_BF16_TARGET inline __m512i to_bf16_pairs(__m512 lo, __m512 hi) {
  return __m512i(_mm512_cvtne2ps_pbh(hi, lo));
}

// Interleaves row0 and row1 (16 floats each) into 16 bf16 pairs (row0[j], row1[j]).
NURI_BF16_TARGET inline __m512i interleave_bf16(__m512 row0, __m512 row1) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                       8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  // cvtne2ps(b=row1, a=row0) puts row0 in bf16 elements 0..15 and row1 in 16..31.
  return _mm512_permutexvar_epi16(idx, __m512i(_mm512_cvtne2ps_pbh(row1, row0)));
}

// In-register transpose of a 16 x 16 matrix of 32-bit elements (r[i] is row i).
NURI_BF16_TARGET inline void transpose16x16(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
}

// Packs `rows` (<= 16) rows of a row-major fp32 matrix, elements [k0, k0 + kcur) of each, as
// bf16 pairs transposed: dst[p * stride + r] = (X[r][k0 + 2p], X[r][k0 + 2p + 1]) for
// r < 16 (rows past `rows` and k past kcur are zero). Each store writes 16 lanes; when
// stride < 16 the tail of one store is overwritten by the next, so dst needs 16 lanes of slack
// and panels must be packed in increasing address order.
NURI_BF16_TARGET void pack_rows_as_pairs(uint32_t* dst, int stride, const float* X, int ldx,
                                         int rows, int k0, int kcur) {
  const int kp = ceil_div(kcur, 2);
  for (int q = 0; q < kp; q += 16) {
    const int kv = kcur - 2 * q;  // k values left from this chunk on
    const __mmask16 lo = first_lanes(kv), hi = first_lanes(kv - 16);
    __m512i r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i < rows) {
        const float* x = X + size_t(i) * ldx + k0 + 2 * q;
        _mm_prefetch(reinterpret_cast<const char*>(x + 128), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(x + 144), _MM_HINT_T0);
        r[i] = to_bf16_pairs(_mm512_maskz_loadu_ps(lo, x), _mm512_maskz_loadu_ps(hi, x + 16));
      } else {
        r[i] = _mm512_setzero_si512();
      }
    }
    transpose16x16(r);
    const int np = std::min(16, kp - q);
    for (int p = 0; p < np; ++p) _mm512_storeu_si512(dst + size_t(q + p) * stride, r[p]);
  }
}

// Packs columns [j0, j0 + cols) (cols <= 16 * G) of rows k0 .. k0 + kcur of a row-major fp32
// matrix as bf16 pairs: dst[p * stride + j] = (X[k0 + 2p][j0 + j], X[k0 + 2p + 1][j0 + j]),
// zero past cols and past kcur. Each k-pair reads G * 64 contiguous bytes of two rows and writes
// G 16-lane stores (same overlapping-store rule as pack_rows_as_pairs when stride < 16).
template <int G>
NURI_BF16_TARGET void pack_cols_as_pairs(uint32_t* dst, int stride, const float* X, int ldx,
                                         int cols, int k0, int kcur) {
  __mmask16 m[G];
  for (int g = 0; g < G; ++g) m[g] = first_lanes(cols - 16 * g);
  const int kp = ceil_div(kcur, 2);
  const float* x = X + size_t(k0) * ldx;
  for (int p = 0; p < kp; ++p) {
    const float* x0 = x + size_t(2 * p) * ldx;
    const bool two = 2 * p + 1 < kcur;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const __m512 r0 = _mm512_maskz_loadu_ps(m[g], x0 + 16 * g);
      const __m512 r1 = two ? _mm512_maskz_loadu_ps(m[g], x0 + ldx + 16 * g) : _mm512_setzero_ps();
      _mm512_storeu_si512(dst + size_t(p) * stride + 16 * g, interleave_bf16(r0, r1));
    }
  }
}

// Packs rows [i0, i0 + rows) of op(A), k in [k0, k0 + kcur), as consecutive MR-row panels of
// kp = ceil(kcur / 2) pairs each: dst[(ir * kp + p) * MR + i] =
// (op(A)[i0 + ir * MR + i][k0 + 2p], op(A)[i0 + ir * MR + i][k0 + 2p + 1]), zero past `rows`.
NURI_BF16_TARGET void pack_a_block(uint32_t* dst, const Problem& pr, int i0, int rows, int k0,
                                   int kcur) {
  static_assert(kMR <= 16, "an A panel row is one 16-lane store per k-pair");
  const int kp = ceil_div(kcur, 2), panels = ceil_div(rows, kMR);
  if (!pr.trans_a) {  // A stored (M, K): 16 x 16 transposes, panel after panel
    for (int ir = 0; ir < panels; ++ir)
      pack_rows_as_pairs(dst + size_t(ir) * kp * kMR, kMR,
                         pr.A + size_t(i0 + ir * kMR) * pr.lda, pr.lda,
                         std::min(kMR, rows - ir * kMR), k0, kcur);
    return;
  }
  // A stored (K, M): op(A)[i][k] = A[k * lda + i].
  if (kcur <= 256 || pr.lda < 4096) {  // panel after panel: kcur rows, 48 bytes of each
    for (int ir = 0; ir < panels; ++ir)
      pack_cols_as_pairs<1>(dst + size_t(ir) * kp * kMR, kMR, pr.A + i0 + ir * kMR, pr.lda,
                            std::min(kMR, rows - ir * kMR), k0, kcur);
    return;
  }
  // Many rows, far apart: row pair after row pair, each read once and contiguously across all
  // the panels, so that kcur pages are not walked once per panel (measured: +9-12% on the
  // 8192 x 384 x 2048 weight gradient, lda = 8192; panel after panel stays 2-3% ahead where
  // kcur = 166 or lda <= 2304). A 16-lane store spills into the next k-pair of the same panel,
  // written later; the last k-pair of each panel is stored masked.
  const __mmask16 keep = first_lanes(kMR);
  const float* x = pr.A + size_t(k0) * pr.lda + i0;
  for (int p = 0; p < kp; ++p) {
    const float* x0 = x + size_t(2 * p) * pr.lda;
    const bool two = 2 * p + 1 < kcur;
    for (int ir = 0; ir < panels; ++ir) {
      const __mmask16 m = first_lanes(std::min(kMR, rows - ir * kMR));
      const __m512 r0 = _mm512_maskz_loadu_ps(m, x0 + ir * kMR);
      const __m512 r1 =
          two ? _mm512_maskz_loadu_ps(m, x0 + pr.lda + ir * kMR) : _mm512_setzero_ps();
      uint32_t* d = dst + (size_t(ir) * kp + p) * kMR;
      if (p + 1 < kp)
        _mm512_storeu_si512(d, interleave_bf16(r0, r1));
      else
        _mm512_mask_storeu_epi32(d, keep, interleave_bf16(r0, r1));
    }
  }
}

// Packs one NR-column panel of op(B), columns [j0, j0 + cols), k in [k0, k0 + kcur):
// dst[p * NR + j] = (op(B)[k0 + 2p][j0 + j], op(B)[k0 + 2p + 1][j0 + j]).
NURI_BF16_TARGET void pack_b_panel(uint32_t* dst, const Problem& pr, int j0, int cols, int k0,
                                   int kcur) {
  constexpr int NR = 16 * kNV;
  if (!pr.trans_b) {  // B stored (K, N): all NR columns of a row pair at once, contiguous reads
    pack_cols_as_pairs<kNV>(dst, NR, pr.B + j0, pr.ldb, cols, k0, kcur);
    return;
  }
  for (int v = 0; v < kNV; ++v) {  // B stored (N, K): op(B)[k][j] = B[j * ldb + k]
    const int c = std::min(16, cols - 16 * v);
    uint32_t* d = dst + 16 * v;
    if (c <= 0) {  // an all-padding group of columns
      for (int p = 0; p < ceil_div(kcur, 2); ++p)
        _mm512_store_si512(d + size_t(p) * NR, _mm512_setzero_si512());
    } else {
      pack_rows_as_pairs(d, NR, pr.B + size_t(j0 + 16 * v) * pr.ldb, pr.ldb, c, k0, kcur);
    }
  }
}

// The MR x NR tile C[0..mr, 0..nr) (row stride ldc) = alpha * sum_p a_p b_p + beta * C, over kp
// k-pairs of the packed panels a (kp x MR pairs) and b (kp x NR pairs). beta == 0 does not read
// C. Full tiles are written straight from the registers; edge tiles go through a local buffer.
template <int MR, int NV>
NURI_BF16_TARGET void micro_kernel(int kp, const uint32_t* __restrict a,
                                   const uint32_t* __restrict b, float* __restrict c, int ldc,
                                   int mr, int nr, float alpha, float beta) {
  constexpr int NR = 16 * NV;
  // The tile of C is written (and read when beta != 0) only after the k loop: ask for its lines
  // now, for writing, so that a tile that fell out of cache arrives while the k loop runs.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i < mr) {
      const char* row = reinterpret_cast<const char*>(c + size_t(i) * ldc);
#pragma GCC unroll 5
      for (int off = 0; off < NR * 4 + 64; off += 64) __builtin_prefetch(row + off, 1, 3);
    }
  }
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();

  for (int p = 0; p < kp; ++p) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = __m512bh(_mm512_load_si512(b + p * NR + 16 * v));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = __m512bh(_mm512_set1_epi32(int(a[p * MR + i])));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }

  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (mr == MR && nr == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* ci = c + size_t(i) * ldc + 16 * v;
        const __m512 r = beta == 0.0f
                             ? _mm512_mul_ps(va, acc[i][v])
                             : _mm512_fmadd_ps(va, acc[i][v], _mm512_mul_ps(vb, _mm512_loadu_ps(ci)));
        _mm512_storeu_ps(ci, r);
      }
    return;
  }
  alignas(64) float tile[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(&tile[i][16 * v], acc[i][v]);
  for (int i = 0; i < mr; ++i) {
    float* ci = c + size_t(i) * ldc;
    for (int j = 0; j < nr; ++j)
      ci[j] = beta == 0.0f ? alpha * tile[i][j] : alpha * tile[i][j] + beta * ci[j];
  }
}

// Few rows (A, packed whole, fits in L2): every thread packs all of A once, then takes NR-column
// panels of C dynamically, packing each B panel itself just before using it. No shared B, no
// barrier until the end, and while one thread packs (reading memory) the other computes.
NURI_BF16_TARGET void gemm_bf16_few_rows(const Problem& pr, const Blocking& blk, int nt) {
  constexpr int MR = kMR, NR = 16 * kNV;
  const int M = pr.M, N = pr.N, K = pr.K;
  const int kc = round_up(ceil_div(K, ceil_div(K, blk.kc)), 2);
  const int k_blocks = ceil_div(K, kc), a_panels = ceil_div(M, MR);
  const size_t a_block = size_t(kc / 2) * a_panels * MR;  // pairs in one packed KC block of A
  const int n_panels = ceil_div(N, NR);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint32_t* apack = static_cast<uint32_t*>(
        tls_pack_a.get((k_blocks * a_block + 64) * sizeof(uint32_t)));
    uint32_t* bpanel = static_cast<uint32_t*>(
        tls_pack_b_panel.get((size_t(kc / 2) * NR + 64) * sizeof(uint32_t)));
    for (int b = 0; b < k_blocks; ++b)
      pack_a_block(apack + b * a_block, pr, 0, M, b * kc, std::min(kc, K - b * kc));
#pragma omp for schedule(dynamic, 2)
    for (int jr = 0; jr < n_panels; ++jr) {
      const int nr = std::min(NR, N - jr * NR);
      for (int b = 0; b < k_blocks; ++b) {
        const int pc = b * kc, kcur = std::min(kc, K - pc), kp = ceil_div(kcur, 2);
        pack_b_panel(bpanel, pr, jr * NR, nr, pc, kcur);
        const float beta = pc == 0 ? pr.beta : 1.0f;
        for (int ir = 0; ir < a_panels; ++ir)
          micro_kernel<MR, kNV>(kp, apack + b * a_block + size_t(ir) * kp * MR, bpanel,
                                pr.C + size_t(ir * MR) * pr.ldc + jr * NR, pr.ldc,
                                std::min(MR, M - ir * MR), nr, pr.alpha, beta);
      }
    }
  }
}

// The blocked product on `nt` threads (see the header for the loop nest).
NURI_BF16_TARGET void gemm_bf16_blocked(const Problem& pr, const Blocking& blk, int nt) {
  constexpr int MR = kMR, NR = 16 * kNV;
  const int M = pr.M, N = pr.N, K = pr.K;
  const int kc = round_up(ceil_div(K, ceil_div(K, blk.kc)), 2);
  const int nc = round_up(ceil_div(N, ceil_div(N, blk.nc)), NR);
  // Rows are split between threads in MR panels when there are enough of them; otherwise every
  // thread takes all rows and a share of the column panels.
  const int m_panels = ceil_div(M, MR);
  const bool split_rows = m_panels >= 2 * nt;
  // B is packed for `group` KC blocks at a time, so that the threads meet at two barriers per
  // group rather than per KC block (a late thread on a shared machine stalls the other less).
  const int k_blocks = ceil_div(K, kc);
  const size_t b_block = size_t(kc / 2) * nc;  // pairs in one packed KC x NC block
  const int group = std::clamp(int(blk.b_group_bytes / (b_block * sizeof(uint32_t))), 1, k_blocks);
  uint32_t* bpack = static_cast<uint32_t*>(
      tls_pack_b.get(group * b_block * sizeof(uint32_t) + 64 * sizeof(uint32_t)));

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int m_lo = split_rows ? std::min(M, MR * int(int64_t(m_panels) * tid / nth)) : 0;
    const int m_hi = split_rows ? std::min(M, MR * int(int64_t(m_panels) * (tid + 1) / nth)) : M;
    const int my_rows = m_hi - m_lo;
    const int mc = my_rows > 0 ? round_up(ceil_div(my_rows, ceil_div(my_rows, blk.mc)), MR) : MR;
    uint32_t* apack = static_cast<uint32_t*>(
        tls_pack_a.get(size_t(kc / 2) * mc * sizeof(uint32_t) + 64 * sizeof(uint32_t)));

    bool first = true;
    for (int jc = 0; jc < N; jc += nc) {
      const int ncur = std::min(nc, N - jc);
      const int n_panels = ceil_div(ncur, NR);
      for (int g0 = 0; g0 < k_blocks; g0 += group) {
        const int g1 = std::min(k_blocks, g0 + group);
        if (!first) {
#pragma omp barrier
        }
        first = false;
        // Pack the (KC block, NR panel) pairs of this group, split evenly between the threads.
        const int items = (g1 - g0) * n_panels;
        for (int w = items * tid / nth; w < items * (tid + 1) / nth; ++w) {
          const int b = g0 + w / n_panels, q = w % n_panels;
          const int pc = b * kc, kcur = std::min(kc, K - pc);
          pack_b_panel(bpack + (b - g0) * b_block + size_t(q) * ceil_div(kcur, 2) * NR, pr,
                       jc + q * NR, std::min(NR, ncur - q * NR), pc, kcur);
        }
#pragma omp barrier
        const int jr_lo = split_rows ? 0 : n_panels * tid / nth;
        const int jr_hi = split_rows ? n_panels : n_panels * (tid + 1) / nth;
        if (jr_lo >= jr_hi) continue;
        for (int b = g0; b < g1; ++b) {
          const int pc = b * kc, kcur = std::min(kc, K - pc), kp = ceil_div(kcur, 2);
          const float beta = pc == 0 ? pr.beta : 1.0f;
          const uint32_t* bblock = bpack + (b - g0) * b_block;
          for (int ic = m_lo; ic < m_hi; ic += mc) {
            const int mcur = std::min(mc, m_hi - ic);
            const int a_panels = ceil_div(mcur, MR);
            pack_a_block(apack, pr, ic, mcur, pc, kcur);
            for (int jr = jr_lo; jr < jr_hi; ++jr) {
              const uint32_t* bp = bblock + size_t(jr) * kp * NR;
              const int nr = std::min(NR, ncur - jr * NR);
              for (int ir = 0; ir < a_panels; ++ir) {
                micro_kernel<MR, kNV>(kp, apack + size_t(ir) * kp * MR, bp,
                                      pr.C + size_t(ic + ir * MR) * pr.ldc + jc + jr * NR,
                                      pr.ldc, std::min(MR, mcur - ir * MR), nr, pr.alpha, beta);
              }
            }
          }
        }
      }
    }
  }
}

bool cpu_has_avx512bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

}  // namespace

bool gemm_bf16_available() { return cpu_has_avx512bf16(); }

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else  // !NURI_GEMM_BF16_COMPILED

bool gemm_bf16_available() { return false; }

#endif

void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cpu::check_gemm_args("gemm_bf16", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {  // C = beta C, without reading C when beta == 0 (BLAS rule)
    for (int i = 0; i < M; ++i) {
      float* c = C + size_t(i) * ldc;
      for (int j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
    return;
  }
  NURI_CHECK(gemm_bf16_available(), backend, "gemm_bf16",
             "this CPU (or compiler) has no AVX512_BF16; check gemm_bf16_available() and use the "
             "fp32 gemm instead");
#if NURI_GEMM_BF16_COMPILED
  const Problem pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  const int nt = omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
  const Blocking blk;
  const size_t a_packed_bytes = size_t(round_up(M, kMR)) * round_up(K, 2) * 2;
  if (a_packed_bytes <= blk.few_rows_a_bytes && ceil_div(N, 16 * kNV) >= 2 * nt)
    gemm_bf16_few_rows(pr, blk, nt);
  else
    gemm_bf16_blocked(pr, blk, nt);
#endif
}

}  // namespace nuri

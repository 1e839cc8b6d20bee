// Causal scaled-dot-product attention with grouped-query heads on bf16 tensor cores (WMMA
// m16n16k16, bf16 operands, fp32 accumulation); the bf16 twin of attention.cu (same math, same
// layout contract):
//   qkv (B,T,(H+2KV)*D) bf16, each row = [q heads | k heads | v heads], row stride R = (H+2KV)*D;
//   query head h reads kv head h / (H/KV); scale = 1/sqrt(D); out (B,T,H*D) bf16; lse (B,H,T) fp32.
//   forward:  S = scale Q K^T (causal), online softmax per row in fp32 (running max m and sum l,
//             in the base-2 domain: exp2 of scores pre-multiplied by scale*log2(e)),
//             O = sum P V, out = O / l, lse = (m + log2 l) ln 2 (natural log, as the fp32 kernel).
//   backward: delta_i = sum_d dO_id O_id (a preprocess kernel, into the workspace);
//             P = exp(S - lse) recomputed; dS = P (dO V^T - delta);
//             dQ = scale dS K (one block per query tile); dK = scale dS^T Q, dV = P^T dO (one block
//             per key tile, looping over the query heads of its kv group).
// Tiles: 64 query rows x 64 keys per block step, 128 threads = 4 warps; each warp owns 16 rows of
//   the block's tile (query rows in the forward and dq kernels, key rows in the dk/dv kernel) and
//   does all the WMMA products for them (16 x 64 score tiles, 16 x D output tiles). Per-row
//   softmax work is SIMT: a warp stores its fp32 score tile to shared memory (store_matrix_sync),
//   2 lanes per row each take 32 of its 64 columns (max and sum combined by one xor shuffle), and
//   the probabilities go back to shared memory as bf16, loaded as matrix_a fragments for the next
//   product. Nothing assumes which fragment elements a lane holds.
//   Tiles (Q, K, V, dO) are staged in shared memory as bf16 with rows padded by 8 elements
//   (16 bytes: 32-byte-aligned 16-row WMMA tiles, fewer bank conflicts), copied 16 bytes at a time;
//   rows past T are zero-filled, and masked scores never enter a sum (p = 0 exactly).
//   Causality: key tiles wholly above the diagonal are never loaded, and within the diagonal tile
//   a warp skips its 16 x 16 sub-products that are wholly masked (or wholly past T).
// Kernels and dynamic shared memory (D = 64 / D = 128, plus 32 bytes of alignment slack; opted in
// above the default 48 KiB):
//   forward  grid (ceil(T/64), H, B), query tiles in reverse order (the longest first); each
//            warp holds its 16 query rows as D/16 matrix_a fragments for all key tiles. Shared:
//            Q, K, V tiles (bf16), S (fp32 64 x 68), P (bf16 64 x 72), the O accumulator (fp32
//            64 x (D+4): rescaled by SIMT per row, accumulated by WMMA through load/store):
//            70 KiB / 110 KiB.
//            A __syncwarp separates each load of an O accumulator tile from its store back (the
//            emulator gives every lane the whole tile, so there the load/store is a per-lane
//            read-modify-write of all of it; on a GPU it only costs a warp barrier).
//   delta    grid ceil(B*T*H / 4), one warp per (b, t, h) row.
//   dq       grid (ceil(T/64), H, B). Shared: Q, dO, K, V tiles, S and dP (fp32), dS (bf16):
//            79 KiB / 111 KiB. dQ stays in WMMA accumulator fragments (D/16 per warp).
//   dkdv     grid (ceil(T/64), KV, B). Shared: K, V, Q, dO tiles, S^T and dP^T (fp32), P^T and dS^T
//            (bf16), lse and delta of the staged query rows: 88.5 KiB / 120.5 KiB. dK and dV stay in
//            accumulator fragments (2 D/16 per warp).
//   Each output element is written by exactly one thread: no atomics, deterministic.
// Numerics: the P and dS operands are rounded to bf16 before their products (as in FlashAttention
//   2); the row sum l adds the unrounded fp32 p; softmax statistics, delta and all accumulation
//   are fp32; exp2f/log2f. Against the fp32 CPU reference on the same bf16 inputs: max error
//   ~0.2-0.55% of the tensor's max |value| (tests/cuda_emu/test_emu_attention_bf16.cpp).
// Supported: D = 64 or 128 only (InvalidValue otherwise: the caller falls back to the fp32
//   kernels), any T >= 0, H % KV == 0, H, KV, B <= 65535, B*T*H < 2^33; qkv, out and dout
//   16-byte aligned. Indices are size_t (no 32-bit overflow for large B*T*R).
// Shared memory per block above 99 KiB (D = 128) exceeds sm_86 / sm_89 (the sm_80 PTX would JIT
//   there): the launcher then returns cudaFuncSetAttribute's error, and the caller falls back.
// Not done: no cp.async / TMA pipelining, no wgmma (sm_90 runs the sm_80 mma path), no split of
//   long sequences across blocks in the backward, O kept in shared memory rather than registers;
//   one block per SM at D = 128 on sm_80 (shared-memory bound).
#include "attention_bf16.cuh"

#if defined(__CUDACC__)
#define NURI_ATTN_BF16_UNROLL _Pragma("unroll")
#else
#define NURI_ATTN_BF16_UNROLL
#endif

namespace nuri::cuda {

namespace {
namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;             // query rows and keys per block step
constexpr unsigned kThreads = 128;    // 4 warps of 16 rows each
constexpr int kLdS = kTile + 4;       // fp32 score scratch row stride (floats)
constexpr int kLdP = kTile + 8;       // bf16 probability tile row stride (elements)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D>
struct Smem {
  static_assert(D % 16 == 0 && D <= 128, "D: a multiple of 16, at most 128");
  static constexpr int kLd = D + 8;   // bf16 staged tile row stride (elements)
  static constexpr int kLdO = D + 4;  // fp32 output accumulator row stride
  static constexpr size_t kTileBytes = size_t(kTile) * kLd * sizeof(bf16);
  static constexpr size_t kScoreBytes = size_t(kTile) * kLdS * sizeof(float);
  static constexpr size_t kProbBytes = size_t(kTile) * kLdP * sizeof(bf16);
  static constexpr size_t kOutBytes = size_t(kTile) * kLdO * sizeof(float);
  static constexpr size_t kAlignSlack = 32;  // the base is rounded up to 32 bytes
  static constexpr size_t kForward = 3 * kTileBytes + kProbBytes + kScoreBytes + kOutBytes;
  static constexpr size_t kDq = 4 * kTileBytes + 2 * kScoreBytes + kProbBytes;
  static constexpr size_t kDkdv =
      4 * kTileBytes + 2 * kScoreBytes + 2 * kProbBytes + 2 * kTile * sizeof(float);
};

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// The dynamic shared memory base rounded up to 32 bytes (WMMA pointers need 256-bit alignment).
__device__ __forceinline__ unsigned char* align32(unsigned char* p) {
  return p + (32 - reinterpret_cast<uintptr_t>(p) % 32) % 32;
}

__device__ __forceinline__ void copy16(bf16* dst, const bf16* src) {
#if defined(NURI_CUDA_EMU)
  std::memcpy(dst, src, 16);
#else
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}
__device__ __forceinline__ void zero16(bf16* dst) {
#if defined(NURI_CUDA_EMU)
  std::memset(dst, 0, 16);
#else
  *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
#endif
}

// sh[r][0:D] = src row (r0 + r), r < 64 (row stride `stride` elements), zeros from row `limit`.
// The whole block calls it; src rows 16-byte aligned.
template <int D>
__device__ __forceinline__ void stage_tile(bf16* sh, const bf16* src, size_t stride, int r0,
                                           int limit) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int idx = int(threadIdx.x); idx < kTile * kChunks; idx += int(kThreads)) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    bf16* dst = sh + r * Smem<D>::kLd + c;
    if (r0 + r < limit)
      copy16(dst, src + size_t(r0 + r) * stride + c);
    else
      zero16(dst);
  }
}

// out (16 x 16, fp32, row stride ldo) = A (16 x D, row-major bf16 at a, stride lda)
//                                       x B^T where B (16 x D) is row-major at b (stride ldb).
template <int D>
__device__ __forceinline__ void warp_abt(float* out, int ldo, const bf16* a, int lda,
                                         const bf16* b, int ldb) {
  FragC acc;
  wmma::fill_fragment(acc, 0.0f);
  NURI_ATTN_BF16_UNROLL
  for (int kd = 0; kd < D / 16; ++kd) {
    FragA fa;
    FragBCol fb;
    wmma::load_matrix_sync(fa, a + kd * 16, unsigned(lda));
    wmma::load_matrix_sync(fb, b + kd * 16, unsigned(ldb));
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(out, acc, unsigned(ldo), wmma::mem_row_major);
}
// The same with A already in fragments (a[kd] = columns [16 kd, 16 kd + 16) of A).
template <int D>
__device__ __forceinline__ void warp_frag_bt(float* out, int ldo, const FragA (&a)[D / 16],
                                             const bf16* b, int ldb) {
  FragC acc;
  wmma::fill_fragment(acc, 0.0f);
  NURI_ATTN_BF16_UNROLL
  for (int kd = 0; kd < D / 16; ++kd) {
    FragBCol fb;
    wmma::load_matrix_sync(fb, b + kd * 16, unsigned(ldb));
    wmma::mma_sync(acc, a[kd], fb, acc);
  }
  wmma::store_matrix_sync(out, acc, unsigned(ldo), wmma::mem_row_major);
}
}  // namespace

// Forward. grid (ceil(T/64), H, B), 128 threads, Smem<D>::kForward + 32 bytes of dynamic shared.
template <int D>
__global__ void attention_bf16_forward_kernel(bf16* out, float* lse, const bf16* qkv, int T,
                                              int H, int KV, float scale_log2) {
  using L = Smem<D>;
  constexpr int kLd = L::kLd, kLdO = L::kLdO;
  NURI_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* smem = align32(smem_raw);
  bf16* qs = reinterpret_cast<bf16*>(smem);                        // 64 x kLd
  bf16* ks = qs + kTile * kLd;                                     // 64 x kLd
  bf16* vs = ks + kTile * kLd;                                     // 64 x kLd
  bf16* ps = vs + kTile * kLd;                                     // 64 x kLdP
  float* ss = reinterpret_cast<float*>(ps + kTile * kLdP);         // 64 x kLdS
  float* os = ss + kTile * kLdS;                                   // 64 x kLdO

  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kTile;  // longest rows first
  const int h = int(blockIdx.y), b = int(blockIdx.z), kvh = h / (H / KV);
  const size_t R = size_t(H + 2 * KV) * D;
  const bf16* base = qkv + size_t(b) * T * R;
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int r = lane >> 1, half = lane & 1;  // this lane's row of the warp's 16, column half
  const int wr0 = warp * 16;                 // the warp's first row in the tile
  const int qi = q0 + wr0 + r;

  stage_tile<D>(qs, base + size_t(h) * D, R, q0, T);
  for (int idx = int(threadIdx.x); idx < kTile * kLdO; idx += int(kThreads)) os[idx] = 0.0f;
  __syncthreads();
  FragA qf[D / 16];  // the warp's 16 query rows, held for all key tiles
  NURI_ATTN_BF16_UNROLL
  for (int kd = 0; kd < D / 16; ++kd)
    wmma::load_matrix_sync(qf[kd], qs + wr0 * kLd + kd * 16, unsigned(kLd));

  float m = -INFINITY, l = 0.0f;
  const int kend = T < q0 + kTile ? T : q0 + kTile;  // no row of the block looks at keys >= kend
  const int warp_last = q0 + wr0 + 15 < kend - 1 ? q0 + wr0 + 15 : kend - 1;
  for (int k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();  // the previous K/V tile is no longer read
    stage_tile<D>(ks, base + size_t(H + kvh) * D, R, k0, kend);
    stage_tile<D>(vs, base + size_t(H + KV + kvh) * D, R, k0, kend);
    __syncthreads();
    // 16-key sub-blocks with at least one unmasked key for this warp (k0 <= q0 <= warp_last)
    const int nkk = (warp_last - k0) / 16 + 1 < 4 ? (warp_last - k0) / 16 + 1 : 4;
    for (int n = 0; n < nkk; ++n)
      warp_frag_bt<D>(ss + wr0 * kLdS + n * 16, kLdS, qf, ks + n * 16 * kLd, kLd);
    __syncwarp();

    // online softmax of row qi, columns [32 half, 32 half + 32)
    const float* srow = ss + (wr0 + r) * kLdS + 32 * half;
    float sv[32];
    float tmax = -INFINITY;
    NURI_ATTN_BF16_UNROLL
    for (int c = 0; c < 32; ++c) {
      const int j = k0 + 32 * half + c;
      sv[c] = j <= qi && j < kend ? srow[c] * scale_log2 : -INFINITY;
      tmax = fmaxf(tmax, sv[c]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float mnew = fmaxf(m, tmax);  // finite: key 0 is in every row's first tile
    const float corr = exp2f(m - mnew);  // 0 on the first tile
    float psum = 0.0f;
    bf16* prow = ps + (wr0 + r) * kLdP + 32 * half;
    NURI_ATTN_BF16_UNROLL
    for (int c = 0; c < 32; ++c) {
      const float p = sv[c] == -INFINITY ? 0.0f : exp2f(sv[c] - mnew);
      psum += p;
      prow[c] = __float2bfloat16_rn(p);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * corr + psum;
    m = mnew;
    float* orow = os + (wr0 + r) * kLdO + (D / 2) * half;
    NURI_ATTN_BF16_UNROLL
    for (int d = 0; d < D / 2; ++d) orow[d] *= corr;
    __syncwarp();

    // O (16 x D) += P (16 x 16 nkk) V (16 nkk x D)
    NURI_ATTN_BF16_UNROLL
    for (int n = 0; n < D / 16; ++n) {
      FragC acc;
      float* otile = os + wr0 * kLdO + n * 16;
      wmma::load_matrix_sync(acc, otile, unsigned(kLdO), wmma::mem_row_major);
      __syncwarp();  // every lane has loaded before any stores back (read-modify-write)
      for (int kk = 0; kk < nkk; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, ps + wr0 * kLdP + kk * 16, unsigned(kLdP));
        wmma::load_matrix_sync(fb, vs + kk * 16 * kLd + n * 16, unsigned(kLd));
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(otile, acc, unsigned(kLdO), wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (qi >= T) return;
  const float inv = 1.0f / l;
  const float* orow = os + (wr0 + r) * kLdO + (D / 2) * half;
  bf16* dst = out + (size_t(b) * T + qi) * (size_t(H) * D) + size_t(h) * D + (D / 2) * half;
  NURI_ATTN_BF16_UNROLL
  for (int d = 0; d < D / 2; ++d) dst[d] = __float2bfloat16_rn(orow[d] * inv);
  if (half == 0) lse[(size_t(b) * H + h) * T + qi] = (m + log2f(l)) * kLn2;
}

// delta[(b H + h) T + t] = sum_d dout * out of row (b, t, h); one warp per row.
// grid ceil(B*T*H / 4), 128 threads.
template <int D>
__global__ void attention_bf16_delta_kernel(float* delta, const bf16* dout, const bf16* out, int B,
                                            int T, int H) {
  const size_t row = size_t(blockIdx.x) * (kThreads / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= size_t(B) * T * H) return;  // the whole warp
  const int lane = int(threadIdx.x) % kWarpSize;
  const bf16* o = out + row * D;  // rows (b, t, h) are consecutive in (B,T,H*D)
  const bf16* g = dout + row * D;
  float s = 0.0f;
  NURI_ATTN_BF16_UNROLL
  for (int d = lane; d < D; d += kWarpSize) s += __bfloat162float(g[d]) * __bfloat162float(o[d]);
  s = warp_reduce_sum(s);
  if (lane == 0) {
    const size_t h = row % size_t(H), bt = row / size_t(H), t = bt % size_t(T), b = bt / size_t(T);
    delta[(b * H + h) * T + t] = s;
  }
}

// dQ. grid (ceil(T/64), H, B), 128 threads, Smem<D>::kDq + 32 bytes of dynamic shared.
template <int D>
__global__ void attention_bf16_backward_dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                                  const float* lse, const float* delta, int T,
                                                  int H, int KV, float scale) {
  using L = Smem<D>;
  constexpr int kLd = L::kLd;
  NURI_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* smem = align32(smem_raw);
  bf16* qs = reinterpret_cast<bf16*>(smem);                 // 64 x kLd
  bf16* dos = qs + kTile * kLd;                             // 64 x kLd
  bf16* ks = dos + kTile * kLd;                             // 64 x kLd
  bf16* vs = ks + kTile * kLd;                              // 64 x kLd
  bf16* dss = vs + kTile * kLd;                             // 64 x kLdP
  float* ss = reinterpret_cast<float*>(dss + kTile * kLdP);  // 64 x kLdS
  float* dps = ss + kTile * kLdS;                            // 64 x kLdS

  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kTile;
  const int h = int(blockIdx.y), b = int(blockIdx.z), kvh = h / (H / KV);
  const size_t R = size_t(H + 2 * KV) * D, OS = size_t(H) * D;
  const bf16* base = qkv + size_t(b) * T * R;
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int r = lane >> 1, half = lane & 1;
  const int wr0 = warp * 16;
  const int qi = q0 + wr0 + r;
  const float scale_log2 = scale * kLog2e;

  stage_tile<D>(qs, base + size_t(h) * D, R, q0, T);
  stage_tile<D>(dos, dout + size_t(b) * T * OS + size_t(h) * D, OS, q0, T);
  const size_t stat = (size_t(b) * H + h) * T + qi;
  const float lse2 = qi < T ? lse[stat] * kLog2e : 0.0f;
  const float dlt = qi < T ? delta[stat] : 0.0f;

  FragC dq[D / 16];
  NURI_ATTN_BF16_UNROLL
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(dq[n], 0.0f);
  const int kend = T < q0 + kTile ? T : q0 + kTile;
  const int warp_last = q0 + wr0 + 15 < kend - 1 ? q0 + wr0 + 15 : kend - 1;
  for (int k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();
    stage_tile<D>(ks, base + size_t(H + kvh) * D, R, k0, kend);
    stage_tile<D>(vs, base + size_t(H + KV + kvh) * D, R, k0, kend);
    __syncthreads();
    const int nkk = (warp_last - k0) / 16 + 1 < 4 ? (warp_last - k0) / 16 + 1 : 4;
    for (int n = 0; n < nkk; ++n) {
      warp_abt<D>(ss + wr0 * kLdS + n * 16, kLdS, qs + wr0 * kLd, kLd, ks + n * 16 * kLd, kLd);
      warp_abt<D>(dps + wr0 * kLdS + n * 16, kLdS, dos + wr0 * kLd, kLd, vs + n * 16 * kLd, kLd);
    }
    __syncwarp();
    const float* srow = ss + (wr0 + r) * kLdS + 32 * half;
    const float* dprow = dps + (wr0 + r) * kLdS + 32 * half;
    bf16* dsrow = dss + (wr0 + r) * kLdP + 32 * half;
    NURI_ATTN_BF16_UNROLL
    for (int c = 0; c < 32; ++c) {
      const int j = k0 + 32 * half + c;
      float ds = 0.0f;
      if (j <= qi && j < kend) ds = exp2f(srow[c] * scale_log2 - lse2) * (dprow[c] - dlt);
      dsrow[c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    // dQ (16 x D) += dS (16 x 16 nkk) K (16 nkk x D)
    NURI_ATTN_BF16_UNROLL
    for (int n = 0; n < D / 16; ++n)
      for (int kk = 0; kk < nkk; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, dss + wr0 * kLdP + kk * 16, unsigned(kLdP));
        wmma::load_matrix_sync(fb, ks + kk * 16 * kLd + n * 16, unsigned(kLd));
        wmma::mma_sync(dq[n], fa, fb, dq[n]);
      }
  }
  // Out through the warp's score scratch, one 16 x 16 tile at a time: row r, 8 columns per lane.
  float* scratch = ss + wr0 * kLdS;
  bf16* dst = dqkv + (size_t(b) * T + qi) * R + size_t(h) * D + 8 * half;
  NURI_ATTN_BF16_UNROLL
  for (int n = 0; n < D / 16; ++n) {
    __syncwarp();  // the previous tile has been read
    wmma::store_matrix_sync(scratch, dq[n], unsigned(kLdS), wmma::mem_row_major);
    __syncwarp();
    if (qi < T) {
      NURI_ATTN_BF16_UNROLL
      for (int c = 0; c < 8; ++c)
        dst[n * 16 + c] = __float2bfloat16_rn(scale * scratch[r * kLdS + 8 * half + c]);
    }
  }
}

// dK, dV. grid (ceil(T/64), KV, B), 128 threads, Smem<D>::kDkdv + 32 bytes of dynamic shared.
template <int D>
__global__ void attention_bf16_backward_dkdv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                                    const float* lse, const float* delta, int T,
                                                    int H, int KV, float scale) {
  using L = Smem<D>;
  constexpr int kLd = L::kLd;
  NURI_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* smem = align32(smem_raw);
  bf16* ks = reinterpret_cast<bf16*>(smem);                  // 64 x kLd
  bf16* vs = ks + kTile * kLd;                               // 64 x kLd
  bf16* qs = vs + kTile * kLd;                               // 64 x kLd
  bf16* dos = qs + kTile * kLd;                              // 64 x kLd
  bf16* pts = dos + kTile * kLd;                             // 64 x kLdP  (keys x queries)
  bf16* dsts = pts + kTile * kLdP;                           // 64 x kLdP
  float* sts = reinterpret_cast<float*>(dsts + kTile * kLdP);  // 64 x kLdS
  float* dpts = sts + kTile * kLdS;                            // 64 x kLdS
  float* lse_s = dpts + kTile * kLdS;                          // 64, times log2(e)
  float* dlt_s = lse_s + kTile;                                // 64

  const int j0 = int(blockIdx.x) * kTile;  // the first key tiles have the most work: first
  const int kvh = int(blockIdx.y), b = int(blockIdx.z), group = H / KV;
  const size_t R = size_t(H + 2 * KV) * D, OS = size_t(H) * D;
  const bf16* base = qkv + size_t(b) * T * R;
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int r = lane >> 1, half = lane & 1;  // key row of the warp's 16, query column half
  const int wr0 = warp * 16;
  const int kj = j0 + wr0 + r;
  const float scale_log2 = scale * kLog2e;

  stage_tile<D>(ks, base + size_t(H + kvh) * D, R, j0, T);
  stage_tile<D>(vs, base + size_t(H + KV + kvh) * D, R, j0, T);
  FragC dk[D / 16], dv[D / 16];
  NURI_ATTN_BF16_UNROLL
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const bf16* Q = base + size_t(h) * D;
    const bf16* dO = dout + size_t(b) * T * OS + size_t(h) * D;
    const float* Ls = lse + (size_t(b) * H + h) * T;
    const float* Ds = delta + (size_t(b) * H + h) * T;
    for (int i0 = j0; i0 < T; i0 += kTile) {  // query rows < j0 see none of these keys
      __syncthreads();  // the previous Q/dO tile is no longer read
      stage_tile<D>(qs, Q, R, i0, T);
      stage_tile<D>(dos, dO, OS, i0, T);
      if (threadIdx.x < unsigned(kTile)) {
        const int i = i0 + int(threadIdx.x);
        lse_s[threadIdx.x] = i < T ? Ls[i] * kLog2e : 0.0f;
        dlt_s[threadIdx.x] = i < T ? Ds[i] : 0.0f;
      }
      __syncthreads();
      // 16-query sub-blocks [n_lo, n_hi) that meet one of this warp's keys and start before T
      const int n_lo = i0 == j0 ? warp : 0;
      const int n_hi = (T - i0 + 15) / 16 < 4 ? (T - i0 + 15) / 16 : 4;
      for (int n = n_lo; n < n_hi; ++n) {
        warp_abt<D>(sts + wr0 * kLdS + n * 16, kLdS, ks + wr0 * kLd, kLd, qs + n * 16 * kLd, kLd);
        warp_abt<D>(dpts + wr0 * kLdS + n * 16, kLdS, vs + wr0 * kLd, kLd, dos + n * 16 * kLd,
                    kLd);
      }
      __syncwarp();
      const float* strow = sts + (wr0 + r) * kLdS;
      const float* dptrow = dpts + (wr0 + r) * kLdS;
      bf16* ptrow = pts + (wr0 + r) * kLdP;
      bf16* dstrow = dsts + (wr0 + r) * kLdP;
      NURI_ATTN_BF16_UNROLL
      for (int c = 0; c < 32; ++c) {
        const int col = 32 * half + c, i = i0 + col;
        float p = 0.0f, ds = 0.0f;
        if (i >= kj && i < T) {  // implies n_lo <= col / 16 < n_hi
          p = exp2f(strow[col] * scale_log2 - lse_s[col]);
          ds = p * (dptrow[col] - dlt_s[col]);
        }
        ptrow[col] = __float2bfloat16_rn(p);
        dstrow[col] = __float2bfloat16_rn(ds);
      }
      __syncwarp();
      // dV (16 x D) += P^T (16 x 64) dO (64 x D);  dK (16 x D) += dS^T (16 x 64) Q (64 x D)
      NURI_ATTN_BF16_UNROLL
      for (int n = 0; n < D / 16; ++n)
        for (int kk = n_lo; kk < n_hi; ++kk) {
          FragA fa;
          FragBRow fb;
          wmma::load_matrix_sync(fa, pts + wr0 * kLdP + kk * 16, unsigned(kLdP));
          wmma::load_matrix_sync(fb, dos + kk * 16 * kLd + n * 16, unsigned(kLd));
          wmma::mma_sync(dv[n], fa, fb, dv[n]);
          wmma::load_matrix_sync(fa, dsts + wr0 * kLdP + kk * 16, unsigned(kLdP));
          wmma::load_matrix_sync(fb, qs + kk * 16 * kLd + n * 16, unsigned(kLd));
          wmma::mma_sync(dk[n], fa, fb, dk[n]);
        }
    }
  }
  float* scratch = sts + wr0 * kLdS;
  bf16* dkrow = dqkv + (size_t(b) * T + kj) * R + size_t(H + kvh) * D + 8 * half;
  bf16* dvrow = dqkv + (size_t(b) * T + kj) * R + size_t(H + KV + kvh) * D + 8 * half;
  NURI_ATTN_BF16_UNROLL
  for (int n = 0; n < D / 16; ++n) {
    __syncwarp();
    wmma::store_matrix_sync(scratch, dk[n], unsigned(kLdS), wmma::mem_row_major);
    wmma::store_matrix_sync(scratch + 16, dv[n], unsigned(kLdS), wmma::mem_row_major);
    __syncwarp();
    if (kj < T) {
      NURI_ATTN_BF16_UNROLL
      for (int c = 0; c < 8; ++c) {
        dkrow[n * 16 + c] = __float2bfloat16_rn(scale * scratch[r * kLdS + 8 * half + c]);
        dvrow[n * 16 + c] = __float2bfloat16_rn(scratch[r * kLdS + 16 + 8 * half + c]);
      }
    }
  }
}

namespace {
bool attention_bf16_shape_ok(int B, int T, int H, int KV, int D) {
  return B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0 && (D == 64 || D == 128) &&
         B <= 65535 && H <= 65535 &&
         size_t(B) * T * H / (kThreads / kWarpSize) < size_t(0x7fffffff);  // the delta grid
}
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Opts the kernel in to `bytes` of dynamic shared memory (above the default 48 KiB). A device
// with less shared memory per block gets the error back (and it is cleared from the runtime's
// last error, so the caller can fall back cleanly).
template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, size_t bytes) {
#if defined(NURI_CUDA_EMU)
  (void)kernel;
  (void)bytes;
  return cudaSuccess;
#else
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err;
#endif
}

template <int D>
cudaError_t forward_d(bf16* out, float* lse, const bf16* qkv, int B, int T, int H, int KV,
                      cudaStream_t stream) {
  const size_t shared = Smem<D>::kForward + Smem<D>::kAlignSlack;
  cudaError_t err = allow_shared(attention_bf16_forward_kernel<D>, shared);
  if (err != cudaSuccess) return err;
  const float scale_log2 = kLog2e / sqrtf(float(D));
  const dim3 grid(blocks_for(size_t(T), kTile), unsigned(H), unsigned(B));
  NURI_LAUNCH(attention_bf16_forward_kernel<D>, grid, kThreads, shared, stream, out, lse, qkv, T,
              H, KV, scale_log2);
  return cudaGetLastError();
}

template <int D>
cudaError_t backward_d(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                       const float* lse, float* delta, int B, int T, int H, int KV,
                       cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(D));
  const size_t rows = size_t(B) * T * H;
  NURI_LAUNCH(attention_bf16_delta_kernel<D>, blocks_for(rows, kThreads / kWarpSize), kThreads, 0,
              stream, delta, dout, out, B, T, H);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const size_t dq_shared = Smem<D>::kDq + Smem<D>::kAlignSlack;
  if ((err = allow_shared(attention_bf16_backward_dq_kernel<D>, dq_shared)) != cudaSuccess)
    return err;
  NURI_LAUNCH(attention_bf16_backward_dq_kernel<D>,
              dim3(blocks_for(size_t(T), kTile), unsigned(H), unsigned(B)), kThreads, dq_shared,
              stream, dqkv, dout, qkv, lse, delta, T, H, KV, scale);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  const size_t kv_shared = Smem<D>::kDkdv + Smem<D>::kAlignSlack;
  if ((err = allow_shared(attention_bf16_backward_dkdv_kernel<D>, kv_shared)) != cudaSuccess)
    return err;
  NURI_LAUNCH(attention_bf16_backward_dkdv_kernel<D>,
              dim3(blocks_for(size_t(T), kTile), unsigned(KV), unsigned(B)), kThreads, kv_shared,
              stream, dqkv, dout, qkv, lse, delta, T, H, KV, scale);
  return cudaGetLastError();
}
}  // namespace

size_t attention_bf16_shared_bytes(int D) {
  const auto most = [](size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); };
  if (D == 64) return most(Smem<64>::kForward, Smem<64>::kDq, Smem<64>::kDkdv) + Smem<64>::kAlignSlack;
  if (D == 128) return most(Smem<128>::kForward, Smem<128>::kDq, Smem<128>::kDkdv) + Smem<128>::kAlignSlack;
  return 0;
}

cudaError_t attention_forward_bf16(bf16* out, float* lse, const bf16* qkv, int B, int T, int H,
                                   int KV, int D, cudaStream_t stream) {
  NURI_NVTX_RANGE("attention_forward_bf16");
  if (!attention_bf16_shape_ok(B, T, H, KV, D)) return cudaErrorInvalidValue;
  if (B == 0 || T == 0) return cudaSuccess;
  if (!aligned16(qkv)) return cudaErrorInvalidValue;
  return D == 64 ? forward_d<64>(out, lse, qkv, B, T, H, KV, stream)
                 : forward_d<128>(out, lse, qkv, B, T, H, KV, stream);
}

size_t attention_backward_bf16_workspace(int B, int T, int H, int KV, int D) {
  (void)KV;
  (void)D;
  return B > 0 && T > 0 && H > 0 ? size_t(B) * H * T : 0;
}

cudaError_t attention_backward_bf16(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                                    const float* lse, float* workspace, int B, int T, int H,
                                    int KV, int D, cudaStream_t stream) {
  NURI_NVTX_RANGE("attention_backward_bf16");
  if (!attention_bf16_shape_ok(B, T, H, KV, D)) return cudaErrorInvalidValue;
  if (B == 0 || T == 0) return cudaSuccess;
  if (!aligned16(qkv) || !aligned16(dout) || !aligned16(out)) return cudaErrorInvalidValue;
  return D == 64 ? backward_d<64>(dqkv, dout, qkv, out, lse, workspace, B, T, H, KV, stream)
                 : backward_d<128>(dqkv, dout, qkv, out, lse, workspace, B, T, H, KV, stream);
}

}  // namespace nuri::cuda

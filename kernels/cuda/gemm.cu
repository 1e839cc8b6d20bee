// Tiled bf16 GEMM on tensor cores (WMMA m16n16k16, fp32 accumulation) with fused epilogues; the
// twin of the CPU backend's gemm (src/backend/cpu, fp32) on bf16-rounded inputs:
//   C (M,N) fp32 = epilogue(alpha * op(A) op(B) [+ beta C]),   op(X) = X or X^T
//   A bf16 (M,K) row-major, stride lda (or (K,M) when trans_a); B bf16 (K,N), stride ldb (or (N,K)
//   when trans_b); C fp32 (M,N), stride ldc; bias fp32 (N); pre_gelu fp32 (M,N), stride ldc. C and
//   pre_gelu may instead be bf16 (the model's bf16 activations): the epilogue computes in fp32
//   and rounds each result once.
//   Epilogues (gemm.cuh): none, + bias[col], + bias[col] then GELU (tanh approximation, as in
//   gelu.cu) with the pre-activation optionally stored.
// Launch: grid (ceil(N/128), ceil(M/128)), block 256 threads = 8 warps; each block owns one
//   128 x 128 tile of C and walks K in steps of BK = 32.
//   Warps are a 2 (m) x 4 (n) grid; warp (wm, wn) owns rows [64 wm, 64 wm + 64) and columns
//   [32 wn, 32 wn + 32) of the block tile: 4 x 2 WMMA accumulators of 16 x 16 (64 fp32 registers).
//   Shared memory (static, 40 KiB): two buffers (double buffering) per operand of one K-step tile,
//   each kept in the operand's global layout, rows padded by 8 bf16 (16 bytes):
//     A: (128 m, 32 k) stride 40, or when trans_a (32 k, 128 m) stride 136
//     B: (32 k, 128 n) stride 136, or when trans_b (128 n, 32 k) stride 40
//   so a transposed operand is read by col_major fragments instead of being transposed on the way
//   in. With the padding, 8 consecutive rows start in 8 different 16-byte bank groups (strides of
//   80 and 272 bytes), so 8-row fragment reads are conflict-free, and WMMA's rules hold: fragment
//   pointers 32-byte aligned, ldm a multiple of 16 bytes. After the K loop the same memory holds
//   one 16 x 20 fp32 scratch per warp for the epilogue (store_matrix_sync, then each lane applies
//   the epilogue to 8 elements and writes C with bounds checks; a half-warp writes 16 consecutive
//   floats of a row).
// Loads: each thread moves 2 chunks of 8 bf16 per operand per K step, global -> registers ->
//   shared. The next K step's chunks are loaded into registers before the current step's MMAs and
//   stored to the other buffer after them (one __syncthreads per K step). A chunk is one 16-byte
//   load where the operand allows it (vec_a / vec_b: 16-byte aligned pointer, stride a multiple of
//   8) and the chunk lies inside the matrix; otherwise 8 scalar loads. Elements beyond M, N or K
//   are zero in shared memory, so any M, N, K works (K = 0: no K step, the epilogue of 0).
// Numerics: products of bf16 values are exact in fp32; sums in fp32 in the tensor cores' order
//   (differs from the CPU's: tests bound the error by a multiple of sum_k |a_ik b_kj|).
// Registers: __launch_bounds__(256, 2) caps them at 128 so that two blocks (16 warps) share an SM;
//   ptxas (nvcc 13.0) then reports 128 registers and 0 to 24 bytes of spills per layout (sm_80,
//   sm_90a). Unconstrained it needs 128 to 130 and spills nothing, and 130 means one block per SM.
//   Which is faster is for the benchmark on hardware to say (nothing here has run on a GPU).
// Not done yet (performance): cp.async / TMA pipelines, a swizzled block order for L2 reuse,
//   split-K for small M N, a smaller tile for small problems, bf16 output.
#include "gemm.cuh"

#include <type_traits>

// nvcc-only annotations (g++ in the emulated build knows neither).
#if defined(NURI_CUDA_EMU)
#define NURI_GEMM_LAUNCH_BOUNDS
#define NURI_UNROLL
#else
#define NURI_GEMM_LAUNCH_BOUNDS __launch_bounds__(256, 2)
#define NURI_UNROLL _Pragma("unroll")
#endif

namespace nuri::cuda {

namespace {
namespace wmma = nvcuda::wmma;

constexpr int kBM = 128;       // block tile rows (m)
constexpr int kBN = 128;       // block tile columns (n)
constexpr int kBK = 32;        // K step
constexpr int kWarpsM = 2;     // warp grid
constexpr int kWarpsN = 4;
constexpr int kThreads = kWarpsM * kWarpsN * kWarpSize;  // 256
constexpr int kWarpTileM = kBM / kWarpsM;                 // 64
constexpr int kWarpTileN = kBN / kWarpsN;                 // 32
constexpr int kFrag = 16;                                 // WMMA m = n = k
constexpr int kFragsM = kWarpTileM / kFrag;               // 4
constexpr int kFragsN = kWarpTileN / kFrag;               // 2
constexpr int kPad = 8;                                   // bf16 per padded row (16 bytes)
constexpr int kChunk = 8;                                 // bf16 per 16-byte chunk
constexpr int kMaxGridY = 65535;

// An operand tile as stored in shared memory: kRows x kCols of the operand's own row-major
// layout, row stride kCols + kPad.
template <int kRows, int kCols>
struct SmemTile {
  static constexpr int rows = kRows;
  static constexpr int ld = kCols + kPad;
  static constexpr int chunks_per_row = kCols / kChunk;
  static constexpr int chunks_per_thread = kRows * kCols / kChunk / kThreads;
  static_assert(kCols % kChunk == 0 && (kRows * kCols / kChunk) % kThreads == 0,
                "a tile is a whole number of 16-byte chunks per thread");
  static_assert((ld * 2) % 16 == 0 && (kFrag * ld * 2) % 32 == 0,
                "WMMA: ldm a multiple of 16 bytes, fragment rows 32-byte aligned");
};
// A: (m, k) or, transposed, (k, m). B: (k, n) or, transposed, (n, k).
using TileA = SmemTile<kBM, kBK>;
using TileAT = SmemTile<kBK, kBM>;
using TileB = SmemTile<kBK, kBN>;
using TileBT = SmemTile<kBN, kBK>;
constexpr int kTileElems = TileA::rows * TileA::ld > TileAT::rows * TileAT::ld
                               ? TileA::rows * TileA::ld
                               : TileAT::rows * TileAT::ld;  // 5120 bf16, also >= B's
static_assert(TileB::rows * TileB::ld <= kTileElems && TileBT::rows * TileBT::ld <= kTileElems,
              "B tiles fit the buffer");

constexpr int kScratchLd = kFrag + 4;  // epilogue scratch row stride (fp32): 80 bytes
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kOperandBytes = 2 * 2 * kTileElems * 2;  // {A, B} x 2 buffers x bf16
constexpr int kScratchBytes = kWarps * kFrag * kScratchLd * 4;
constexpr int kSmemBytes = kOperandBytes > kScratchBytes ? kOperandBytes : kScratchBytes;
static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
static_assert((kTileElems * 2) % 128 == 0 && (kFrag * kScratchLd * 4) % 32 == 0,
              "buffers start 32-byte aligned");

// The block's shared memory; 128-byte aligned so that every tile and scratch starts aligned.
struct alignas(128) GemmSmem {
  unsigned char bytes[kSmemBytes];
};

// 8 consecutive bf16 of a row as raw bits: one 16-byte register chunk; element e is the low
// (e even) or high (e odd) half of word e / 2 (x, y, z, w; little-endian, as in memory). Under
// nvcc it is the built-in uint4, so that the copies are single 16-byte loads and stores.
#if defined(NURI_CUDA_EMU)
struct alignas(16) Bf16x8 {
  unsigned x, y, z, w;
};
#else
using Bf16x8 = uint4;
#endif

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

__device__ __forceinline__ float gelu_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}

// Reads this thread's chunks of the tile whose top-left element is (r0, c0) of the row-major
// matrix X (rows x cols, stride ld) into registers; elements outside X read as zero.
template <class Tile>
__device__ __forceinline__ void load_tile(Bf16x8 (&regs)[Tile::chunks_per_thread],
                                          const __nv_bfloat16* X, int ld, int rows, int cols,
                                          int r0, int c0, bool vec) {
NURI_UNROLL
  for (int i = 0; i < Tile::chunks_per_thread; ++i) {
    const int chunk = int(threadIdx.x) + i * kThreads;
    const int r = r0 + chunk / Tile::chunks_per_row;
    const int c = c0 + (chunk % Tile::chunks_per_row) * kChunk;
    if (vec && r < rows && c + kChunk <= cols) {
      regs[i] = *reinterpret_cast<const Bf16x8*>(X + size_t(r) * ld + c);
    } else {  // edge chunk or unaligned operand: element by element, zero outside X
      unsigned words[kChunk / 2] = {0u, 0u, 0u, 0u};
      if (r < rows) {
        const unsigned short* row = reinterpret_cast<const unsigned short*>(X + size_t(r) * ld);
NURI_UNROLL
        for (int e = 0; e < kChunk; ++e)
          if (c + e < cols) words[e / 2] |= unsigned(row[c + e]) << (16 * (e % 2));
      }
      regs[i] = Bf16x8{words[0], words[1], words[2], words[3]};
    }
  }
}

// Writes this thread's chunks (load_tile) to the shared tile (row stride Tile::ld).
template <class Tile>
__device__ __forceinline__ void store_tile(__nv_bfloat16* tile,
                                           const Bf16x8 (&regs)[Tile::chunks_per_thread]) {
NURI_UNROLL
  for (int i = 0; i < Tile::chunks_per_thread; ++i) {
    const int chunk = int(threadIdx.x) + i * kThreads;
    const int r = chunk / Tile::chunks_per_row;
    const int c = (chunk % Tile::chunks_per_row) * kChunk;
    // One 16-byte store: ld and c are multiples of 8 bf16.
    reinterpret_cast<Bf16x8*>(tile)[(r * Tile::ld + c) / kChunk] = regs[i];
  }
}
}  // namespace

template <class Layout, typename Out>
NURI_GEMM_LAUNCH_BOUNDS __global__ void gemm_bf16_kernel(int M, int N, int K, float alpha,
                                                         const __nv_bfloat16* A, int lda,
                                                         bool vec_a, const __nv_bfloat16* B,
                                                         int ldb, bool vec_b, float beta, Out* C,
                                                         int ldc, const float* bias,
                                                         GemmEpilogue epilogue, Out* pre_gelu) {
  constexpr bool kTransA = Layout::trans_a;
  constexpr bool kTransB = Layout::trans_b;
  using TileOfA = std::conditional_t<kTransA, TileAT, TileA>;
  using TileOfB = std::conditional_t<kTransB, TileBT, TileB>;
  using FragLayoutA = std::conditional_t<kTransA, wmma::col_major, wmma::row_major>;
  using FragLayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;

  __shared__ GemmSmem smem;
  __nv_bfloat16* const a_tiles = reinterpret_cast<__nv_bfloat16*>(smem.bytes);  // [2][kTileElems]
  __nv_bfloat16* const b_tiles = a_tiles + 2 * kTileElems;  // [2][kTileElems]

  const int warp = int(threadIdx.x) / kWarpSize;
  const int lane = int(threadIdx.x) % kWarpSize;
  const int warp_m = warp / kWarpsN;  // 0..1
  const int warp_n = warp % kWarpsN;  // 0..3
  const int m0 = int(blockIdx.y) * kBM;
  const int n0 = int(blockIdx.x) * kBN;

  // The operands as row-major matrices: A is (M, K) or (K, M); B is (K, N) or (N, K).
  const int a_rows = kTransA ? K : M, a_cols = kTransA ? M : K;
  const int b_rows = kTransB ? N : K, b_cols = kTransB ? K : N;
  // Global origin (row, col) of the K step starting at k0.
  auto a_origin_r = [&](int k0) { return kTransA ? k0 : m0; };
  auto a_origin_c = [&](int k0) { return kTransA ? m0 : k0; };
  auto b_origin_r = [&](int k0) { return kTransB ? n0 : k0; };
  auto b_origin_c = [&](int k0) { return kTransB ? k0 : n0; };

  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> acc[kFragsM][kFragsN];
NURI_UNROLL
  for (int i = 0; i < kFragsM; ++i)
NURI_UNROLL
    for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int k_steps = K / kBK + (K % kBK != 0);
  Bf16x8 a_regs[TileOfA::chunks_per_thread];
  Bf16x8 b_regs[TileOfB::chunks_per_thread];
  if (k_steps > 0) {
    load_tile<TileOfA>(a_regs, A, lda, a_rows, a_cols, a_origin_r(0), a_origin_c(0), vec_a);
    load_tile<TileOfB>(b_regs, B, ldb, b_rows, b_cols, b_origin_r(0), b_origin_c(0), vec_b);
    store_tile<TileOfA>(a_tiles, a_regs);
    store_tile<TileOfB>(b_tiles, b_regs);
  }
  __syncthreads();

  for (int step = 0; step < k_steps; ++step) {
    const int buf = step & 1;
    const bool has_next = step + 1 < k_steps;
    if (has_next) {  // next K step: global -> registers, in flight during the MMAs below
      const int k0 = (step + 1) * kBK;
      load_tile<TileOfA>(a_regs, A, lda, a_rows, a_cols, a_origin_r(k0), a_origin_c(k0), vec_a);
      load_tile<TileOfB>(b_regs, B, ldb, b_rows, b_cols, b_origin_r(k0), b_origin_c(k0), vec_b);
    }
    const __nv_bfloat16* a_tile = a_tiles + buf * kTileElems;
    const __nv_bfloat16* b_tile = b_tiles + buf * kTileElems;
NURI_UNROLL
    for (int kk = 0; kk < kBK; kk += kFrag) {
      // The warp's kFragsN B fragments stay loaded while its kFragsM A fragments stream through
      // one at a time (fewer live registers than holding all of them).
      using FragB = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, FragLayoutB>;
      using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, FragLayoutA>;
      FragB b_frag[kFragsN];
NURI_UNROLL
      for (int j = 0; j < kFragsN; ++j) {
        const int n = warp_n * kWarpTileN + j * kFrag;  // column of the block tile
        const __nv_bfloat16* p =
            kTransB ? b_tile + n * TileOfB::ld + kk : b_tile + kk * TileOfB::ld + n;
        wmma::load_matrix_sync(b_frag[j], p, TileOfB::ld);
      }
NURI_UNROLL
      for (int i = 0; i < kFragsM; ++i) {
        const int m = warp_m * kWarpTileM + i * kFrag;  // row of the block tile
        const __nv_bfloat16* p =
            kTransA ? a_tile + kk * TileOfA::ld + m : a_tile + m * TileOfA::ld + kk;
        FragA a_frag;
        wmma::load_matrix_sync(a_frag, p, TileOfA::ld);
NURI_UNROLL
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], a_frag, b_frag[j], acc[i][j]);
      }
    }
    if (has_next) {  // the other buffer was last read in the previous step, before its barrier
      store_tile<TileOfA>(a_tiles + (buf ^ 1) * kTileElems, a_regs);
      store_tile<TileOfB>(b_tiles + (buf ^ 1) * kTileElems, b_regs);
    }
    __syncthreads();
  }

  // Epilogue. Every warp is past its last read of the operand tiles (the barrier above), so
  // their memory now holds one 16 x kScratchLd fp32 scratch per warp.
  float* const scratch = reinterpret_cast<float*>(smem.bytes) + warp * kFrag * kScratchLd;
NURI_UNROLL
  for (int i = 0; i < kFragsM; ++i)
NURI_UNROLL
    for (int j = 0; j < kFragsN; ++j) {
      wmma::store_matrix_sync(scratch, acc[i][j], kScratchLd, wmma::mem_row_major);
      __syncwarp();
      const int row0 = m0 + warp_m * kWarpTileM + i * kFrag;
      const int col = n0 + warp_n * kWarpTileN + j * kFrag + lane % kFrag;
      const float bias_col = (epilogue != GemmEpilogue::none && bias && col < N) ? bias[col] : 0.0f;
NURI_UNROLL
      for (int e = 0; e < kFrag * kFrag / kWarpSize; ++e) {
        const int r = 2 * e + lane / kFrag;  // two rows per pass, 16 lanes per row
        const int row = row0 + r;
        if (row >= M || col >= N) continue;
        const size_t idx = size_t(row) * ldc + col;
        float v = alpha * scratch[r * kScratchLd + lane % kFrag];
        if (beta != 0.0f) v += beta * to_float(C[idx]);
        v += bias_col;
        if (epilogue == GemmEpilogue::bias_gelu) {
          if (pre_gelu) pre_gelu[idx] = from_float<Out>(v);
          v = gelu_tanh(v);
        }
        C[idx] = from_float<Out>(v);
      }
      __syncwarp();  // all lanes have read the scratch before the next fragment overwrites it
    }
}

namespace {
template <bool kTransA, bool kTransB, typename Out>
cudaError_t launch_gemm(dim3 grid, int M, int N, int K, float alpha, const __nv_bfloat16* A,
                        int lda, bool vec_a, const __nv_bfloat16* B, int ldb, bool vec_b,
                        float beta, Out* C, int ldc, const float* bias, GemmEpilogue epilogue,
                        Out* pre_gelu, cudaStream_t stream) {
  using Layout = GemmLayout<kTransA, kTransB>;
  NURI_LAUNCH((gemm_bf16_kernel<Layout, Out>), grid, kThreads, 0, stream, M, N, K, alpha, A, lda,
              vec_a, B, ldb, vec_b, beta, C, ldc, bias, epilogue, pre_gelu);
  return cudaGetLastError();
}

// 16-byte loads need a 16-byte aligned base and every row start 16-byte aligned (stride % 8).
bool vectorizable(const __nv_bfloat16* X, int ld) {
  return X != nullptr && reinterpret_cast<uintptr_t>(X) % 16 == 0 && ld % kChunk == 0;
}
}  // namespace

namespace {
template <typename Out>
cudaError_t run_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                     const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                     Out* C, int ldc, const float* bias, GemmEpilogue epilogue, Out* pre_gelu,
                     cudaStream_t stream) {
  if (M < 0 || N < 0 || K < 0) return cudaErrorInvalidValue;
  if (lda < (trans_a ? M : K) || ldb < (trans_b ? K : N) || ldc < N) return cudaErrorInvalidValue;
  if (epilogue != GemmEpilogue::none && epilogue != GemmEpilogue::bias &&
      epilogue != GemmEpilogue::bias_gelu)
    return cudaErrorInvalidValue;
  if (epilogue == GemmEpilogue::bias && bias == nullptr) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  if (C == nullptr || (K > 0 && (A == nullptr || B == nullptr))) return cudaErrorInvalidValue;
  const unsigned grid_y = blocks_for(size_t(M), kBM);
  if (grid_y > unsigned(kMaxGridY)) return cudaErrorInvalidValue;
  const dim3 grid(blocks_for(size_t(N), kBN), grid_y);
  const bool vec_a = vectorizable(A, lda), vec_b = vectorizable(B, ldb);
  if (epilogue != GemmEpilogue::bias_gelu) pre_gelu = nullptr;
  if (!trans_a && !trans_b)
    return launch_gemm<false, false>(grid, M, N, K, alpha, A, lda, vec_a, B, ldb, vec_b, beta, C,
                                     ldc, bias, epilogue, pre_gelu, stream);
  if (!trans_a && trans_b)
    return launch_gemm<false, true>(grid, M, N, K, alpha, A, lda, vec_a, B, ldb, vec_b, beta, C,
                                    ldc, bias, epilogue, pre_gelu, stream);
  if (trans_a && !trans_b)
    return launch_gemm<true, false>(grid, M, N, K, alpha, A, lda, vec_a, B, ldb, vec_b, beta, C,
                                    ldc, bias, epilogue, pre_gelu, stream);
  return launch_gemm<true, true>(grid, M, N, K, alpha, A, lda, vec_a, B, ldb, vec_b, beta, C, ldc,
                                 bias, epilogue, pre_gelu, stream);
}
}  // namespace

cudaError_t gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      float* C, int ldc, const float* bias, GemmEpilogue epilogue, float* pre_gelu,
                      cudaStream_t stream) {
  NURI_NVTX_RANGE("gemm_bf16");
  return run_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, epilogue,
                  pre_gelu, stream);
}

cudaError_t gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      __nv_bfloat16* C, int ldc, const float* bias, GemmEpilogue epilogue,
                      __nv_bfloat16* pre_gelu, cudaStream_t stream) {
  NURI_NVTX_RANGE("gemm_bf16 (bf16 out)");
  return run_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, epilogue,
                  pre_gelu, stream);
}

}  // namespace nuri::cuda

// The CUDA kernels of kernels/cuda, compiled as host C++ through the emulation layer
// (kernels/cuda/emu, NURI_CUDA_EMU) and checked against the CPU backend, the reference, on small
// awkward shapes (odd sizes, sizes that are not multiples of the block or the warp).
// Tolerances: fp32 kernels |got - want| <= 1e-5 |want| + atol (atol 1e-6 for O(1) values, for
// the zeros of derivatives where a relative bound means nothing); bf16 kernels: the bf16 rounding
// of the output (2^-8 relative) on top of the fp32 result of bf16-rounded inputs.
// The last test case lists every kernel launched here and fails if a __global__ kernel of any
// kernels/cuda/*.cu was never launched (so a new kernel fails CI until it is tested here).
// Run the whole binary: the coverage check counts the launches of the test cases before it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "adamw.cuh"
#include "attention.cuh"
#include "cast.cuh"
#include "embedding.cuh"
#include "gelu.cuh"
#include "layernorm.cuh"
#include "nuri/backend.hpp"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"
#include "emu_test_util.hpp"

#if NURI_HAVE_CUDA_BF16
uint16_t cuda_host_float2bfloat16_rn_bits(float f);  // bf16_reference.cpp
#endif

using namespace emu_test;  // NOLINT: the shared helpers of emu_test_util.hpp

// ---- the emulator itself ----

namespace {
// Each lane writes the results of the four shuffle kinds for its value (lane * 10 + warp).
__global__ void emu_shuffle_probe_kernel(int* out, int width) {
  const int lane = int(threadIdx.x) % 32;
  const int v = lane * 10 + int(threadIdx.x) / 32;
  int* o = out + size_t(threadIdx.x) * 4;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5, width);
  o[1] = __shfl_down_sync(0xffffffffu, v, 3, width);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2, width);
  o[3] = __shfl_sync(0xffffffffu, v, 7, width);
}
// block_reduce_sum of threadIdx.x + 1, and an atomicAdd from every thread.
__global__ void emu_reduce_probe_kernel(float* sums, float* counter) {
  const float s = nuri::cuda::block_reduce_sum(float(threadIdx.x + 1));
  const float again = nuri::cuda::block_reduce_sum(1.0f);  // back to back: reuses shared memory
  if (threadIdx.x == 0) {
    sums[blockIdx.x * 2] = s;
    sums[blockIdx.x * 2 + 1] = again;
  }
  atomicAdd(counter, 1.0f);
}
// Block and thread indices of a 3-D launch, and a __shared__ exchange across __syncthreads.
__global__ void emu_index_probe_kernel(int* out) {
  __shared__ int tile[2 * 3 * 4];
  const int t = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  const int nt = int(blockDim.x * blockDim.y * blockDim.z);
  const int b = int(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
  tile[t] = t * 100 + b;
  __syncthreads();
  out[b * nt + t] = tile[nt - 1 - t];  // another thread's value
}
// Dynamic shared memory: each thread writes its slot, then reads its neighbour's.
__global__ void emu_dynamic_shared_probe_kernel(float* out) {
  NURI_DYNAMIC_SHARED(float, buf);
  buf[threadIdx.x] = float(threadIdx.x) + 0.5f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}
// One warp: d (16,16) = a (16,16, row-major) b (16,16, col-major in memory) + c, then x2 element-wise.
__global__ void emu_wmma_probe_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b,
                                      const float* c) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(acc, fa, fb, acc);
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= 2.0f;
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}
}  // namespace

TEST_CASE("emulator: warp shuffles, block reduction, atomics, indices", "[emu]") {
  for (int width : {32, 8}) {
    std::vector<int> out(64 * 4, -1);
    NURI_LAUNCH(emu_shuffle_probe_kernel, 1, 64, 0, kStream, out.data(), width);
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, warp = t / 32, base = lane & ~(width - 1);
      auto val = [&](int l) { return l * 10 + warp; };
      const int x = lane ^ 5;
      INFO("width " << width << " thread " << t);
      CHECK(out[t * 4 + 0] == val(x < base + width ? x : lane));
      CHECK(out[t * 4 + 1] == val(lane + 3 < base + width ? lane + 3 : lane));
      CHECK(out[t * 4 + 2] == val(lane - 2 >= base ? lane - 2 : lane));
      CHECK(out[t * 4 + 3] == val(base + 7 % width));
    }
  }
  for (unsigned block : {32u, 96u, 256u}) {
    Vec sums(3 * 2, 0.0f);
    float counter = 0.0f;
    NURI_LAUNCH(emu_reduce_probe_kernel, 3, block, 0, kStream, sums.data(), &counter);
    for (int b = 0; b < 3; ++b) {
      CHECK(sums[b * 2] == float(block * (block + 1) / 2));
      CHECK(sums[b * 2 + 1] == float(block));
    }
    CHECK(counter == float(3 * block));
  }
  Vec dyn(2 * 40, -1.0f);
  NURI_LAUNCH(emu_dynamic_shared_probe_kernel, 2, 40, 40 * sizeof(float), kStream, dyn.data());
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 40; ++t) CHECK(dyn[b * 40 + t] == float((t + 1) % 40) + 0.5f);
  std::vector<int> idx(5 * 24, -1);
  NURI_LAUNCH(emu_index_probe_kernel, dim3(5, 1, 1), dim3(2, 3, 4), 0, kStream, idx.data());
  for (int b = 0; b < 5; ++b)
    for (int t = 0; t < 24; ++t) CHECK(idx[b * 24 + t] == (23 - t) * 100 + b);

  // wmma: inputs are small integers, so the bf16 product is exact and must match exactly.
  alignas(32) __nv_bfloat16 a[256], b[256];
  alignas(32) float c[256], d[256];
  for (int i = 0; i < 256; ++i) {
    a[i] = __float2bfloat16_rn(float(i % 7 - 3));
    b[i] = __float2bfloat16_rn(float(i % 5 - 2));
    c[i] = float(i % 3);
  }
  NURI_LAUNCH(emu_wmma_probe_kernel, 1, 32, 0, kStream, d, a, b, c);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float want = c[m * 16 + n];
      for (int k = 0; k < 16; ++k)  // b is col-major: element (k, n) at n * 16 + k
        want += __bfloat162float(a[m * 16 + k]) * __bfloat162float(b[n * 16 + k]);
      CHECK(d[m * 16 + n] == 2.0f * want);
    }
}

// ---- kernels against the CPU backend ----

TEST_CASE("gelu forward/backward (fp32, bf16)", "[gelu]") {
  for (size_t n : {size_t(1), size_t(7), size_t(31), size_t(33), size_t(100), size_t(257),
                   size_t(1000)}) {
    INFO("n = " << n);
    const Vec x = random_vec(n, 1 + uint32_t(n), -5.0f, 5.0f);
    const Vec dy = random_vec(n, 2 + uint32_t(n));
    Vec out(n), want(n), dx(n), dx_want(n);
    REQUIRE(cu::gelu_forward(out.data(), x.data(), n, kStream) == cudaSuccess);
    cpu().gelu_forward(want.data(), x.data(), n);
    check_close("gelu_forward", out, want);
    REQUIRE(cu::gelu_backward(dx.data(), x.data(), dy.data(), n, kStream) == cudaSuccess);
    cpu().gelu_backward(dx_want.data(), x.data(), dy.data(), n);
    check_close("gelu_backward", dx, dx_want);
    Vec inplace = x;  // out may alias inp
    REQUIRE(cu::gelu_forward(inplace.data(), inplace.data(), n, kStream) == cudaSuccess);
    check_close("gelu_forward in place", inplace, want);

    const auto xb = to_bf16(x), dyb = to_bf16(dy);
    const Vec xr = from_bf16(xb), dyr = from_bf16(dyb);
    std::vector<__nv_bfloat16> outb(n), dxb(n);
    REQUIRE(cu::gelu_forward(outb.data(), xb.data(), n, kStream) == cudaSuccess);
    cpu().gelu_forward(want.data(), xr.data(), n);
    check_close("gelu_forward bf16", from_bf16(outb), want, kBf16Rtol, kBf16Atol);
    REQUIRE(cu::gelu_backward(dxb.data(), xb.data(), dyb.data(), n, kStream) == cudaSuccess);
    cpu().gelu_backward(dx_want.data(), xr.data(), dyr.data(), n);
    check_close("gelu_backward bf16", from_bf16(dxb), dx_want, kBf16Rtol, kBf16Atol);
  }
}

TEST_CASE("swiglu forward/backward (fp32, bf16)", "[swiglu]") {
  for (int N : {1, 7}) {
    for (int F : {1, 31, 33, 100}) {
      INFO("N = " << N << ", F = " << F);
      const size_t nf = size_t(N) * F;
      const Vec inp = random_vec(2 * nf, 10 + uint32_t(nf), -4.0f, 4.0f);
      const Vec dy = random_vec(nf, 11 + uint32_t(nf));
      Vec out(nf), want(nf), dx(2 * nf), dx_want(2 * nf);
      REQUIRE(cu::swiglu_forward(out.data(), inp.data(), N, F, kStream) == cudaSuccess);
      cpu().swiglu_forward(want.data(), inp.data(), N, F);
      check_close("swiglu_forward", out, want);
      REQUIRE(cu::swiglu_backward(dx.data(), inp.data(), dy.data(), N, F, kStream) == cudaSuccess);
      cpu().swiglu_backward(dx_want.data(), inp.data(), dy.data(), N, F);
      check_close("swiglu_backward", dx, dx_want);

      const auto inb = to_bf16(inp), dyb = to_bf16(dy);
      const Vec inr = from_bf16(inb), dyr = from_bf16(dyb);
      std::vector<__nv_bfloat16> outb(nf), dxb(2 * nf);
      REQUIRE(cu::swiglu_forward(outb.data(), inb.data(), N, F, kStream) == cudaSuccess);
      cpu().swiglu_forward(want.data(), inr.data(), N, F);
      check_close("swiglu_forward bf16", from_bf16(outb), want, kBf16Rtol, kBf16Atol);
      REQUIRE(cu::swiglu_backward(dxb.data(), inb.data(), dyb.data(), N, F, kStream) ==
              cudaSuccess);
      cpu().swiglu_backward(dx_want.data(), inr.data(), dyr.data(), N, F);
      check_close("swiglu_backward bf16", from_bf16(dxb), dx_want, kBf16Rtol, kBf16Atol);
    }
  }
  CHECK(cu::swiglu_forward(static_cast<float*>(nullptr), nullptr, 1, 0, kStream) == cudaErrorInvalidValue);
}

TEST_CASE("layernorm forward/backward (fp32, accumulating gradients)", "[layernorm]") {
  for (int N : {1, 7, 10}) {
    for (int C : {1, 31, 33, 100, 300}) {
      for (bool with_bias : {true, false}) {
        INFO("N = " << N << ", C = " << C << ", bias " << with_bias);
        const size_t nc = size_t(N) * C;
        const uint32_t s = uint32_t(nc * 2 + with_bias);
        const Vec x = random_vec(nc, s, -3.0f, 5.0f);  // off-centre: mean != 0
        const Vec w = random_vec(C, s + 1, 0.5f, 1.5f);
        const Vec b = random_vec(C, s + 2);
        const float* bias = with_bias ? b.data() : nullptr;
        Vec out(nc), mean(N), rstd(N), out_w(nc), mean_w(N), rstd_w(N);
        REQUIRE(cu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                      bias, N, C, 1e-5f, kStream) == cudaSuccess);
        cpu().layernorm_forward(out_w.data(), mean_w.data(), rstd_w.data(), x.data(), w.data(),
                                bias, N, C, 1e-5f);
        check_close("layernorm_forward out", out, out_w);
        check_close("layernorm_forward mean", mean, mean_w);
        check_close("layernorm_forward rstd", rstd, rstd_w);

        // Gradients accumulate: start from non-zero buffers.
        const Vec dy = random_vec(nc, s + 3);
        Vec dx = random_vec(nc, s + 4), dw = random_vec(C, s + 5), db = random_vec(C, s + 6);
        Vec dx_w = dx, dw_w = dw, db_w = db;
        float* dbias = with_bias ? db.data() : nullptr;
        float* dbias_w = with_bias ? db_w.data() : nullptr;
        REQUIRE(cu::layernorm_backward(dx.data(), dw.data(), dbias, dy.data(), x.data(), w.data(),
                                       mean_w.data(), rstd_w.data(), N, C, kStream) ==
                cudaSuccess);
        cpu().layernorm_backward(dx_w.data(), dw_w.data(), dbias_w, dy.data(), x.data(), w.data(),
                                 mean_w.data(), rstd_w.data(), N, C);
        // dinp is rstd times a difference of O(1) terms: with a tiny variance (C = 1: rstd =
        // 1/sqrt(eps) ~ 316) the references' own rounding (FMA contraction on the CPU) is
        // amplified by rstd, so the absolute tolerance scales with it.
        const float rstd_max = *std::max_element(rstd_w.begin(), rstd_w.end());
        check_close("layernorm_backward dinp", dx, dx_w, 1e-5f, 3e-6f * std::max(1.0f, rstd_max));
        check_close("layernorm_backward dweight", dw, dw_w, 1e-5f, 1e-5f);
        check_close("layernorm_backward dbias", db, db_w, 1e-5f, 1e-5f);
      }
    }
  }
}

TEST_CASE("rmsnorm forward/backward (fp32, accumulating gradients)", "[rmsnorm]") {
  for (int N : {1, 7, 10}) {
    for (int C : {1, 31, 33, 100, 300}) {
      INFO("N = " << N << ", C = " << C);
      const size_t nc = size_t(N) * C;
      const uint32_t s = uint32_t(nc * 3);
      const Vec x = random_vec(nc, s);
      const Vec w = random_vec(C, s + 1, 0.5f, 1.5f);
      Vec out(nc), rstd(N), out_w(nc), rstd_w(N);
      REQUIRE(cu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f,
                                  kStream) == cudaSuccess);
      cpu().rmsnorm_forward(out_w.data(), rstd_w.data(), x.data(), w.data(), N, C, 1e-5f);
      check_close("rmsnorm_forward out", out, out_w);
      check_close("rmsnorm_forward rstd", rstd, rstd_w);

      const Vec dy = random_vec(nc, s + 2);
      Vec dx = random_vec(nc, s + 3), dw = random_vec(C, s + 4);
      Vec dx_w = dx, dw_w = dw;
      REQUIRE(cu::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(),
                                   rstd_w.data(), N, C, kStream) == cudaSuccess);
      cpu().rmsnorm_backward(dx_w.data(), dw_w.data(), dy.data(), x.data(), w.data(),
                             rstd_w.data(), N, C);
      check_close("rmsnorm_backward dinp", dx, dx_w, 1e-5f, 1e-5f);
      check_close("rmsnorm_backward dweight", dw, dw_w, 1e-5f, 1e-5f);
    }
  }
}

TEST_CASE("rope (half-split, row stride, inverse)", "[rope]") {
  struct Shape {
    int B, T, nh, D, pad;
  };
  for (const Shape& sh : {Shape{1, 1, 1, 2, 0}, Shape{1, 7, 3, 6, 0}, Shape{2, 7, 3, 6, 5},
                          Shape{2, 5, 2, 64, 3}, Shape{1, 300, 1, 8, 1}}) {
    for (bool inverse : {false, true}) {
      INFO("B " << sh.B << " T " << sh.T << " nh " << sh.nh << " D " << sh.D << " row_stride "
                << sh.nh * sh.D + sh.pad << " inverse " << inverse);
      const int row_stride = sh.nh * sh.D + sh.pad;
      const float theta = 10000.0f;
      Vec table(size_t(sh.T) * sh.D);
      REQUIRE(cu::rope_table(table.data(), sh.T, sh.D, theta, kStream) == cudaSuccess);
      const Vec x0 = random_vec(size_t(sh.B) * sh.T * row_stride, uint32_t(sh.T * sh.D + inverse));
      Vec x = x0, want = x0;
      REQUIRE(cu::rope(x.data(), table.data(), sh.B, sh.T, sh.nh, sh.D, row_stride, inverse,
                       kStream) == cudaSuccess);
      cpu().rope(want.data(), sh.B, sh.T, sh.nh, sh.D, row_stride, theta, inverse);
      check_close("rope", x, want);  // the padding between rows stays untouched too
      REQUIRE(cu::rope(x.data(), table.data(), sh.B, sh.T, sh.nh, sh.D, row_stride, !inverse,
                       kStream) == cudaSuccess);
      check_close("rope round trip", x, x0, 1e-5f, 1e-5f);
    }
  }
  CHECK(cu::rope(static_cast<float*>(nullptr), nullptr, 1, 1, 1, 3, 3, false, kStream) == cudaErrorInvalidValue);
  CHECK(cu::rope(static_cast<float*>(nullptr), nullptr, 1, 1, 2, 4, 7, false, kStream) == cudaErrorInvalidValue);
  CHECK(cu::rope_table(nullptr, 4, 4, 0.0f, kStream) == cudaErrorInvalidValue);
}

TEST_CASE("embedding forward/backward (negative tokens, repeats)", "[embedding]") {
  const int V = 11;
  for (int N : {1, 7, 20}) {
    for (int T : {1, 3, 7}) {
      for (int C : {1, 31, 33, 100}) {
        for (bool with_wpe : {true, false}) {
          INFO("N " << N << " T " << T << " C " << C << " wpe " << with_wpe);
          std::vector<int32_t> tokens(N);
          std::mt19937 rng(uint32_t(N * 1000 + T * 100 + C));
          std::uniform_int_distribution<int> tok(-2, 4);  // repeats, and ~2/7 negative
          for (auto& t : tokens) t = tok(rng) < 0 ? -1 : int32_t(tok(rng) + 5) % V;
          const Vec wte = random_vec(size_t(V) * C, uint32_t(C + 1));
          const Vec wpe = random_vec(size_t(T) * C, uint32_t(C + 2));
          const float* pe = with_wpe ? wpe.data() : nullptr;
          Vec out(size_t(N) * C, 7.0f), want(size_t(N) * C, -7.0f);
          REQUIRE(cu::embedding_forward(out.data(), tokens.data(), wte.data(), pe, N, T, C,
                                        kStream) == cudaSuccess);
          cpu().embedding_forward(want.data(), tokens.data(), wte.data(), pe, N, T, C);
          check_equal("embedding_forward", out, want);

          const Vec dy = random_vec(size_t(N) * C, uint32_t(N + C));
          Vec dwte = random_vec(size_t(V) * C, 5), dwpe = random_vec(size_t(T) * C, 6);
          Vec dwte_w = dwte, dwpe_w = dwpe;
          float* dpe = with_wpe ? dwpe.data() : nullptr;
          float* dpe_w = with_wpe ? dwpe_w.data() : nullptr;
          REQUIRE(cu::embedding_backward(dwte.data(), dpe, dy.data(), tokens.data(), N, T, C,
                                         kStream) == cudaSuccess);
          cpu().embedding_backward(dwte_w.data(), dpe_w, dy.data(), tokens.data(), N, T, C);
          check_close("embedding_backward dwte (atomicAdd order)", dwte, dwte_w, 1e-5f, 1e-6f);
          check_equal("embedding_backward dwpe (deterministic)", dwpe, dwpe_w);
        }
      }
    }
  }
}

TEST_CASE("adamw update", "[adamw]") {
  for (size_t n : {size_t(1), size_t(7), size_t(100), size_t(1000)}) {
    for (int step : {1, 10}) {
      INFO("n = " << n << ", step " << step);
      Vec p = random_vec(n, uint32_t(n)), m = random_vec(n, uint32_t(n + 1), -0.1f, 0.1f);
      Vec v = random_vec(n, uint32_t(n + 2), 0.0f, 0.01f);
      const Vec g = random_vec(n, uint32_t(n + 3));
      Vec p_w = p, m_w = m, v_w = v;
      for (int s = step; s < step + 3; ++s) {  // three consecutive steps
        REQUIRE(cu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, 3e-3f, 0.9f, 0.95f,
                                 1e-8f, 0.1f, s, 0.5f, kStream) == cudaSuccess);
        cpu().adamw_update(p_w.data(), g.data(), m_w.data(), v_w.data(), n, 3e-3f, 0.9f, 0.95f,
                           1e-8f, 0.1f, s, 0.5f);
      }
      check_close("adamw param", p, p_w);
      check_close("adamw m", m, m_w);
      check_close("adamw v", v, v_w);
    }
  }
  CHECK(cu::adamw_update(nullptr, nullptr, nullptr, nullptr, 1, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f,
                         0, 1.0f, kStream) == cudaErrorInvalidValue);
}

TEST_CASE("adamw fused over segments", "[adamw]") {
  // Five tensors of awkward sizes, laid out as a model's flat buffer, with decay on some; the
  // moments of a ZeRO-1-like owned part start at 0 while the parameters start at an offset.
  struct Seg {
    size_t offset, count;
    bool decay;
  };
  const std::vector<Seg> segs = {{3, 1, false}, {4, 100, true}, {104, 7, false}, {111, 64, true}, {175, 33, true}};
  const size_t n = 208, moment_base = 3;
  for (size_t max_chunk : {size_t(1), size_t(7), size_t(32), cu::kAdamwChunkElements}) {
    INFO("max_chunk = " << max_chunk);
    std::vector<cu::AdamwChunk> chunks;
    for (const Seg& s : segs) cu::append_adamw_chunks(chunks, s.offset, s.offset - moment_base, s.count, s.decay, max_chunk);
    size_t covered = 0;
    for (const cu::AdamwChunk& c : chunks) {
      REQUIRE(c.count >= 1);
      REQUIRE(c.count <= max_chunk);
      covered += c.count;
    }
    REQUIRE(covered == n - moment_base);
    Vec p = random_vec(n, 1), m = random_vec(n - moment_base, 2, -0.1f, 0.1f);
    Vec v = random_vec(n - moment_base, 3, 0.0f, 0.01f);
    const Vec g = random_vec(n, 4);
    Vec p_w = p, m_w = m, v_w = v;
    for (int step = 1; step <= 3; ++step) {
      REQUIRE(cu::adamw_update_chunks(p.data(), g.data(), m.data(), v.data(), chunks.data(), int(chunks.size()), 3e-3f,
                                      0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f, kStream) == cudaSuccess);
      for (const Seg& s : segs)
        cpu().adamw_update(p_w.data() + s.offset, g.data() + s.offset, m_w.data() + s.offset - moment_base,
                           v_w.data() + s.offset - moment_base, s.count, 3e-3f, 0.9f, 0.95f, 1e-8f,
                           s.decay ? 0.1f : 0.0f, step, 0.5f);
    }
    check_close("fused adamw param", p, p_w);
    check_close("fused adamw m", m, m_w);
    check_close("fused adamw v", v, v_w);
    for (size_t i = 0; i < moment_base; ++i) REQUIRE(p[i] == random_vec(n, 1)[i]);  // outside every segment
  }
  // A segment longer than AdamwChunk::count can hold, with no size limit asked: cut at 2^32 - 1
  // (the table only: nothing of that size is allocated).
  std::vector<cu::AdamwChunk> huge;
  const size_t big = (size_t(1) << 33) + 5;
  cu::append_adamw_chunks(huge, 10, 0, big, true, SIZE_MAX);
  REQUIRE(huge.size() == 3);
  CHECK(huge[0].count == 0xffffffffu);
  CHECK(huge[1].param_offset == 10 + size_t(0xffffffffu));
  CHECK(size_t(huge[0].count) + huge[1].count + huge[2].count == big);
  const cu::AdamwChunk one{0, 0, 1, 0};
  float x = 1.0f;
  CHECK(cu::adamw_update_chunks(&x, &x, &x, &x, &one, 1, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 0, 1.0f, kStream) ==
        cudaErrorInvalidValue);
  CHECK(cu::adamw_update_chunks(&x, &x, &x, &x, nullptr, 1, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1, 1.0f, kStream) ==
        cudaErrorInvalidValue);
  CHECK(cu::adamw_update_chunks(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1,
                                1.0f, kStream) == cudaSuccess);
}

namespace {
// Round to nearest even by the arithmetic definition (not bit tricks), for finite values.
float reference_bf16(float f) {
  if (std::isnan(f) || std::isinf(f) || f == 0.0f) return f;
  int e;
  std::frexp(f, &e);  // f = m 2^e, 0.5 <= |m| < 1
  const double ulp = std::ldexp(1.0, std::max(e, -125) - 8);  // 8 significant bits (subnormals too)
  const double q = double(f) / ulp;
  double r = std::nearbyint(q);  // default rounding mode: ties to even
  const double out = r * ulp;
  return std::fabs(out) > double(std::numeric_limits<float>::max())
             ? std::copysign(std::numeric_limits<float>::infinity(), f)
             : float(out);
}
}  // namespace

TEST_CASE("cast fp32 <-> bf16", "[cast]") {
  Vec x = random_vec(997, 77, -1e3f, 1e3f);
  const float specials[] = {0.0f, -0.0f, 1.0f, 1.00390625f /* tie, down to even */,
                            1.01171875f /* tie, up to even */, -1.00390625f,
                            std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::denorm_min(), 1e-40f, 3.0e38f,
                            std::numeric_limits<float>::quiet_NaN()};
  for (float s : specials) x.push_back(s);
  std::mt19937 rng(3);  // random bit patterns: every exponent, including subnormals
  for (int i = 0; i < 4000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
  }
  const size_t n = x.size();
  std::vector<__nv_bfloat16> b(n);
  Vec back(n);
  REQUIRE(cu::cast_f32_to_bf16(b.data(), x.data(), n, kStream) == cudaSuccess);
  REQUIRE(cu::cast_bf16_to_f32(back.data(), b.data(), n, kStream) == cudaSuccess);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float want = reference_bf16(x[i]);
    const bool ok = std::isnan(x[i]) ? std::isnan(back[i])
                                     : std::memcmp(&want, &back[i], 4) == 0;
    if (!ok && bad++ < 5)
      UNSCOPED_INFO("x = " << x[i] << ": got " << back[i] << ", want " << want);
#if NURI_HAVE_CUDA_BF16
    uint16_t mine;
    std::memcpy(&mine, &b[i], 2);
    const uint16_t cuda = cuda_host_float2bfloat16_rn_bits(x[i]);
    const bool both_nan = std::isnan(x[i]) && (cuda & 0x7fff) > 0x7f80 && (mine & 0x7fff) > 0x7f80;
    if (!both_nan && mine != cuda && bad++ < 5)
      UNSCOPED_INFO("x = " << x[i] << ": bits " << mine << ", cuda_bf16.h gives " << cuda);
#endif
  }
  CHECK(bad == 0);
}

TEST_CASE("attention forward/backward (causal, GQA, fp32)", "[attention]") {
  // fp32 sums in another order and expf vs the CPU's polynomial exp: 1e-4 relative, and an
  // absolute floor for gradients that are sums of terms of both signs.
  struct Shape {
    int B, T, H, KV, D;
  };
  float worst_rel = 0.0f, worst_abs = 0.0f;  // relative: over |want| >= 1e-2
  for (const Shape& sh : {Shape{1, 1, 4, 2, 8}, Shape{2, 7, 4, 2, 8}, Shape{1, 33, 4, 4, 8},
                          Shape{1, 70, 4, 1, 8}, Shape{1, 1, 4, 4, 64}, Shape{2, 7, 4, 4, 64},
                          Shape{1, 33, 4, 2, 64}, Shape{1, 17, 2, 1, 128}, Shape{1, 9, 3, 1, 5}}) {
    const auto [B, T, H, KV, D] = sh;
    INFO("B " << B << " T " << T << " H " << H << " KV " << KV << " D " << D);
    const size_t R = size_t(H + 2 * KV) * D;
    const size_t nqkv = size_t(B) * T * R, nout = size_t(B) * T * H * D, nlse = size_t(B) * H * T;
    const uint32_t s = uint32_t(B * 1000 + T * 10 + D + KV);
    const Vec qkv = random_vec(nqkv, s, -1.5f, 1.5f);
    Vec out(nout, 9.0f), lse(nlse, 9.0f), out_w(nout), lse_w(nlse);
    REQUIRE(cu::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, KV, D, kStream) ==
            cudaSuccess);
    cpu().attention_forward(out_w.data(), lse_w.data(), qkv.data(), B, T, H, KV, D);
    check_close("attention_forward out", out, out_w, 1e-4f, 1e-5f);
    check_close("attention_forward lse", lse, lse_w, 1e-4f, 1e-5f);

    const Vec dout = random_vec(nout, s + 1);
    Vec dqkv(nqkv, 7.0f), dqkv_w(nqkv, -7.0f);  // overwritten, not accumulated
    REQUIRE(cu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out_w.data(),
                                   lse_w.data(), B, T, H, KV, D, kStream) == cudaSuccess);
    cpu().attention_backward(dqkv_w.data(), dout.data(), qkv.data(), out_w.data(), lse_w.data(), B,
                             T, H, KV, D);
    check_close("attention_backward dqkv", dqkv, dqkv_w, 1e-4f, 1e-5f);
    auto track = [&](const Vec& got, const Vec& want) {
      for (size_t i = 0; i < got.size(); ++i) {
        const float diff = std::fabs(got[i] - want[i]);
        worst_abs = std::max(worst_abs, diff);
        if (std::fabs(want[i]) >= 1e-2f) worst_rel = std::max(worst_rel, diff / std::fabs(want[i]));
      }
    };
    track(out, out_w);
    track(lse, lse_w);
    track(dqkv, dqkv_w);
  }
  std::cout << "attention: vs the CPU backend, worst relative difference " << worst_rel
            << " (|want| >= 1e-2), worst absolute " << worst_abs << '\n';
  CHECK(cu::attention_forward(nullptr, nullptr, nullptr, 1, 4, 4, 3, 8, kStream) ==
        cudaErrorInvalidValue);  // H % KV != 0
  CHECK(cu::attention_forward(nullptr, nullptr, nullptr, 1, 4, 4, 2, 129, kStream) ==
        cudaErrorInvalidValue);  // D > 128
  CHECK(cu::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 4, 2, 0,
                               kStream) == cudaErrorInvalidValue);
  CHECK(cu::attention_forward(nullptr, nullptr, nullptr, 0, 4, 4, 2, 8, kStream) == cudaSuccess);
}

// ---- coverage: every kernel in kernels/cuda/*.cu was launched above ----

TEST_CASE("coverage: every __global__ kernel of kernels/cuda/*.cu is tested", "[coverage]") {
  namespace fs = std::filesystem;
  // The environment may point elsewhere (to check that an untested kernel makes this fail).
  const char* override_dir = std::getenv("NURI_CUDA_KERNELS_DIR");
  const fs::path dir = override_dir ? override_dir : NURI_CUDA_KERNELS_DIR;
  REQUIRE(fs::is_directory(dir));
  const std::set<std::string>& launched = emu::launched_kernels();
  const std::regex global_re(R"(__global__\s+void\s+(\w+)\s*\()");
  std::map<std::string, std::vector<std::string>> by_file;
  std::vector<std::string> missing;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".cu") continue;
    std::ifstream in(entry.path());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    auto& kernels = by_file[entry.path().filename().string()];
    for (std::sregex_iterator it(text.begin(), text.end(), global_re), end; it != end; ++it) {
      const std::string name = (*it)[1];
      if (std::find(kernels.begin(), kernels.end(), name) != kernels.end()) continue;
      kernels.push_back(name);
      if (!launched.count(name)) missing.push_back(entry.path().filename().string() + ": " + name);
    }
    if (kernels.empty()) missing.push_back(entry.path().filename().string() + ": no __global__ kernel found");
  }
  std::cout << "cuda_emu: kernels covered (launched under the emulator and checked):\n";
  for (const auto& [file, kernels] : by_file) {
    std::cout << "  " << file << ":";
    for (const auto& k : kernels) std::cout << ' ' << k << (launched.count(k) ? "" : " (NOT COVERED)");
    std::cout << '\n';
  }
  std::cout << "cuda_emu: " << by_file.size() << " .cu files in " << dir.string() << std::endl;
  CHECK(!by_file.empty());
  for (const auto& m : missing) UNSCOPED_INFO("not covered: " << m);
  CHECK(missing.empty());
}

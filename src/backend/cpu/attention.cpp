// Causal scaled-dot-product attention with grouped-query heads, flash-style on the CPU: query
// rows are processed in blocks of BR, and only a (BR, T) score block is ever materialized.
//   qkv (B,T,(H+2KV)*D), each row = [q heads | k heads | v heads], row stride R = (H+2KV)*D.
//   Query head h reads kv head h / (H/KV). scale = 1/sqrt(D).
//   forward, per (b, h) and row block i0..i0+rows, with ncols = i0 + rows (causality: no row of
//   the block looks past column ncols-1):
//     S (rows, ncols) = scale Q_blk K[0:ncols]^T;  S_ij = -inf for j > i
//     P = softmax_row(S);  lse_i = max_i + log(sum_j e^{S_ij - max_i})
//     out_blk (rows, D) = P V[0:ncols]
//   backward, per (b, kv head) and for each query head h of the group and each row block:
//     P = exp(S - lse) (recomputed);  dP = dO_blk V^T;  Drow_i = sum_d dO_id O_id
//     dS = P (dP - Drow);  dQ_blk = scale dS K   (overwritten)
//     dK[0:ncols] += scale dS^T Q_blk;  dV[0:ncols] += P^T dO_blk
// All products are cpu::sgemm on strided views of qkv/out (no copies). Threading: OpenMP over
// (b, h) jobs in the forward and (b, kv head) jobs in the backward, so the dK/dV of a kv head
// are only ever written by one thread; inside the parallel region the GEMM runs single-threaded
// on the calling thread. Scratch: (BR, T) floats per thread in the forward, two in the backward.
// The masked entries of P are written as exact zeros rather than exponentiated.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#include "backend/cpu/exp_poly.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {

constexpr int BR = 64;  // query rows per block

void check_attention_shape(const char* op, int B, int T, int H, int KV, int D) {
  NURI_CHECK(B >= 0 && T >= 0 && H > 0 && KV > 0 && D > 0, shape, op,
             "bad sizes B=" << B << " T=" << T << " H=" << H << " KV=" << KV << " D=" << D);
  NURI_CHECK(H % KV == 0, shape, op,
             "query heads H=" << H << " must be a multiple of key/value heads KV=" << KV);
}

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                                   int KV, int D) {
  check_attention_shape("attention_forward", B, T, H, KV, D);
  const size_t R = size_t(H + 2 * KV) * D;  // qkv row stride
  const size_t OS = size_t(H) * D;          // out row stride
  const int group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const int jobs = B * H;
#pragma omp parallel if (jobs > 1)
  {
    std::vector<float> scratch(size_t(BR) * T);
    float* S = scratch.data();  // (BR, T), row stride T
#pragma omp for schedule(static)
    for (int job = 0; job < jobs; ++job) {
      const int b = job / H, h = job % H, kvh = h / group;
      const float* Q = qkv + size_t(b) * T * R + size_t(h) * D;
      const float* K = qkv + size_t(b) * T * R + size_t(H + kvh) * D;
      const float* V = qkv + size_t(b) * T * R + size_t(H + KV + kvh) * D;
      float* O = out + size_t(b) * T * OS + size_t(h) * D;
      float* L = lse + (size_t(b) * H + h) * T;
      for (int i0 = 0; i0 < T; i0 += BR) {
        const int rows = std::min(BR, T - i0), ncols = i0 + rows;
        // S (rows, ncols) = scale Q[i0:i0+rows] K[0:ncols]^T
        cpu::sgemm(false, true, rows, ncols, D, scale,
                    Q + size_t(i0) * R, int(R), K, int(R), 0.0f, S, T);
        for (int r = 0; r < rows; ++r) {
          const int i = i0 + r;
          float* __restrict s = S + size_t(r) * T;
          float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
          for (int j = 0; j <= i; ++j) mx = std::max(mx, s[j]);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int j = 0; j <= i; ++j) {
            const float e = exp_poly(s[j] - mx);
            s[j] = e;
            sum += e;
          }
          const float inv = 1.0f / sum;
#pragma omp simd
          for (int j = 0; j <= i; ++j) s[j] *= inv;
          for (int j = i + 1; j < ncols; ++j) s[j] = 0.0f;  // causal mask
          L[i] = mx + std::log(sum);
        }
        // out[i0:i0+rows] (rows, D) = P (rows, ncols) V[0:ncols] (ncols, D)
        cpu::sgemm(false, false, rows, D, ncols, 1.0f, S, T, V,
                    int(R), 0.0f, O + size_t(i0) * OS, int(OS));
      }
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                    const float* out, const float* lse, int B, int T, int H,
                                    int KV, int D) {
  check_attention_shape("attention_backward", B, T, H, KV, D);
  const size_t R = size_t(H + 2 * KV) * D;
  const size_t OS = size_t(H) * D;
  const int group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const int jobs = B * KV;
#pragma omp parallel if (jobs > 1)
  {
    std::vector<float> scratch(2 * size_t(BR) * T);
    float* P = scratch.data();       // (BR, T)
    float* dS = P + size_t(BR) * T;  // (BR, T): dP, then dS in place
#pragma omp for schedule(static)
    for (int job = 0; job < jobs; ++job) {
      const int b = job / KV, kvh = job % KV;
      const float* K = qkv + size_t(b) * T * R + size_t(H + kvh) * D;
      const float* V = qkv + size_t(b) * T * R + size_t(H + KV + kvh) * D;
      float* dK = dqkv + size_t(b) * T * R + size_t(H + kvh) * D;
      float* dV = dqkv + size_t(b) * T * R + size_t(H + KV + kvh) * D;
      // dK and dV are sums over the group's heads and row blocks: start them at zero.
      for (int t = 0; t < T; ++t) {
        std::fill_n(dK + size_t(t) * R, D, 0.0f);
        std::fill_n(dV + size_t(t) * R, D, 0.0f);
      }
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* Q = qkv + size_t(b) * T * R + size_t(h) * D;
        float* dQ = dqkv + size_t(b) * T * R + size_t(h) * D;
        const float* O = out + size_t(b) * T * OS + size_t(h) * D;
        const float* dO = dout + size_t(b) * T * OS + size_t(h) * D;
        const float* L = lse + (size_t(b) * H + h) * T;
        for (int i0 = 0; i0 < T; i0 += BR) {
          const int rows = std::min(BR, T - i0), ncols = i0 + rows;
          // S = scale Q_blk K^T, then P = exp(S - lse) (zero above the diagonal)
          cpu::sgemm(false, true, rows, ncols, D, scale,
                      Q + size_t(i0) * R, int(R), K, int(R), 0.0f, P, T);
          // dP (rows, ncols) = dO_blk (rows, D) V[0:ncols]^T
          cpu::sgemm(false, true, rows, ncols, D, 1.0f,
                      dO + size_t(i0) * OS, int(OS), V, int(R), 0.0f, dS, T);
          for (int r = 0; r < rows; ++r) {
            const int i = i0 + r;
            const float* __restrict o = O + size_t(i) * OS;
            const float* __restrict dy = dO + size_t(i) * OS;
            float drow = 0.0f;  // Drow_i = sum_d dO_id O_id
#pragma omp simd reduction(+ : drow)
            for (int d = 0; d < D; ++d) drow += dy[d] * o[d];
            float* __restrict p = P + size_t(r) * T;
            float* __restrict ds = dS + size_t(r) * T;
            const float li = L[i];
#pragma omp simd
            for (int j = 0; j <= i; ++j) {
              const float pj = exp_poly(p[j] - li);
              p[j] = pj;
              ds[j] = pj * (ds[j] - drow);
            }
            for (int j = i + 1; j < ncols; ++j) {
              p[j] = 0.0f;
              ds[j] = 0.0f;
            }
          }
          // dQ_blk (rows, D) = scale dS (rows, ncols) K[0:ncols] (ncols, D)
          cpu::sgemm(false, false, rows, D, ncols, scale, dS, T, K,
                      int(R), 0.0f, dQ + size_t(i0) * R, int(R));
          // dK[0:ncols] (ncols, D) += scale dS^T (ncols, rows) Q_blk (rows, D)
          cpu::sgemm(true, false, ncols, D, rows, scale, dS, T,
                      Q + size_t(i0) * R, int(R), 1.0f, dK, int(R));
          // dV[0:ncols] (ncols, D) += P^T (ncols, rows) dO_blk (rows, D)
          cpu::sgemm(true, false, ncols, D, rows, 1.0f, P, T,
                      dO + size_t(i0) * OS, int(OS), 1.0f, dV, int(R));
        }
      }
    }
  }
}

}  // namespace nuri

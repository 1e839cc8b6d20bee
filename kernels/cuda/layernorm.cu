// LayerNorm over the last dimension; the twin of src/backend/cpu/layernorm.cpp:
//   forward:  mean = sum_c x / C;  rstd = 1/sqrt(sum_c (x - mean)^2 / C + eps)   (biased variance,
//             two passes over the row: no E[x^2] - E[x]^2 cancellation)
//             out (N,C) = (x - mean) rstd w + b        (b may be null)
//   backward: g = dout w;  dinp (N,C) += rstd (g - mean_c(g) - xhat mean_c(g xhat))
//             dw (C) += sum_n dout xhat;  db (C) += sum_n dout
// Layout: row-major (N, C); mean, rstd (N); weight, bias (C). All fp32, except that the forward
// may write out in bf16 (the fp32 value rounded once, to nearest even).
// Launch:
//   forward, backward_input: one block of 128 threads (4 warps) per row, grid N; threads stride
//     over the row; row sums by warp shuffles, then one float per warp in shared memory
//     (block_reduce_sum, common.cuh). Any C > 0.
//   backward_params: block (32, 8), grid ceil(C/32): each block owns 32 columns and all N rows,
//     thread (x, y) sums rows y, y+8, ... of column x in order, then thread y = 0 adds the 8
//     partials in order ((8, 33) floats x 2 of shared memory). No atomics: deterministic, and
//     parameter gradients accumulate (+=). Parallelism is C/32 blocks: a large-N row-chunked
//     two-stage reduction (with a workspace) is the follow-up if profiles ask for it.
// Numerics: fp32 throughout; rsqrtf on the GPU is within 2 ulp of 1/sqrtf.
#include "layernorm.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kRowBlock = 128;
constexpr int kParamCols = 32;
constexpr int kParamRows = 8;
}  // namespace

template <typename Out>
__global__ void layernorm_forward_kernel(Out* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int C,
                                         float eps) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  Out* y = out + row * C;
  float sum = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sum += x[c];
  const float m = block_reduce_sum(sum) / C;
  float var = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) var += (x[c] - m) * (x[c] - m);
  const float rs = rsqrtf(block_reduce_sum(var) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = (x[c] - m) * rs * weight[c];
    y[c] = from_float<Out>(bias ? v + bias[c] : v);
  }
  if (threadIdx.x == 0) {
    mean[row] = m;
    rstd[row] = rs;
  }
}

__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, int C) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  float* dx = dinp + row * C;
  const float m = mean[row], rs = rstd[row];
  float g_sum = 0.0f, gx_sum = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xhat = (x[c] - m) * rs;
    const float g = dy[c] * weight[c];
    g_sum += g;
    gx_sum += g * xhat;
  }
  const float g_mean = block_reduce_sum(g_sum) / C;
  const float gx_mean = block_reduce_sum(gx_sum) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xhat = (x[c] - m) * rs;
    dx[c] += rs * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
  }
}

__global__ void layernorm_backward_params_kernel(float* dweight, float* dbias, const float* dout,
                                                 const float* inp, const float* mean,
                                                 const float* rstd, int N, int C) {
  __shared__ float dw_part[kParamRows][kParamCols + 1];
  __shared__ float db_part[kParamRows][kParamCols + 1];
  const int c = int(blockIdx.x) * kParamCols + int(threadIdx.x);
  float dw = 0.0f, db = 0.0f;
  if (c < C) {
    for (int n = threadIdx.y; n < N; n += kParamRows) {
      const float dy = dout[size_t(n) * C + c];
      const float xhat = (inp[size_t(n) * C + c] - mean[n]) * rstd[n];
      dw += dy * xhat;
      db += dy;
    }
  }
  dw_part[threadIdx.y][threadIdx.x] = dw;
  db_part[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sw = 0.0f, sb = 0.0f;
    for (int r = 0; r < kParamRows; ++r) {
      sw += dw_part[r][threadIdx.x];
      sb += db_part[r][threadIdx.x];
    }
    dweight[c] += sw;
    if (dbias) dbias[c] += sb;
  }
}

namespace {
template <typename Out>
cudaError_t launch_layernorm_forward(Out* out, float* mean, float* rstd, const float* inp,
                                     const float* weight, const float* bias, int N, int C,
                                     float eps, cudaStream_t stream) {
  NURI_NVTX_RANGE("layernorm_forward");
  if (N < 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(layernorm_forward_kernel<Out>, unsigned(N), kRowBlock, 0, stream, out, mean, rstd,
              inp, weight, bias, C, eps);
  return cudaGetLastError();
}
}  // namespace

cudaError_t layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C, float eps,
                              cudaStream_t stream) {
  return launch_layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps, stream);
}
cudaError_t layernorm_forward(__nv_bfloat16* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C, float eps,
                              cudaStream_t stream) {
  return launch_layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps, stream);
}

cudaError_t layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, const float* mean,
                               const float* rstd, int N, int C, cudaStream_t stream) {
  NURI_NVTX_RANGE("layernorm_backward");
  if (N < 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(layernorm_backward_input_kernel, unsigned(N), kRowBlock, 0, stream, dinp, dout, inp,
              weight, mean, rstd, C);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  NURI_LAUNCH(layernorm_backward_params_kernel, blocks_for(size_t(C), kParamCols),
              dim3(kParamCols, kParamRows), 0, stream, dweight, dbias, dout, inp, mean, rstd, N,
              C);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

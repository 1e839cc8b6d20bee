// RMSNorm over the last dimension (no mean, no bias); the twin of src/backend/cpu/rmsnorm.cpp:
//   forward:  rstd = 1/sqrt(sum_c x^2 / C + eps);  out (N,C) = x rstd w
//   backward: g = dout w;  dinp (N,C) += rstd g - x rstd^3 sum_c(g x) / C
//             dw (C) += sum_n dout x rstd
// Layout: row-major (N, C); rstd (N); weight (C). All fp32, except that the forward may write out
// in bf16 (the fp32 value rounded once, to nearest even).
// Launch (as layernorm.cu):
//   forward, backward_input: one block of 128 threads (4 warps) per row, grid N; row sums by warp
//     shuffles and one float per warp in shared memory (block_reduce_sum). Any C > 0.
//   backward_params: block (32, 8), grid ceil(C/32); thread (x, y) sums rows y, y+8, ... of
//     column x in order, thread y = 0 adds the 8 partials in order. No atomics: deterministic.
// Numerics: fp32 throughout; rsqrtf on the GPU is within 2 ulp of 1/sqrtf.
#include "rmsnorm.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kRowBlock = 128;
constexpr int kParamCols = 32;
constexpr int kParamRows = 8;
}  // namespace

template <typename Out>
__global__ void rmsnorm_forward_kernel(Out* out, float* rstd, const float* inp,
                                       const float* weight, int C, float eps) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  Out* y = out + row * C;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
  const float rs = rsqrtf(block_reduce_sum(ss) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = from_float<Out>(x[c] * rs * weight[c]);
  if (threadIdx.x == 0) rstd[row] = rs;
}

__global__ void rmsnorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                              const float* weight, const float* rstd, int C) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  float* dx = dinp + row * C;
  const float rs = rstd[row];
  float gx = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) gx += dy[c] * weight[c] * x[c];
  const float k = rs * rs * rs * block_reduce_sum(gx) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dx[c] += rs * dy[c] * weight[c] - k * x[c];
}

__global__ void rmsnorm_backward_params_kernel(float* dweight, const float* dout,
                                               const float* inp, const float* rstd, int N, int C) {
  __shared__ float dw_part[kParamRows][kParamCols + 1];
  const int c = int(blockIdx.x) * kParamCols + int(threadIdx.x);
  float dw = 0.0f;
  if (c < C) {
    for (int n = threadIdx.y; n < N; n += kParamRows)
      dw += dout[size_t(n) * C + c] * inp[size_t(n) * C + c] * rstd[n];
  }
  dw_part[threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float s = 0.0f;
    for (int r = 0; r < kParamRows; ++r) s += dw_part[r][threadIdx.x];
    dweight[c] += s;
  }
}

namespace {
template <typename Out>
cudaError_t launch_rmsnorm_forward(Out* out, float* rstd, const float* inp, const float* weight,
                                   int N, int C, float eps, cudaStream_t stream) {
  NURI_NVTX_RANGE("rmsnorm_forward");
  if (N < 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(rmsnorm_forward_kernel<Out>, unsigned(N), kRowBlock, 0, stream, out, rstd, inp,
              weight, C, eps);
  return cudaGetLastError();
}
}  // namespace

cudaError_t rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N,
                            int C, float eps, cudaStream_t stream) {
  return launch_rmsnorm_forward(out, rstd, inp, weight, N, C, eps, stream);
}
cudaError_t rmsnorm_forward(__nv_bfloat16* out, float* rstd, const float* inp, const float* weight,
                            int N, int C, float eps, cudaStream_t stream) {
  return launch_rmsnorm_forward(out, rstd, inp, weight, N, C, eps, stream);
}

cudaError_t rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                             const float* weight, const float* rstd, int N, int C,
                             cudaStream_t stream) {
  NURI_NVTX_RANGE("rmsnorm_backward");
  if (N < 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(rmsnorm_backward_input_kernel, unsigned(N), kRowBlock, 0, stream, dinp, dout, inp,
              weight, rstd, C);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  NURI_LAUNCH(rmsnorm_backward_params_kernel, blocks_for(size_t(C), kParamCols),
              dim3(kParamCols, kParamRows), 0, stream, dweight, dout, inp, rstd, N, C);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

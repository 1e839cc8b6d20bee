// Token (+ learned position) embedding; the twin of src/backend/cpu/embedding.cpp:
//   forward:  out (N,C) = wte[tokens[n]] (+ wpe[n % T]);  wte (V,C), wpe (T,C) may be null
//   backward: dwte[tokens[n]] += dout[n];  dwpe[n % T] += dout[n]  (dwpe may be null)
// A negative token has no wte row: its output is wpe only (or zero) and it adds no dwte gradient
// (dwpe still gets it): how the vocabulary-parallel embedding skips other ranks' ids.
// Layout: row-major; tokens (N) int32, rows n = b T + t.
// Launch: all three kernels are one thread per element, grid-stride, block 256,
// grid = min(ceil(elements / 256), 65535); no shared memory.
//   forward:      elements (n, c) of out.
//   backward wte: elements (n, c) of dout, atomicAdd into dwte[tokens[n], c]. NOT deterministic:
//                 when a token repeats, the order of its fp32 additions varies from run to run
//                 (results agree with the CPU backend's to rounding, not bit for bit).
//   backward wpe: elements (t, c) of dwpe, t < min(N, T); each thread adds rows t, t+T, ... in
//                 ascending order: deterministic, and the same order as the CPU backend.
// Constraints: tokens < V (V is the caller's; the model checks its inputs).
#include "embedding.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
unsigned grid_for(size_t elements) {
  return stride_blocks(elements, kBlock);
}
}  // namespace

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte,
                                         const float* wpe, int N, int T, int C) {
  const size_t total = size_t(N) * C;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t k = size_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const size_t n = k / C, c = k % C;
    const int32_t token = tokens[n];
    const float p = wpe ? wpe[(n % T) * C + c] : 0.0f;
    out[k] = token >= 0 ? (wpe ? wte[size_t(token) * C + c] + p : wte[size_t(token) * C + c]) : p;
  }
}

__global__ void embedding_backward_wte_kernel(float* dwte, const float* dout,
                                              const int32_t* tokens, int N, int C) {
  const size_t total = size_t(N) * C;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t k = size_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const size_t n = k / C, c = k % C;
    const int32_t token = tokens[n];
    if (token >= 0) atomicAdd(&dwte[size_t(token) * C + c], dout[k]);
  }
}

__global__ void embedding_backward_wpe_kernel(float* dwpe, const float* dout, int N, int T,
                                              int C) {
  const int rows = N < T ? N : T;
  const size_t total = size_t(rows) * C;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t k = size_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const int t = int(k / C);
    const size_t c = k % C;
    float acc = dwpe[k];
    for (int n = t; n < N; n += T) acc += dout[size_t(n) * C + c];
    dwpe[k] = acc;
  }
}

cudaError_t embedding_forward(float* out, const int32_t* tokens, const float* wte,
                              const float* wpe, int N, int T, int C, cudaStream_t stream) {
  NURI_NVTX_RANGE("embedding_forward");
  if (N < 0 || T <= 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(embedding_forward_kernel, grid_for(size_t(N) * C), kBlock, 0, stream, out, tokens,
              wte, wpe, N, T, C);
  return cudaGetLastError();
}

cudaError_t embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                               int N, int T, int C, cudaStream_t stream) {
  NURI_NVTX_RANGE("embedding_backward");
  if (N < 0 || T <= 0 || C <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(embedding_backward_wte_kernel, grid_for(size_t(N) * C), kBlock, 0, stream, dwte,
              dout, tokens, N, C);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || !dwpe) return err;
  const int rows = N < T ? N : T;
  NURI_LAUNCH(embedding_backward_wpe_kernel, grid_for(size_t(rows) * C), kBlock, 0, stream, dwpe,
              dout, N, T, C);
  return cudaGetLastError();
}

}  // namespace nuri::cuda

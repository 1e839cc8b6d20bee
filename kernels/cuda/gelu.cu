// GELU, tanh approximation (GPT-2's "gelu_new"), elementwise; the twin of
// src/backend/cpu/gelu.cpp, same formulas:
//   forward:  out = x / (1 + e^{-2u}),  u = sqrt(2/pi) (x + 0.044715 x^3)
//             (0.5 (1 + tanh u) = sigmoid(2u): one exp, no cancellation near u = 0)
//   backward: s = sigmoid(2u);  dinp = dout (s + 2 x s (1 - s) u'),  u' = sqrt(2/pi)(1 + 3*0.044715 x^2)
// Shapes: flat arrays of n elements, any n. Storage float or bf16 (T); math in fp32, bf16 results
// rounded to nearest even once at the store.
// Launch: grid-stride loop, block 256, grid = min(ceil(n/256), 65535) blocks. No shared memory.
// In place is fine (each element is read before it is written, by the same thread).
#include "gelu.cuh"

namespace nuri::cuda {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr unsigned kBlock = 256;
}  // namespace

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = to_float(inp[i]);
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = from_float<T>(x / (1.0f + expf(-2.0f * u)));
  }
}

template <typename In, typename G>
__global__ void gelu_backward_kernel(G* dinp, const In* inp, const G* dout, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = to_float(inp[i]);
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    const float s = 1.0f / (1.0f + expf(-2.0f * u));
    dinp[i] = from_float<G>(to_float(dout[i]) * (s + 2.0f * x * s * (1.0f - s) * du));
  }
}

namespace {
template <typename T>
cudaError_t launch_gelu_forward(T* out, const T* inp, size_t n, cudaStream_t stream) {
  NURI_NVTX_RANGE("gelu_forward");
  if (n == 0) return cudaSuccess;
  const unsigned grid = stride_blocks(n, kBlock);
  NURI_LAUNCH(gelu_forward_kernel<T>, grid, kBlock, 0, stream, out, inp, n);
  return cudaGetLastError();
}
template <typename In, typename G>
cudaError_t launch_gelu_backward(G* dinp, const In* inp, const G* dout, size_t n,
                                 cudaStream_t stream) {
  NURI_NVTX_RANGE("gelu_backward");
  if (n == 0) return cudaSuccess;
  const unsigned grid = stride_blocks(n, kBlock);
  NURI_LAUNCH((gelu_backward_kernel<In, G>), grid, kBlock, 0, stream, dinp, inp, dout, n);
  return cudaGetLastError();
}
}  // namespace

cudaError_t gelu_forward(float* out, const float* inp, size_t n, cudaStream_t stream) {
  return launch_gelu_forward(out, inp, n, stream);
}
cudaError_t gelu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, size_t n,
                         cudaStream_t stream) {
  return launch_gelu_forward(out, inp, n, stream);
}
cudaError_t gelu_backward(float* dinp, const float* inp, const float* dout, size_t n,
                          cudaStream_t stream) {
  return launch_gelu_backward(dinp, inp, dout, n, stream);
}
cudaError_t gelu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                          const __nv_bfloat16* dout, size_t n, cudaStream_t stream) {
  return launch_gelu_backward(dinp, inp, dout, n, stream);
}
cudaError_t gelu_backward(float* dinp, const __nv_bfloat16* inp, const float* dout, size_t n,
                          cudaStream_t stream) {
  return launch_gelu_backward(dinp, inp, dout, n, stream);
}

}  // namespace nuri::cuda

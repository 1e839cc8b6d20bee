// SwiGLU gate; the twin of src/backend/cpu/swiglu.cpp, same formulas:
//   forward:  out = silu(g) u,  silu(g) = g s,  s = sigmoid(g) = 1 / (1 + e^{-g})
//   backward: dgate = dout u s (1 + g (1 - s));  dup = dout g s
// Shapes: inp/dinp (N, 2F) row-major with each row [gate (F) | up (F)]; out/dout (N, F).
// Storage float or bf16 (T); math in fp32, one rounding per stored bf16 value.
// Launch: one thread per (n, j) of the (N, F) output, grid-stride loop, block 256,
// grid = min(ceil(N F / 256), 65535). No shared memory. Constraints: N >= 0, F > 0.
#include "swiglu.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
}  // namespace

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* inp, int N, int F) {
  const size_t total = size_t(N) * F;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const size_t n = i / F, j = i % F;
    const float g = to_float(inp[n * 2 * F + j]);
    const float u = to_float(inp[n * 2 * F + F + j]);
    out[i] = from_float<T>(g / (1.0f + expf(-g)) * u);
  }
}

template <typename In, typename G>
__global__ void swiglu_backward_kernel(G* dinp, const In* inp, const G* dout, int N, int F) {
  const size_t total = size_t(N) * F;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const size_t n = i / F, j = i % F;
    const float g = to_float(inp[n * 2 * F + j]);
    const float u = to_float(inp[n * 2 * F + F + j]);
    const float dy = to_float(dout[i]);
    const float s = 1.0f / (1.0f + expf(-g));
    dinp[n * 2 * F + j] = from_float<G>(dy * u * s * (1.0f + g * (1.0f - s)));
    dinp[n * 2 * F + F + j] = from_float<G>(dy * g * s);
  }
}

namespace {
unsigned grid_for(int N, int F) {
  return stride_blocks(size_t(N) * F, kBlock);
}
template <typename T>
cudaError_t launch_swiglu_forward(T* out, const T* inp, int N, int F, cudaStream_t stream) {
  NURI_NVTX_RANGE("swiglu_forward");
  if (N < 0 || F <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH(swiglu_forward_kernel<T>, grid_for(N, F), kBlock, 0, stream, out, inp, N, F);
  return cudaGetLastError();
}
template <typename In, typename G>
cudaError_t launch_swiglu_backward(G* dinp, const In* inp, const G* dout, int N, int F,
                                   cudaStream_t stream) {
  NURI_NVTX_RANGE("swiglu_backward");
  if (N < 0 || F <= 0) return cudaErrorInvalidValue;
  if (N == 0) return cudaSuccess;
  NURI_LAUNCH((swiglu_backward_kernel<In, G>), grid_for(N, F), kBlock, 0, stream, dinp, inp, dout,
              N, F);
  return cudaGetLastError();
}
}  // namespace

cudaError_t swiglu_forward(float* out, const float* inp, int N, int F, cudaStream_t stream) {
  return launch_swiglu_forward(out, inp, N, F, stream);
}
cudaError_t swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, int N, int F,
                           cudaStream_t stream) {
  return launch_swiglu_forward(out, inp, N, F, stream);
}
cudaError_t swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F,
                            cudaStream_t stream) {
  return launch_swiglu_backward(dinp, inp, dout, N, F, stream);
}
cudaError_t swiglu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp,
                            const __nv_bfloat16* dout, int N, int F, cudaStream_t stream) {
  return launch_swiglu_backward(dinp, inp, dout, N, F, stream);
}
cudaError_t swiglu_backward(float* dinp, const __nv_bfloat16* inp, const float* dout, int N, int F,
                            cudaStream_t stream) {
  return launch_swiglu_backward(dinp, inp, dout, N, F, stream);
}

}  // namespace nuri::cuda

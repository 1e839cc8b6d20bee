// Rotary position embedding, half-split layout (GPT-NeoX / Hugging Face Llama), in place; the twin
// of src/backend/cpu/rope.cpp:
//   angle(t, i) = t theta^(-2i/D),  i in [0, D/2)
//   (x_i, x_{i+D/2}) -> (x_i cos - x_{i+D/2} sin,  x_i sin + x_{i+D/2} cos);  inverse: sin -> -sin
//   (a rotation is orthogonal, so the inverse is also the backward).
// Layout: x (B, T, nh, D) with consecutive (b, t) rows row_stride floats apart (so q and k can be
// rotated inside a fused qkv row), heads contiguous and D apart. table (T, D/2, 2) = (cos, sin).
// Numerics: the table is computed in double and rounded to float, exactly as the CPU backend
// does, so far positions keep the angle's precision (t theta^(-2i/D) in fp32 loses ~1e-4 rad at
// t ~ 2000). The rotation itself is fp32; x may be stored in bf16 (read widened, each result
// rounded once to nearest even).
// Launch: rope_table_kernel: one thread per (t, i), block 256. rope_kernel: one thread per
// (b, t, h, i) pair, grid-stride, block 256, grid = min(ceil(B T nh D/2 / 256), 65535).
// No shared memory. Constraints: D even, row_stride >= nh D.
#include "rope.cuh"

namespace nuri::cuda {

namespace {
constexpr unsigned kBlock = 256;
}  // namespace

__global__ void rope_table_kernel(float* table, int T, int D, float theta) {
  const int half = D / 2;
  const size_t total = size_t(T) * half;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t k = size_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const int t = int(k / half), i = int(k % half);
    const double inv_freq = pow(double(theta), -2.0 * i / D);
    const double angle = double(t) * inv_freq;
    table[2 * k] = float(cos(angle));
    table[2 * k + 1] = float(sin(angle));
  }
}

template <typename T_>
__global__ void rope_kernel(T_* x, const float* table, int B, int T, int nh, int D,
                            int row_stride, bool inverse) {
  const int half = D / 2;
  const size_t total = size_t(B) * T * nh * half;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const float sin_sign = inverse ? -1.0f : 1.0f;
  for (size_t k = size_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const int i = int(k % half);
    const size_t rh = k / half;  // (b, t, h)
    const int h = int(rh % nh);
    const size_t r = rh / nh;  // (b, t)
    const int t = int(r % T);
    T_* x1 = x + r * row_stride + size_t(h) * D;
    const float c = table[(size_t(t) * half + i) * 2];
    const float sn = sin_sign * table[(size_t(t) * half + i) * 2 + 1];
    const float a = to_float(x1[i]), b = to_float(x1[i + half]);
    x1[i] = from_float<T_>(a * c - b * sn);
    x1[i + half] = from_float<T_>(a * sn + b * c);
  }
}

cudaError_t rope_table(float* table, int T, int D, float theta, cudaStream_t stream) {
  NURI_NVTX_RANGE("rope_table");
  if (T < 0 || D <= 0 || D % 2 != 0 || !(theta > 0.0f)) return cudaErrorInvalidValue;
  if (T == 0) return cudaSuccess;
  const size_t total = size_t(T) * (D / 2);
  NURI_LAUNCH(rope_table_kernel, stride_blocks(total, kBlock), kBlock, 0, stream,
              table, T, D, theta);
  return cudaGetLastError();
}

namespace {
template <typename T_>
cudaError_t launch_rope(T_* x, const float* table, int B, int T, int nh, int D, int row_stride,
                        bool inverse, cudaStream_t stream) {
  NURI_NVTX_RANGE("rope");
  if (B < 0 || T < 0 || nh <= 0 || D <= 0 || D % 2 != 0 || row_stride < nh * D)
    return cudaErrorInvalidValue;
  if (B == 0 || T == 0) return cudaSuccess;
  const size_t total = size_t(B) * T * nh * (D / 2);
  NURI_LAUNCH(rope_kernel<T_>, stride_blocks(total, kBlock), kBlock, 0, stream, x, table,
              B, T, nh, D, row_stride, inverse);
  return cudaGetLastError();
}
}  // namespace

cudaError_t rope(float* x, const float* table, int B, int T, int nh, int D, int row_stride,
                 bool inverse, cudaStream_t stream) {
  return launch_rope(x, table, B, T, nh, D, row_stride, inverse, stream);
}
cudaError_t rope(__nv_bfloat16* x, const float* table, int B, int T, int nh, int D, int row_stride,
                 bool inverse, cudaStream_t stream) {
  return launch_rope(x, table, B, T, nh, D, row_stride, inverse, stream);
}

}  // namespace nuri::cuda

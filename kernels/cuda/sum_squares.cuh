#pragma once
// Sum of squares in double (the global gradient norm): kernels and launcher. See sum_squares.cu.
#include "common.cuh"

namespace nuri::cuda {

// The most blocks the first pass uses, i.e. the size (in doubles) of the `partials` scratch that
// sum_squares needs. Fixed, so the partition of the input (and the result) does not depend on the
// device.
inline constexpr unsigned sum_squares_partials() { return 1024; }

__global__ void sum_squares_partial_kernel(double* partials, const float* x, size_t n);
__global__ void sum_squares_final_kernel(double* out, const double* partials, unsigned count);

// *out = sum_i x[i]^2 (n elements), accumulated in double; out is ONE double in device memory,
// partials device scratch of sum_squares_partials() doubles (may be null when n == 0).
// n == 0 writes 0. Deterministic: bitwise the same result for the same x and n on any device.
// out null, or x / partials null with n > 0: InvalidValue.
cudaError_t sum_squares(double* out, const float* x, size_t n, double* partials,
                        cudaStream_t stream);

}  // namespace nuri::cuda

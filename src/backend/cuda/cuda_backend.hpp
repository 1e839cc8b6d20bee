#pragma once
// The cuda backend: the Backend interface on one NVIDIA GPU, through the kernels of kernels/cuda
// (and cuBLASLt / cuDNN where they are faster: gemm_dispatch.hpp, cudnn_attention.hpp).
//
// Precision: the parameters are fp32 master weights, the AdamW moments, the gradients and the
// residual stream fp32; the matrix products (linear layers, the LM head, attention with D = 64 or
// 128) run on bf16 tensor cores with fp32 accumulation, reading bf16 (the weights from one bf16
// copy made per freeze_weights, 2 bytes per parameter, which stays allocated; fp32 operands cast
// into device scratch). A model's large block activations are bf16 between ops (the bf16_t
// overloads; bf16_matmul_inputs(D) is true where the attention at head dim D runs on bf16 tensor
// cores, so activation_dtype = "auto" chooses them there): the norm, GEMM, RoPE and SwiGLU
// kernels write them and the products, attention and backward kernels read them with no cast,
// except where cuBLASLt runs a product that writes them (fp32 scratch, then one cast) and at head
// dims the bf16 attention does not take (widened into scratch for the fp32 kernels).
// Everything else (softmax, cross-entropy, AdamW, reductions) computes in fp32.
//
// Memory: alloc() returns CUDA managed memory (cudaMallocManaged) from a caching allocator
// (device_allocator.hpp), so the model's host-side reads and writes (initialisation, checkpoints,
// MPI collectives on gradients) stay valid; hot data migrates to the GPU on first use there.
// Token and target arrays are host pointers; each op copies what it needs to device scratch.
//
// Streams and synchronisation: all work goes to one non-blocking stream per backend and ops
// return once it is queued (Backend::synchronize is the wait). The ops that hand data to the
// host wait for themselves: alloc, copy to or from host memory, sum_squares,
// lm_head_cross_entropy. NURI_CUDA_SYNC=1 makes every op wait for its own work (an event), so
// that an asynchronous kernel fault is reported against the op that launched it.
//
// Device: the local rank's GPU (local rank % device count; OMPI_COMM_WORLD_LOCAL_RANK, then
// SLURM_LOCALID, MPI_LOCALRANKID, LOCAL_RANK), or the one given.
//
// Built twice: by the host compiler against the CUDA runtime (libnuri, NURI_WITH_CUDA), and in
// NURI_CUDA_EMU builds against the emulated runtime and kernels (tests/cuda_emu), where the
// namespace nuri::cuda is renamed nuri::cuda_emu (common.cuh) so both can live in one binary.
#include <memory>
#include <string>

#include "common.cuh"
#include "nuri/backend.hpp"

namespace nuri::cuda {

// Creates the cuda backend on `device` (< 0: the local rank's GPU, see above).
// Throws Error(backend) when there is no usable device, naming what was found.
std::unique_ptr<Backend> make_cuda_backend(int device = -1);

// The GPU this process uses when none is given: local rank % devices (0 without a launcher).
int local_rank_device(int device_count);

}  // namespace nuri::cuda

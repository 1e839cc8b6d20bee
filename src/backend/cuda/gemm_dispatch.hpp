#pragma once
// The cuda backend's one bf16 GEMM entry point: per call, our kernel (gemm_bf16, kernels/cuda/
// gemm.cuh) or cuBLASLt (CublasLtGemm), both with the same arguments and meaning.
//
// Which one:
//   1. NURI_GEMM=ours | cublaslt forces it for every shape; NURI_GEMM=auto (or unset) lets
//   2. the autotune table (gemm_table.hpp, written by `bench_gemm_cuda --write-table` on the
//      GPU) decide per (trans_a, trans_b, M, N, K, epilogue); and
//   3. a shape the table does not list goes to cuBLASLt: until a GPU run has filled the table,
//      cuBLASLt is the known-good, known-fast choice (our kernel is checked but not yet tuned).
// Whenever cuBLASLt refuses a call (cudaErrorNotSupported: an epilogue, stride or alignment it
// cannot do, see cublaslt_gemm.cpp) the call runs on our kernel instead; the first time for each
// shape this is logged to stderr, and that shape goes to our kernel directly from then on.
//
// Bound to one stream: cuBLASLt's workspace is shared by all calls of this object, so calls on
// another stream could overlap and corrupt it. Not thread-safe (one per stream, like the stream).
#include <cstdint>
#include <set>
#include <string>
#include <tuple>

#include "backend/cuda/cublaslt_gemm.hpp"
#include "backend/cuda/gemm_table.hpp"

namespace nuri::cuda {

class GemmDispatch {
 public:
  enum class Mode { automatic, ours, cublaslt };  // NURI_GEMM = auto | ours | cublaslt

  // stream: where every product is enqueued. table_path: the autotune table to load; empty ->
  // the environment variable NURI_GEMM_TABLE; neither -> no table (every shape: cuBLASLt).
  // Throws nuri::Error(config) for a NURI_GEMM value other than auto/ours/cublaslt, and the
  // errors of GemmTable::load (a missing or malformed table: a typo must not silently fall back).
  explicit GemmDispatch(cudaStream_t stream, const std::string& table_path = "");

  // gemm_bf16's arguments (gemm.cuh), without the stream: the one given at construction.
  // Returns what the chosen implementation returns (our kernel's status after a fallback).
  cudaError_t run(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const __nv_bfloat16* A,
                  int lda, const __nv_bfloat16* B, int ldb, float beta, float* C, int ldc,
                  const float* bias, GemmEpilogue epilogue, float* pre_gelu);

  // The implementation run() would try first for this shape (before any fallback).
  GemmImpl choose(const GemmShapeKey& key) const;
  // Whether run() would try cuBLASLt for this shape: chosen, and cuBLASLt usable here.
  bool tries_cublaslt(const GemmShapeKey& key) const {
    return choose(key) == GemmImpl::cublaslt && cublaslt_.ok();
  }

  // One line for the start-up log, e.g. "gemm: NURI_GEMM=auto, table /x/h100.tsv (54 shapes,
  // from 'NVIDIA H100 ..., 2026-11-24'), shapes not in it: cuBLASLt".
  std::string describe() const;


 private:
  // A call's shape and what decides whether cuBLASLt can do it (strides, null bias / pre_gelu).
  struct RefusedKey {
    GemmShapeKey shape;
    int lda, ldb, ldc;
    bool has_bias, has_pre_gelu;
    bool operator<(const RefusedKey& o) const {
      return std::tie(shape, lda, ldb, ldc, has_bias, has_pre_gelu) <
             std::tie(o.shape, o.lda, o.ldb, o.ldc, o.has_bias, o.has_pre_gelu);
    }
  };

  cudaStream_t stream_;
  Mode mode_ = Mode::automatic;
  std::string table_path_;  // empty: no table
  GemmTable table_;
  CublasLtGemm cublaslt_;
  std::set<RefusedKey> refused_;  // cuBLASLt said NotSupported: our kernel directly, no more logs
  std::set<GemmShapeKey> logged_;  // shapes whose fallback was already logged
};

// "auto" / "ours" / "cublaslt".
const char* gemm_mode_name(GemmDispatch::Mode mode);

}  // namespace nuri::cuda

// GemmDispatch: our bf16 GEMM or cuBLASLt per shape (gemm_dispatch.hpp).
#include "backend/cuda/gemm_dispatch.hpp"

#include <cstdlib>
#include <sstream>

#include "nuri/error.hpp"
#include "nuri/log.hpp"

namespace nuri::cuda {

namespace {

GemmDispatch::Mode mode_from_env() {
  const char* env = std::getenv("NURI_GEMM");
  const std::string value = env ? env : "";
  if (value.empty() || value == "auto") return GemmDispatch::Mode::automatic;
  if (value == "ours") return GemmDispatch::Mode::ours;
  if (value == "cublaslt") return GemmDispatch::Mode::cublaslt;
  NURI_THROW(config, "gemm", "NURI_GEMM='" << value << "' is not a GEMM choice; use auto (the default: the "
                                                      "autotune table, else cuBLASLt), ours or cublaslt");
}

}  // namespace

const char* gemm_mode_name(GemmDispatch::Mode mode) {
  switch (mode) {
    case GemmDispatch::Mode::automatic: return "auto";
    case GemmDispatch::Mode::ours: return "ours";
    case GemmDispatch::Mode::cublaslt: return "cublaslt";
  }
  return "?";
}

GemmDispatch::GemmDispatch(cudaStream_t stream, const std::string& table_path)
    : stream_(stream), mode_(mode_from_env()), table_path_(table_path) {
  if (table_path_.empty()) {
    const char* env = std::getenv("NURI_GEMM_TABLE");
    if (env) table_path_ = env;
  }
  if (!table_path_.empty()) table_ = GemmTable::load(table_path_);
  if (!cublaslt_.ok() && mode_ != Mode::ours)
    NURI_WARN("gemm: cuBLASLt is unavailable, every GEMM runs on our kernel: " << cublaslt_.last_error());
}

GemmImpl GemmDispatch::choose(const GemmShapeKey& key) const {
  switch (mode_) {
    case Mode::ours: return GemmImpl::ours;
    case Mode::cublaslt: return GemmImpl::cublaslt;
    case Mode::automatic: break;
  }
  if (const auto choice = table_.lookup(key)) return choice->impl;
  // Not in the table: cuBLASLt, the known-good choice until a GPU run has measured this shape.
  return GemmImpl::cublaslt;
}

cudaError_t GemmDispatch::run(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                              const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                              float* C, int ldc, const float* bias, GemmEpilogue epilogue, float* pre_gelu) {
  const GemmShapeKey shape{trans_a, trans_b, M, N, K, gemm_epilogue_name(epilogue)};
  const bool try_cublaslt = choose(shape) == GemmImpl::cublaslt && cublaslt_.ok();
  if (try_cublaslt) {
    const RefusedKey refused_key{shape, lda, ldb, ldc, bias != nullptr, pre_gelu != nullptr};
    if (refused_.count(refused_key) == 0) {
      const cudaError_t e = cublaslt_.run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias,
                                          epilogue, pre_gelu, stream_);
      if (e == cudaSuccess) return e;
      // Refused (or failed before enqueuing anything): our kernel does this call. A refusal is
      // remembered so the next call with this shape goes to our kernel directly.
      if (e == cudaErrorNotSupported) refused_.insert(refused_key);
      if (logged_.insert(shape).second)
        NURI_WARN("gemm: cuBLASLt cannot run this product, using our kernel for it"
                  << (e == cudaErrorNotSupported ? " from now on" : " this time") << ": "
                  << cublaslt_.last_error());
    }
  }
  return gemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, epilogue, pre_gelu,
                   stream_);
}

std::string GemmDispatch::describe() const {
  std::ostringstream s;
  s << "gemm: NURI_GEMM=" << gemm_mode_name(mode_);
  if (mode_ != Mode::automatic) {
    s << " (forced: every shape on " << (mode_ == Mode::ours ? "our kernel" : "cuBLASLt") << ")";
  } else if (table_path_.empty()) {
    s << ", no autotune table (NURI_GEMM_TABLE unset): every shape on cuBLASLt";
  } else {
    s << ", table " << table_path_ << " (" << table_.size() << (table_.size() == 1 ? " shape" : " shapes");
    if (!table_.source().empty()) s << ", from '" << table_.source() << "'";
    s << "), shapes not in it: cuBLASLt";
  }
  if (!cublaslt_.ok()) s << "; cuBLASLt unavailable, our kernel only";
  return s.str();
}

}  // namespace nuri::cuda

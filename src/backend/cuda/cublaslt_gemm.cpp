// cuBLASLt behind gemm_bf16's interface (cublaslt_gemm.hpp).
//
// Row-major to cuBLASLt's column-major. A row-major (r, c) matrix with row stride ld is, read
// column-major, its transpose: a (c, r) matrix with leading dimension ld. So instead of
//   C (M,N) = op(A) op(B)         (row-major)
// cuBLASLt computes
//   C^T (N,M) = op(B)^T op(A)^T   (column-major, ld = ldc; m = N, n = M, k = K)
// with cuBLASLt's "A" = our B's memory and cuBLASLt's "B" = our A's memory:
//   our B, !trans_b: stored (K,N)  = column-major (N,K) = B^T         -> OP_N, layout (N, K, ldb)
//   our B,  trans_b: stored (N,K)  = column-major (K,N) = stored^T    -> OP_T, layout (K, N, ldb)
//   our A, !trans_a: stored (M,K)  = column-major (K,M) = A^T         -> OP_N, layout (K, M, lda)
//   our A,  trans_a: stored (K,M)  = column-major (M,K) = stored^T    -> OP_T, layout (M, K, lda)
// C and D are the same buffer and layout (N, M, ldc), fp32 (in-place: beta reads C first).
// Bias: cuBLASLt broadcasts a bias of D's row count over D's columns; D's rows are our columns,
// so bias[n] is added along N of the row-major C, as gemm_bf16 does. The GELU aux output has D's
// layout: row-major (M,N) with row stride ldc, as gemm.cuh specifies for pre_gelu.
// cuBLASLt's order is D = act(alpha op(A) op(B) + beta C + bias), the aux matrix holding the
// argument of act: the same pre = acc + bias + beta C as our kernel. Its GELU is the tanh
// approximation (what GPT-2 and our kernel use); bench_gemm_cuda checks ours against cuBLASLt on
// the MLP's bias_gelu product, so a difference shows on the first GPU run.
//
// What cuBLASLt cannot do (run() returns cudaErrorNotSupported, never wrong numbers; the caller
// uses our kernel):
//   - K = 0 (gemm.cuh: the epilogue of 0). cuBLASLt's k must be >= 1.
//   - A GELU aux output (bias_gelu with pre_gelu) whose leading dimension ldc is not a multiple
//     of 8 elements (cublasLt.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD), or whose pointer is not
//     16-byte aligned (undocumented; the aux matrix is written with vector stores, so we do not
//     risk it), or pre_gelu that aliases C.
//   - A bias pointer that is not 16-byte aligned (undocumented, seen to fail in practice:
//     marian-nmt's cuBLASLt path checks it the same way).
//   - Sizes or strides beyond int64/uint64 layouts are impossible here (ints), but the heuristic
//     may find no algorithm for a combination (e.g. an odd stride with a fused epilogue, an
//     epilogue with fp32 output it does not implement on this GPU): CUBLAS_STATUS_NOT_SUPPORTED,
//     remembered per plan so the heuristic is asked once.
#include "backend/cuda/cublaslt_gemm.hpp"

#include <sstream>
#include <tuple>

namespace nuri::cuda {

namespace {

// The alignment of p in bytes: the largest power of two dividing its address, at most 256
// (cuBLASLt's default assumption and its largest requirement); 256 for null.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

const char* status_name(cublasStatus_t s) {
  const char* name = cublasLtGetStatusName(s);
  return name ? name : "unknown cublasStatus_t";
}
const char* status_text(cublasStatus_t s) {
  const char* text = cublasLtGetStatusString(s);
  return text ? text : "";
}

// The cudaError_t reported for a failed cuBLASLt call.
cudaError_t to_cuda_error(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return cudaSuccess;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return cudaErrorNotSupported;
    case CUBLAS_STATUS_INVALID_VALUE: return cudaErrorInvalidValue;
    case CUBLAS_STATUS_ALLOC_FAILED: return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_NOT_INITIALIZED: return cudaErrorInitializationError;
    case CUBLAS_STATUS_EXECUTION_FAILED: return cudaErrorLaunchFailure;
    default: return cudaErrorUnknown;
  }
}

}  // namespace

const char* gemm_epilogue_name(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::none: return "none";
    case GemmEpilogue::bias: return "bias";
    case GemmEpilogue::bias_gelu: return "bias_gelu";
  }
  return "?";
}

// The cached descriptors of one Key. Any member may be null while it is being built.
struct CublasLtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr;  // cuBLASLt's A: our B
  cublasLtMatrixLayout_t layout_b = nullptr;  // cuBLASLt's B: our A
  cublasLtMatrixLayout_t layout_c = nullptr;  // C and D: our C
  cublasLtMatmulAlgo_t algo{};
  cudaError_t refused = cudaSuccess;  // != cudaSuccess: cuBLASLt cannot do this key
  std::string refusal;                // why (the message run() reports each time)

  ~Plan() {
    // Destroy functions fail only on a null or foreign descriptor; nothing to report here.
    if (layout_c) cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b) cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a) cublasLtMatrixLayoutDestroy(layout_a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

void CublasLtGemm::PlanDeleter::operator()(Plan* p) const { delete p; }

bool CublasLtGemm::Key::operator<(const Key& o) const {
  return std::tie(trans_a, trans_b, M, N, K, lda, ldb, ldc, lt_epilogue, align_a, align_b, align_c,
                  align_bias, align_aux) <
         std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.lda, o.ldb, o.ldc, o.lt_epilogue, o.align_a,
                  o.align_b, o.align_c, o.align_bias, o.align_aux);
}

CublasLtGemm::CublasLtGemm() {
  const cublasStatus_t s = cublasLtCreate(&handle_);
  if (s != CUBLAS_STATUS_SUCCESS) {
    handle_ = nullptr;
    init_status_ = to_cuda_error(s);
    std::ostringstream msg;
    msg << "cuBLASLt: cublasLtCreate failed: " << status_name(s) << " (" << status_text(s)
        << "); is a CUDA device visible and libcublasLt from the same CUDA as the driver?";
    last_error_ = msg.str();
    return;
  }
  const cudaError_t e = cudaMalloc(&workspace_, kWorkspaceBytes);
  if (e != cudaSuccess) {
    workspace_ = nullptr;
    init_status_ = e;
    std::ostringstream msg;
    msg << "cuBLASLt: cannot allocate its " << (kWorkspaceBytes >> 20) << " MiB workspace: "
        << cudaGetErrorName(e) << " (" << cudaGetErrorString(e) << "); free device memory first";
    last_error_ = msg.str();
  }
}

CublasLtGemm::~CublasLtGemm() {
  plans_.clear();  // descriptors before the handle
  // Errors here cannot be reported (destructor; the device may already be gone): ignored.
  if (workspace_) (void)cudaFree(workspace_);
  if (handle_) (void)cublasLtDestroy(handle_);
}

cudaError_t CublasLtGemm::fail(cudaError_t code, const std::string& message) {
  last_error_ = message;
  return code;
}

// Builds the descriptors of `key` and asks the heuristic for an algorithm. A refusal (no
// algorithm, unsupported attribute) is not an error of this function: it is stored in the plan
// (out->refused) so that the next call with the same key is refused at once. An error that may
// be transient (allocation) returns non-cudaSuccess and stores no plan.
cudaError_t CublasLtGemm::make_plan(const Key& key, const float* bias, float* pre_gelu,
                                    const std::string& what, std::unique_ptr<Plan, PlanDeleter>& out) {
  std::unique_ptr<Plan, PlanDeleter> plan(new Plan);
  // A failed descriptor call: INVALID_VALUE / NOT_SUPPORTED mean this combination is not
  // available in this cuBLASLt (a refusal, cached); anything else is returned as an error.
  auto check = [&](cublasStatus_t s, const char* call) -> bool {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    std::ostringstream msg;
    msg << "cuBLASLt refused " << what << ": " << call << " returned " << status_name(s) << " ("
        << status_text(s) << ")";
    plan->refusal = msg.str();
    plan->refused = (s == CUBLAS_STATUS_INVALID_VALUE || s == CUBLAS_STATUS_NOT_SUPPORTED ||
                     s == CUBLAS_STATUS_ARCH_MISMATCH)
                        ? cudaErrorNotSupported
                        : to_cuda_error(s);
    return false;
  };
  auto finish = [&]() -> cudaError_t {
    if (plan->refused == cudaErrorNotSupported || plan->refused == cudaSuccess) {
      out = std::move(plan);
      return cudaSuccess;
    }
    return fail(plan->refused, plan->refusal + "; not cached, the next call tries again");
  };

  const cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A = our B
  const cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B = our A
  const uint64_t M = uint64_t(key.M), N = uint64_t(key.N), K = uint64_t(key.K);

  if (!check(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate"))
    return finish();
  const int32_t ta = op_a, tb = op_b;
  if (!check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             "set CUBLASLT_MATMUL_DESC_TRANSA") ||
      !check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             "set CUBLASLT_MATMUL_DESC_TRANSB"))
    return finish();
  const uint32_t epilogue = key.lt_epilogue;
  if (!check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
             "set CUBLASLT_MATMUL_DESC_EPILOGUE"))
    return finish();
  const bool has_bias = epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_BIAS ||
                        epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool has_aux = epilogue == CUBLASLT_EPILOGUE_GELU_AUX || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  if (has_bias) {
    // The bias type is left at its default, D's type (fp32), which is what we pass. (Setting
    // CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE is meant for fp8/int8 kernels; cublasLt.h warns that
    // setting it for other combinations may make cublasLtMatmul fail.)
    if (!check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
               "set CUBLASLT_MATMUL_DESC_BIAS_POINTER"))
      return finish();
  }
  if (has_aux) {
    // The aux type is left at its default, D's type (fp32), which is what pre_gelu holds
    // (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE is for fp8 kernels; cublasLt.h: setting it
    // for an unsupported combination makes cublasLtMatmul return INVALID_VALUE).
    const int64_t aux_ld = key.ldc;  // elements; a multiple of 8, >= N (checked in run())
    void* aux = pre_gelu;
    if (!check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld),
               "set CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD") ||
        !check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux),
               "set CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER"))
      return finish();
  }

  // Layouts (rows, cols, ld) of the column-major views; see the top of this file.
  if (!check(key.trans_b ? cublasLtMatrixLayoutCreate(&plan->layout_a, CUDA_R_16BF, K, N, key.ldb)
                         : cublasLtMatrixLayoutCreate(&plan->layout_a, CUDA_R_16BF, N, K, key.ldb),
             "cublasLtMatrixLayoutCreate (B)") ||
      !check(key.trans_a ? cublasLtMatrixLayoutCreate(&plan->layout_b, CUDA_R_16BF, M, K, key.lda)
                         : cublasLtMatrixLayoutCreate(&plan->layout_b, CUDA_R_16BF, K, M, key.lda),
             "cublasLtMatrixLayoutCreate (A)") ||
      !check(cublasLtMatrixLayoutCreate(&plan->layout_c, CUDA_R_32F, N, M, key.ldc), "cublasLtMatrixLayoutCreate (C)"))
    return finish();

  cublasLtMatmulPreference_t pref = nullptr;
  if (!check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")) return finish();
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } pref_guard{pref};
  const uint64_t workspace_bytes = kWorkspaceBytes;
  // cuBLASLt's A is our B, its B our A; C and D are our C.
  const uint32_t align_a = key.align_b, align_b = key.align_a, align_c = key.align_c;
  if (!check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                  sizeof workspace_bytes),
             "set CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES") ||
      !check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                  sizeof align_a),
             "set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES") ||
      !check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                  sizeof align_b),
             "set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES") ||
      !check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                  sizeof align_c),
             "set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES") ||
      !check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                  sizeof align_c),
             "set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES"))
    return finish();

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (!check(cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->layout_a, plan->layout_b, plan->layout_c,
                                            plan->layout_c, pref, 1, &result, &found),
             "cublasLtMatmulAlgoGetHeuristic"))
    return finish();
  if (found < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
    check(found < 1 ? CUBLAS_STATUS_NOT_SUPPORTED : result.state,
          "cublasLtMatmulAlgoGetHeuristic (no algorithm for these types, epilogue, strides and alignments)");
    return finish();
  }
  if (result.workspaceSize > kWorkspaceBytes) {
    check(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulAlgoGetHeuristic (algorithm wants more workspace than 32 MiB)");
    return finish();
  }
  plan->algo = result.algo;
  return finish();
}

cudaError_t CublasLtGemm::run(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                              const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                              float* C, int ldc, const float* bias, GemmEpilogue epilogue, float* pre_gelu,
                              cudaStream_t stream) {
  // The call, for messages (built only when one is needed: run() is on the hot path).
  auto describe_call = [&]() {
    std::ostringstream w;
    w << "gemm_bf16 " << (trans_a ? 'T' : 'N') << (trans_b ? 'T' : 'N') << " M=" << M << " N=" << N << " K=" << K
      << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " epilogue=" << gemm_epilogue_name(epilogue)
      << (bias ? "" : " (no bias)") << (pre_gelu ? " (pre_gelu)" : "");
    return w.str();
  };
  if (!ok())
    return fail(init_status_, "cuBLASLt is not available for " + describe_call() + ": " + last_error_);

  // Arguments: the checks of gemm.cuh, so both implementations refuse the same calls.
  if (M < 0 || N < 0 || K < 0)
    return fail(cudaErrorInvalidValue, "cuBLASLt " + describe_call() + ": negative size; M, N, K must be >= 0");
  const int a_width = trans_a ? M : K, b_width = trans_b ? K : N;
  if (lda < a_width || ldb < b_width || ldc < N || lda < 1 || ldb < 1 || ldc < 1) {
    std::ostringstream msg;
    msg << "cuBLASLt " << describe_call() << ": a row stride is shorter than its row (need lda >= " << a_width
        << ", ldb >= " << b_width << ", ldc >= " << N << ", all >= 1)";
    return fail(cudaErrorInvalidValue, msg.str());
  }
  if (M == 0 || N == 0) return cudaSuccess;  // nothing to write
  if (!A || !B || !C) return fail(cudaErrorInvalidValue, "cuBLASLt " + describe_call() + ": A, B and C must not be null");
  if (epilogue == GemmEpilogue::bias && !bias)
    return fail(cudaErrorInvalidValue, "cuBLASLt " + describe_call() + ": the bias epilogue needs a bias vector (N floats)");

  // What cuBLASLt cannot do (top of this file): refuse, the caller uses our kernel.
  if (K == 0)
    return fail(cudaErrorNotSupported, "cuBLASLt " + describe_call() + ": K = 0 is not supported by cuBLASLt; use gemm_bf16");
  if (bias && epilogue != GemmEpilogue::none && alignment_of(bias) < 16)
    return fail(cudaErrorNotSupported,
                "cuBLASLt " + describe_call() + ": the bias pointer is not 16-byte aligned; use gemm_bf16");
  const bool aux = epilogue == GemmEpilogue::bias_gelu && pre_gelu != nullptr;
  if (aux && (ldc % 8 != 0 || alignment_of(pre_gelu) < 16 || pre_gelu == C))
    return fail(cudaErrorNotSupported,
                "cuBLASLt " + describe_call() +
                    ": the GELU aux output needs ldc a multiple of 8, pre_gelu 16-byte aligned and "
                    "distinct from C; use gemm_bf16");

  uint32_t lt_epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  switch (epilogue) {
    case GemmEpilogue::none: lt_epilogue = CUBLASLT_EPILOGUE_DEFAULT; break;
    case GemmEpilogue::bias: lt_epilogue = CUBLASLT_EPILOGUE_BIAS; break;
    case GemmEpilogue::bias_gelu:
      lt_epilogue = bias ? (aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS)
                         : (aux ? CUBLASLT_EPILOGUE_GELU_AUX : CUBLASLT_EPILOGUE_GELU);
      break;
  }
  const bool uses_bias = lt_epilogue == CUBLASLT_EPILOGUE_BIAS || lt_epilogue == CUBLASLT_EPILOGUE_GELU_BIAS ||
                         lt_epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const Key key{trans_a,
                trans_b,
                M,
                N,
                K,
                lda,
                ldb,
                ldc,
                lt_epilogue,
                alignment_of(A),
                alignment_of(B),
                alignment_of(C),
                uses_bias ? alignment_of(bias) : 256u,
                aux ? alignment_of(pre_gelu) : 256u};

  auto it = plans_.find(key);
  if (it == plans_.end()) {
    std::unique_ptr<Plan, PlanDeleter> plan;
    const cudaError_t e = make_plan(key, bias, pre_gelu, describe_call(), plan);
    if (e != cudaSuccess) return e;
    it = plans_.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (plan.refused != cudaSuccess) return fail(plan.refused, plan.refusal + "; use gemm_bf16");

  // The pointers of this call (the cached descriptor holds those of the call that built it).
  if (uses_bias) {
    const cublasStatus_t s =
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    if (s != CUBLAS_STATUS_SUCCESS)
      return fail(to_cuda_error(s), std::string("cuBLASLt ") + describe_call() + ": setting the bias pointer failed: " +
                                        status_name(s) + " (" + status_text(s) + ")");
  }
  if (aux) {
    void* aux_ptr = pre_gelu;
    const cublasStatus_t s = cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                            &aux_ptr, sizeof aux_ptr);
    if (s != CUBLAS_STATUS_SUCCESS)
      return fail(to_cuda_error(s), std::string("cuBLASLt ") + describe_call() + ": setting the GELU aux pointer failed: " +
                                        status_name(s) + " (" + status_text(s) + ")");
  }

  // cuBLASLt's A = our B, its B = our A; C = D = our C (in place).
  const cublasStatus_t s = cublasLtMatmul(handle_, plan.desc, &alpha, B, plan.layout_a, A, plan.layout_b, &beta, C,
                                          plan.layout_c, C, plan.layout_c, &plan.algo, workspace_, kWorkspaceBytes,
                                          stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::ostringstream msg;
    msg << "cuBLASLt " << describe_call() << ": cublasLtMatmul returned " << status_name(s) << " (" << status_text(s) << ")";
    if (s == CUBLAS_STATUS_EXECUTION_FAILED) {
      const cudaError_t e = cudaGetLastError();
      msg << "; CUDA says " << cudaGetErrorName(e) << " (" << cudaGetErrorString(e)
          << "); an earlier kernel may have failed, run with compute-sanitizer";
      return fail(e != cudaSuccess ? e : cudaErrorLaunchFailure, msg.str());
    }
    // INVALID_VALUE / NOT_SUPPORTED at run time: treat as a refusal (our kernel can still run).
    if (s == CUBLAS_STATUS_INVALID_VALUE || s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH)
      return fail(cudaErrorNotSupported, msg.str() + "; use gemm_bf16");
    return fail(to_cuda_error(s), msg.str());
  }
  return cudaSuccess;
}

}  // namespace nuri::cuda

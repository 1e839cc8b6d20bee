// The cuda backend (cuda_backend.hpp): each Backend op as launches of kernels/cuda on one stream.
// Shapes follow include/nuri/backend.hpp; N = rows, C = channels, V = vocab, IC/OC = in/out.
#include "backend/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "adamw.cuh"
#include "add.cuh"
#include "attention.cuh"
#include "attention_bf16.cuh"
#include "backend/cuda/device_allocator.hpp"
#include "backend/lm_head.hpp"
#include "bias_grad.cuh"
#include "cast.cuh"
#include "cross_entropy.cuh"
#include "embedding.cuh"
#include "gelu.cuh"
#include "gemm.cuh"
#include "layernorm.cuh"
#include "nuri/error.hpp"
#include "nuri/log.hpp"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "scale.cuh"
#include "sum_squares.cuh"
#include "swiglu.cuh"
#if !defined(NURI_CUDA_EMU)
#include "backend/cuda/gemm_dispatch.hpp"
#if defined(NURI_WITH_CUDNN)
#include "backend/cuda/cudnn_attention.hpp"
#endif
#endif

namespace nuri::cuda {

namespace {

using bf16 = __nv_bfloat16;
static_assert(sizeof(bf16) == sizeof(bf16_t), "bf16_t has the layout of __nv_bfloat16");

// The interface's bf16 buffers as the kernels' type (the same 2-byte layout).
bf16* dev(bf16_t* p) { return reinterpret_cast<bf16*>(p); }
const bf16* dev(const bf16_t* p) { return reinterpret_cast<const bf16*>(p); }

// Device scratch the ops reuse (device memory, never seen by the host).
enum Slot {
  kBf16A, kBf16B, kBf16C, kBf16D, kTokens, kLogits, kLosses, kWorkspace, kDouble,
  kF32A, kF32B,    // fp32 results the bf16 activation ops round (cuBLASLt's products, fp32 attention)
  kFrozenWeights,  // the bf16 copy of the weights between freeze_weights and unfreeze_weights
  kAdamwChunks,    // the fused AdamW's chunk table for adamw_segments_
  kSlots
};

#if !defined(NURI_CUDA_EMU)
// The most fp32 values a product that writes bf16 activations stages for cuBLASLt at once (per
// output: matmul16), as the LM head's chunk of logits: 128 MiB.
constexpr size_t kCastChunkFloats = kLmHeadChunkFloats;
#endif

// NURI_ATTENTION / NURI_GEMM style switches: "auto" unless set.
std::string env_choice(const char* name, std::initializer_list<const char*> allowed) {
  const char* v = std::getenv(name);
  if (!v || !*v) return "auto";
  for (const char* a : allowed)
    if (std::string(v) == a) return v;
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
  NURI_THROW(config, "cuda backend", "environment variable " << name << "='" << v << "' is not one of: " << list);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    device_name_ = prop.name;
    sm_ = prop.major * 10 + prop.minor;
    NURI_CHECK(sm_ >= 80, backend, "cuda backend",
               "GPU " << device_ << " (" << device_name_ << ", sm_" << sm_
                      << ") is older than sm_80; nuri's kernels need bf16 tensor cores (A100, H100 or newer)");
    // Managed memory is touched by the host (MPI's communication thread included) while kernels
    // run: that needs concurrent managed access (Linux with a Pascal-or-newer GPU; not WSL).
    int concurrent = 0;
    check(cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, device_), "cudaDeviceGetAttribute");
    NURI_CHECK(concurrent == 1, backend, "cuda backend",
               "GPU " << device_ << " (" << device_name_ << ") has no concurrent managed memory access (as under "
                      << "Windows/WSL), which nuri's cuda backend needs; run on Linux");
    check(cudaDeviceGetAttribute(&shared_optin_, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_),
          "cudaDeviceGetAttribute");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    attention_choice_ = env_choice("NURI_ATTENTION", {"auto", "ours", "fp32", "cudnn"});
    sync_each_op_ = env_choice("NURI_CUDA_SYNC", {"0", "1"}) == "1";
#if !defined(NURI_CUDA_EMU)
    gemm_ = std::make_unique<GemmDispatch>(stream_, std::string());
#if defined(NURI_WITH_CUDNN)
    std::string why;
    if (attention_choice_ == "cudnn") {
      NURI_CHECK(CudnnAttention::available(&why), backend, "cuda backend",
                 "NURI_ATTENTION=cudnn but cuDNN SDPA is not usable here: " << why);
      cudnn_ = std::make_unique<CudnnAttention>(stream_);
    }
#else
    NURI_CHECK(attention_choice_ != "cudnn", backend, "cuda backend",
               "NURI_ATTENTION=cudnn but this build of nuri has no cuDNN (it was not found at build time)");
#endif
#endif
  }

  ~CudaBackend() override {
    if (stream_) (void)cudaStreamSynchronize(stream_);  // queued work may use what is released below
    // The library handles first: they hold the stream.
#if !defined(NURI_CUDA_EMU)
#if defined(NURI_WITH_CUDNN)
    cudnn_.reset();
#endif
    gemm_.reset();
#endif
    for (auto& [key, table] : rope_tables_) allocator_.release(table.data);
    for (auto& s : scratch_) scratch_alloc_.release(s.ptr);
    for (IdStage& s : id_stages_) {
      if (s.host) (void)cudaFreeHost(s.host);
      if (s.copied) (void)cudaEventDestroy(s.copied);
    }
    if (done_) (void)cudaEventDestroy(done_);
    if (stream_) (void)cudaStreamDestroy(stream_);
  }

  void synchronize() override { wait("synchronize"); }

  // One cast of all the weights; the matrix products read the copy until the outermost
  // unfreeze_weights. The copy's slot stays allocated for the next freeze (2 bytes per parameter).
  void freeze_weights(const float* params, size_t count) override {
    if (frozen_depth_ > 0) {
      NURI_CHECK(params == frozen_ && count == frozen_count_, internal, "freeze_weights",
                 "a freeze of " << count << " floats at " << static_cast<const void*>(params) << " inside a freeze of "
                                << frozen_count_ << " at " << static_cast<const void*>(frozen_)
                                << "; nested freezes must name the same range");
      ++frozen_depth_;
      return;
    }
    frozen_ = nullptr;
    frozen_count_ = 0;
    if (params && count > 0) {
      frozen_bf16_ = scratch<bf16>(kFrozenWeights, count);
      check(cast_f32_to_bf16(frozen_bf16_, params, count, stream_), "freeze_weights: cast to bf16");
      finish("freeze_weights");
      frozen_ = params;
      frozen_count_ = count;
    }
    frozen_depth_ = 1;
  }
  int frozen_weight_bytes() const override { return int(sizeof(bf16)); }
  void unfreeze_weights() override {
    if (frozen_depth_ > 0 && --frozen_depth_ > 0) return;
    frozen_ = nullptr;
    frozen_count_ = 0;
  }

  std::string name() const override { return "cuda"; }
  bool accepts_host_buffers() const override { return false; }
  int device() const override { return device_; }
  bool device_memory(size_t* free_bytes, size_t* total_bytes) override {
    check(cudaSetDevice(device_), "cudaSetDevice");  // cudaMemGetInfo reports the current device
    check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
    return true;
  }
  int threads() const override { return 1; }
  std::string describe() const override {
    std::ostringstream s;
    s << "cuda: GPU " << device_ << " (" << device_name_ << ", sm_" << sm_
      << "), bf16 tensor-core matmuls with fp32 accumulation and fp32 master weights";
#if !defined(NURI_CUDA_EMU)
    s << "; gemm: " << gemm_->describe();
#endif
    s << "; attention: " << attention_choice_;
    if (sync_each_op_) s << "; NURI_CUDA_SYNC=1: every op waits for its work";
    return s.str();
  }

  // ---- memory ----
  float* alloc(size_t count) override {
    auto* p = static_cast<float*>(allocator_.allocate(count * sizeof(float), "a backend buffer"));
    if (p) {
      check(cudaMemsetAsync(p, 0, count * sizeof(float), stream_), "cudaMemsetAsync");
      wait("alloc");  // the host may write it next (and an earlier owner's work is done)
    }
    return p;
  }
  void free(float* ptr) override { allocator_.release(ptr); }
  void zero(float* ptr, size_t count) override {
    if (count) check(cudaMemsetAsync(ptr, 0, count * sizeof(float), stream_), "zero");
    finish("zero");
  }
  void copy(float* dst, const float* src, size_t count) override {
    if (count) check(cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDefault, stream_), "copy");
    // Between backend buffers (the residual copies of every layer) the copy stays queued; with
    // host memory on either side the host uses the data next.
    if (allocator_.contains(dst) && allocator_.contains(src))
      finish("copy");
    else
      wait("copy");
  }

  // ---- bf16 activations ----
  void to_bf16(bf16_t* dst, const float* src, size_t n) override {
    if (n) check(cast_f32_to_bf16(dev(dst), src, n, stream_), "to_bf16");
    finish("to_bf16");
  }
  void to_fp32(float* dst, const bf16_t* src, size_t n) override {
    if (n) check(cast_bf16_to_f32(dst, dev(src), n, stream_), "to_fp32");
    finish("to_fp32");
  }
  // (The fp32 attention kernels would read qkv rounded to bf16 where the bf16 ones cannot run:
  // "auto" keeps fp32 activations there.)
  bool bf16_matmul_inputs(int head_dim) const override { return use_bf16_attention(head_dim); }

  // The kernels read and write these activations in bf16 as they are, with no cast, except where
  // cuBLASLt runs a product that writes bf16 (it writes fp32 scratch, cast once: matmul16) and
  // the fp32 attention kernels (head dims other than 64 and 128: widened into scratch). Every
  // overload of these ops is overridden here, so none is hidden.

  void layernorm_forward(bf16_t* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int N, int C, float eps) override {
    check(cuda::layernorm_forward(dev(out), mean, rstd, inp, weight, bias, N, C, eps, stream_),
          "layernorm_forward (bf16)");
    finish("layernorm_forward (bf16)");
  }
  void rmsnorm_forward(bf16_t* out, float* rstd, const float* inp, const float* weight, int N, int C,
                       float eps) override {
    check(cuda::rmsnorm_forward(dev(out), rstd, inp, weight, N, C, eps, stream_), "rmsnorm_forward (bf16)");
    finish("rmsnorm_forward (bf16)");
  }
  void linear_forward(bf16_t* out, const bf16_t* inp, const float* weight, const float* bias, int N, int IC,
                      int OC) override {
    check_linear("linear_forward (bf16)", N, IC, OC);
    const bf16* w = to_bf16(kBf16B, weight, OC, IC, IC);
    matmul16("linear_forward (bf16)", N, OC, IC, dev(inp), w, dev(out), bias,
             bias ? GemmEpilogue::bias : GemmEpilogue::none, nullptr);
    finish("linear_forward (bf16)");
  }
  void linear_forward(float* out, const bf16_t* inp, const float* weight, const float* bias, int N, int IC, int OC,
                      bool accumulate) override {
    check_linear("linear_forward (bf16 input)", N, IC, OC);
    linear_nt16("linear_forward (bf16 input)", out, dev(inp), weight, bias, N, IC, OC, accumulate ? 1.0f : 0.0f,
                bias ? GemmEpilogue::bias : GemmEpilogue::none, nullptr);
    finish("linear_forward (bf16 input)");
  }
  void linear_gelu_forward(bf16_t* pre, bf16_t* out, const bf16_t* inp, const float* weight, const float* bias,
                           int N, int IC, int OC) override {
    check_linear("linear_gelu_forward (bf16)", N, IC, OC);
    const bf16* w = to_bf16(kBf16B, weight, OC, IC, IC);
    matmul16("linear_gelu_forward (bf16)", N, OC, IC, dev(inp), w, dev(out), bias, GemmEpilogue::bias_gelu, dev(pre));
    finish("linear_gelu_forward (bf16)");
  }
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const bf16_t* inp,
                       const float* weight, int N, int IC, int OC) override {
    linear_backward16("linear_backward (bf16 input)", dinp, dweight, dbias, dout, dev(inp), weight, N, IC, OC);
  }
  void gelu_backward(float* dinp, const bf16_t* inp, const float* dout, size_t n) override {
    check(cuda::gelu_backward(dinp, dev(inp), dout, n, stream_), "gelu_backward (bf16)");
    finish("gelu_backward (bf16)");
  }
  void swiglu_forward(bf16_t* out, const bf16_t* inp, int N, int F) override {
    check(cuda::swiglu_forward(dev(out), dev(inp), N, F, stream_), "swiglu_forward (bf16)");
    finish("swiglu_forward (bf16)");
  }
  void swiglu_backward(float* dinp, const bf16_t* inp, const float* dout, int N, int F) override {
    check(cuda::swiglu_backward(dinp, dev(inp), dout, N, F, stream_), "swiglu_backward (bf16)");
    finish("swiglu_backward (bf16)");
  }
  void rope(bf16_t* x, int B, int T, int nh, int D, int row_stride, float theta) override {
    check(cuda::rope(dev(x), rope_table_for(T, D, theta), B, T, nh, D, row_stride, false, stream_), "rope (bf16)");
    finish("rope (bf16)");
  }
  void attention_forward(bf16_t* out, float* lse, const bf16_t* qkv, int B, int T, int H, int KV,
                         int D) override {
    check_attention("attention_forward (bf16)", B, T, H, KV, D);
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D, ow = size_t(H) * D;
    if (!use_bf16_attention(D)) {
      float* q = widen(kF32A, qkv, rows * width, "attention_forward (bf16)");
      float* o = scratch<float>(kF32B, rows * ow);
      check(cuda::attention_forward(o, lse, q, B, T, H, KV, D, stream_), "attention_forward (fp32 kernels)");
      if (rows * ow > 0) check(cast_f32_to_bf16(dev(out), o, rows * ow, stream_), "attention_forward (bf16): cast");
      finish("attention_forward (bf16)");
      return;
    }
    check_aligned("attention_forward (bf16)", {qkv, out});
    attention_forward16("attention_forward (bf16)", dev(out), lse, dev(qkv), B, T, H, KV, D);
    finish("attention_forward (bf16)");
  }
  void attention_backward(float* dqkv, const float* dout, const bf16_t* qkv, const bf16_t* out, const float* lse,
                          int B, int T, int H, int KV, int D) override {
    check_attention("attention_backward (bf16)", B, T, H, KV, D);
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D, ow = size_t(H) * D;
    if (!use_bf16_attention(D)) {
      float* q = widen(kF32A, qkv, rows * width, "attention_backward (bf16)");
      float* o = widen(kF32B, out, rows * ow, "attention_backward (bf16)");
      check(cuda::attention_backward(dqkv, dout, q, o, lse, B, T, H, KV, D, stream_),
            "attention_backward (fp32 kernels)");
      finish("attention_backward (bf16)");
      return;
    }
    check_aligned("attention_backward (bf16)", {qkv, out});
    attention_backward16("attention_backward (bf16)", dqkv, dout, dev(qkv), dev(out), lse, B, T, H, KV, D);
    finish("attention_backward (bf16)");
  }

  // ---- dense algebra ----
  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    NURI_CHECK(M >= 0 && N >= 0 && K >= 0, shape, "gemm", "bad sizes M=" << M << " N=" << N << " K=" << K);
    // A is (M,K) or (K,M), B is (K,N) or (N,K), each with its row stride.
    const bf16* a = to_bf16(kBf16A, A, trans_a ? K : M, trans_a ? M : K, lda);
    const bf16* b = to_bf16(kBf16B, B, trans_b ? N : K, trans_b ? K : N, ldb);
    const int lda16 = trans_a ? M : K, ldb16 = trans_b ? K : N;
    matmul("gemm", trans_a, trans_b, M, N, K, alpha, a, lda16, b, ldb16, beta, C, ldc, nullptr,
           GemmEpilogue::none, nullptr);
    finish("gemm");
  }

  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int IC, int OC, bool accumulate) override {
    linear_nt("linear_forward", out, inp, weight, bias, N, IC, OC, accumulate ? 1.0f : 0.0f,
              bias ? GemmEpilogue::bias : GemmEpilogue::none, nullptr);
  }

  // GELU fused into the GEMM's epilogue: out = gelu(pre) and pre stored for the backward.
  void linear_gelu_forward(float* pre, float* out, const float* inp, const float* weight, const float* bias, int N,
                           int IC, int OC) override {
    linear_nt("linear_gelu_forward", out, inp, weight, bias, N, IC, OC, 0.0f, GemmEpilogue::bias_gelu, pre);
  }

  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int IC, int OC) override {
    check_linear("linear_backward", N, IC, OC);
    const bf16* x = dweight ? to_bf16(kBf16A, inp, N, IC, IC) : nullptr;
    linear_backward16("linear_backward", dinp, dweight, dbias, dout, x, weight, N, IC, OC);
  }

  void add(float* out, const float* a, const float* b, size_t n) override {
    check(cuda::add(out, a, b, n, stream_), "add");
    finish("add");
  }
  void scale(float* x, float s, size_t n) override {
    check(cuda::scale(x, s, n, stream_), "scale");
    finish("scale");
  }
  double sum_squares(const float* x, size_t n) override {
    double* partials = scratch<double>(kDouble, sum_squares_partials() + 1);
    double* result = partials + sum_squares_partials();
    check(cuda::sum_squares(result, x, n, partials, stream_), "sum_squares");
    double host = 0.0;
    check(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDefault, stream_), "sum_squares: copy back");
    wait("sum_squares");
    return host;
  }

  // ---- norms ----
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int N, int C, float eps) override {
    check(cuda::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps, stream_), "layernorm_forward");
    finish("layernorm_forward");
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int N, int C) override {
    check(cuda::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, stream_),
          "layernorm_backward");
    finish("layernorm_backward");
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                       float eps) override {
    check(cuda::rmsnorm_forward(out, rstd, inp, weight, N, C, eps, stream_), "rmsnorm_forward");
    finish("rmsnorm_forward");
  }
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const float* rstd, int N, int C) override {
    check(cuda::rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C, stream_), "rmsnorm_backward");
    finish("rmsnorm_backward");
  }

  // ---- activations ----
  void gelu_forward(float* out, const float* inp, size_t n) override {
    check(cuda::gelu_forward(out, inp, n, stream_), "gelu_forward");
    finish("gelu_forward");
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override {
    check(cuda::gelu_backward(dinp, inp, dout, n, stream_), "gelu_backward");
    finish("gelu_backward");
  }
  void swiglu_forward(float* out, const float* inp, int N, int F) override {
    check(cuda::swiglu_forward(out, inp, N, F, stream_), "swiglu_forward");
    finish("swiglu_forward");
  }
  void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) override {
    check(cuda::swiglu_backward(dinp, inp, dout, N, F, stream_), "swiglu_backward");
    finish("swiglu_backward");
  }

  // ---- positions ----
  void rope(float* x, int B, int T, int nh, int D, int row_stride, float theta, bool inverse) override {
    check(cuda::rope(x, rope_table_for(T, D, theta), B, T, nh, D, row_stride, inverse, stream_), "rope");
    finish("rope");
  }

  // ---- attention ----
  // D = 64 or 128: bf16 tensor cores (cuDNN SDPA with NURI_ATTENTION=cudnn, else ours); other D,
  // or NURI_ATTENTION=fp32: our fp32 SIMT kernels on the fp32 buffers.
  void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H, int KV,
                         int D) override {
    check_attention("attention_forward", B, T, H, KV, D);
    if (!use_bf16_attention(D)) {
      check(cuda::attention_forward(out, lse, qkv, B, T, H, KV, D, stream_), "attention_forward (fp32)");
      finish("attention_forward");
      return;
    }
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D;
    const bf16* q = to_bf16(kBf16A, qkv, rows, width, width);
    bf16* o = scratch<bf16>(kBf16B, rows * size_t(H) * D);
    attention_forward16("attention_forward", o, lse, q, B, T, H, KV, D);
    check(cast_bf16_to_f32(out, o, rows * size_t(H) * D, stream_), "attention_forward: cast");
    finish("attention_forward");
  }

  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                          int B, int T, int H, int KV, int D) override {
    check_attention("attention_backward", B, T, H, KV, D);
    if (!use_bf16_attention(D)) {
      check(cuda::attention_backward(dqkv, dout, qkv, out, lse, B, T, H, KV, D, stream_),
            "attention_backward (fp32)");
      finish("attention_backward");
      return;
    }
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D, ow = size_t(H) * D;
    const bf16* q = to_bf16(kBf16A, qkv, rows, width, width);
    const bf16* o = to_bf16(kBf16B, out, rows, ow, ow);
    attention_backward16("attention_backward", dqkv, dout, q, o, lse, B, T, H, KV, D);
    finish("attention_backward");
  }

  // ---- embedding ----
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int N, int T,
                         int C) override {
    const int32_t* t = upload_ids(tokens, N, "embedding_forward");
    check(cuda::embedding_forward(out, t, wte, wpe, N, T, C, stream_), "embedding_forward");
    finish("embedding_forward");
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int N, int T,
                          int C) override {
    const int32_t* t = upload_ids(tokens, N, "embedding_backward");
    check(cuda::embedding_backward(dwte, dwpe, dout, t, N, T, C, stream_), "embedding_backward");
    finish("embedding_backward");
  }

  // ---- loss ----
  // Rows in chunks, as on the CPU (backend.hpp): logits (rows,V) = x W^T by the bf16 GEMM, then one
  // fused kernel per chunk writes the row losses and, with dx, dlogits = grad_scale (softmax -
  // onehot) in bf16; dx = dlogits W and dW += dlogits^T x by the bf16 GEMM.
  double lm_head_cross_entropy(float* dx, float* dweight, const float* x, const float* weight,
                               const int32_t* targets, int N, int C, int V, float grad_scale) override {
    NURI_CHECK(N >= 0 && C > 0 && V > 0, shape, "lm_head_cross_entropy",
               "bad sizes N=" << N << " C=" << C << " V=" << V);
    check_lm_head_targets(targets, N, V);
    if (N == 0) return 0.0;
    const int chunk = lm_head_chunk_rows(N, size_t(V));
    const int32_t* tgt = upload_ids(targets, N, "lm_head_cross_entropy");
    const bf16* w = to_bf16(kBf16B, weight, V, C, C);
    const bf16* xall = to_bf16(kBf16A, x, N, C, C);
    float* logits = scratch<float>(kLogits, size_t(std::min(chunk, N)) * V);
    float* losses = scratch<float>(kLosses, size_t(N));
    // grad_scale = 0 asks for a zero gradient: dx = 0 and dW unchanged, without the products.
    if (dx && grad_scale == 0.0f) {
      check(cudaMemsetAsync(dx, 0, size_t(N) * C * sizeof(float), stream_), "lm_head_cross_entropy: zero dx");
      dx = nullptr;
    }
    for (int n0 = 0; n0 < N; n0 += chunk) {
      const int rows = std::min(chunk, N - n0);
      const bf16* xc = xall + size_t(n0) * C;
      matmul("lm_head_cross_entropy logits", false, true, rows, V, C, 1.0f, xc, C, w, C, 0.0f, logits, V,
             nullptr, GemmEpilogue::none, nullptr);
      if (!dx) {
        check(cross_entropy_fused(logits, losses + n0, tgt + n0, rows, V, 0.0f, stream_),
              "lm_head_cross_entropy: cross_entropy_fused");
      } else {
        // The loss, and the logits' gradient straight into bf16 for the two products below.
        bf16* g = scratch<bf16>(kBf16C, size_t(rows) * V);
        check(cross_entropy_fused_bf16(g, losses + n0, logits, tgt + n0, rows, V, grad_scale, stream_),
              "lm_head_cross_entropy: cross_entropy_fused_bf16");
        // dx_c (rows,C) = dlogits (rows,V) W (V,C)
        matmul("lm_head_cross_entropy dx", false, false, rows, C, V, 1.0f, g, V, w, C, 0.0f, dx + size_t(n0) * C,
               C, nullptr, GemmEpilogue::none, nullptr);
        // dW (V,C) += dlogits^T (V,rows) x_c (rows,C)
        if (dweight)
          matmul("lm_head_cross_entropy dweight", true, false, V, C, rows, 1.0f, g, V, xc, C, 1.0f, dweight, C,
                 nullptr, GemmEpilogue::none, nullptr);
      }
    }
    std::vector<float> host(static_cast<size_t>(N));
    check(cudaMemcpyAsync(host.data(), losses, host.size() * sizeof(float), cudaMemcpyDefault, stream_),
          "lm_head_cross_entropy: copy losses");
    wait("lm_head_cross_entropy");
    double sum = 0.0;
    for (float l : host) sum += double(l);  // ignored rows hold 0
    return sum;
  }

  void lm_head_logits(float* logits, const float* x, const float* weight, int N, int C, int V) override {
    linear_nt("lm_head_logits", logits, x, weight, nullptr, N, C, V, 0.0f, GemmEpilogue::none, nullptr);
  }

  void cross_entropy_partial(float* row_max, float* row_sum, float* target_logit, const float* logits,
                             const int32_t* targets, int N, int V, int vocab_start) override {
    const int32_t* t = upload_ids(targets, N, "cross_entropy_partial");
    check(cuda::cross_entropy_partial(row_max, row_sum, target_logit, logits, t, N, V, vocab_start, stream_),
          "cross_entropy_partial");
    finish("cross_entropy_partial");
  }
  void cross_entropy_partial_backward(float* logits, const float* lse, const int32_t* targets, int N, int V,
                                      int vocab_start, float scale) override {
    const int32_t* t = upload_ids(targets, N, "cross_entropy_partial_backward");
    check(cuda::cross_entropy_partial_backward(logits, lse, t, N, V, vocab_start, scale, stream_),
          "cross_entropy_partial_backward");
    finish("cross_entropy_partial_backward");
  }

  // ---- optimizer ----
  void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, int step, float grad_scale) override {
    check(cuda::adamw_update(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale, stream_),
          "adamw_update");
    finish("adamw_update");
  }
  // One launch over every segment. The chunk table is built and uploaded once per distinct segment
  // list (an optimizer passes the same list every step) into its scratch slot.
  void adamw_update_segments(float* params, const float* grads, float* m, float* v,
                             const std::vector<AdamwSegment>& segments, float lr, float beta1, float beta2,
                             float eps, float weight_decay, int step, float grad_scale) override {
    NURI_CHECK(step >= 1, internal, "adamw_update_segments", "step must be >= 1, got " << step);
    if (segments != adamw_segments_) {
      std::vector<AdamwChunk> chunks;
      for (const AdamwSegment& s : segments)
        append_adamw_chunks(chunks, s.param_offset, s.moment_offset, s.count, s.decay);
      NURI_CHECK(chunks.size() <= size_t(INT32_MAX), shape, "adamw_update_segments",
                 chunks.size() << " chunks are more than one launch takes");
      AdamwChunk* table = scratch<AdamwChunk>(kAdamwChunks, chunks.size());
      if (!chunks.empty())  // from pageable memory: CUDA reads `chunks` before the call returns
        check(cudaMemcpyAsync(table, chunks.data(), chunks.size() * sizeof(AdamwChunk), cudaMemcpyDefault, stream_),
              "adamw_update_segments: upload the chunk table");
      adamw_segments_ = segments;
      adamw_nchunks_ = int(chunks.size());
    }
    check(adamw_update_chunks(params, grads, m, v, scratch<AdamwChunk>(kAdamwChunks, size_t(adamw_nchunks_)),
                              adamw_nchunks_, lr, beta1, beta2, eps,
                              weight_decay, step, grad_scale, stream_),
          "adamw_update_segments");
    finish("adamw_update_segments");
  }

 private:
  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  // Throws Error(backend) naming the op and the CUDA error.
  void check(cudaError_t e, const char* what, const std::string& detail = std::string()) {
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    NURI_THROW(backend, "cuda backend",
               what << " failed on GPU " << device_ << ": " << cudaGetErrorString(e)
                    << (detail.empty() ? "" : " (") << detail << (detail.empty() ? "" : ")"));
  }
  // Waits for all queued work. A fault in it is reported against `op`, which caused it only when
  // every op waits (NURI_CUDA_SYNC=1); otherwise the message says so.
  void wait(const char* op) {
    check(cudaEventRecord(done_, stream_), op);
    check(cudaEventSynchronize(done_), op,
          sync_each_op_ ? std::string() : "the fault may be in earlier queued work; rerun with NURI_CUDA_SYNC=1 to name the op");
  }
  // The end of every op: nothing (the work stays queued) unless NURI_CUDA_SYNC=1 asked to wait
  // for each op, so that a kernel fault is reported against the op that caused it.
  void finish(const char* op) {
    if (sync_each_op_) wait(op);
  }

  template <typename T>
  T* scratch(Slot slot, size_t count) {
    Scratch& s = scratch_[slot];
    const size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
    if (s.bytes < bytes) {
      wait("scratch");  // the old buffer may still be read by queued work
      scratch_alloc_.release(s.ptr);
      s = Scratch{};  // nothing held if the allocation below throws
      s.ptr = scratch_alloc_.allocate(bytes, "device scratch");
      s.bytes = DeviceAllocator::round_size(bytes);
    }
    return static_cast<T*>(s.ptr);
  }

  // A (rows, cols) fp32 matrix with row stride ld, as a dense bf16 (rows, cols) copy: the frozen
  // weights' copy when src lies in them (dense), else a cast into a slot.
  const bf16* to_bf16(Slot slot, const float* src, size_t rows, size_t cols, size_t ld) {
    const auto at = reinterpret_cast<uintptr_t>(src), lo = reinterpret_cast<uintptr_t>(frozen_);
    if (frozen_ && ld == cols && at >= lo && (at - lo) / sizeof(float) + rows * cols <= frozen_count_)
      return frozen_bf16_ + (at - lo) / sizeof(float);
    bf16* dst = scratch<bf16>(slot, rows * cols);
    if (rows * cols == 0) return dst;
    if (ld == cols) {
      check(cast_f32_to_bf16(dst, src, rows * cols, stream_), "cast to bf16");
    } else {
      for (size_t r = 0; r < rows; ++r)  // strided operands are rare (the TP paths): a cast per row
        check(cast_f32_to_bf16(dst + r * cols, src + r * ld, cols, stream_), "cast to bf16");
    }
    return dst;
  }

  // Token or target ids (N, the caller's host memory) to device scratch, through the next
  // page-locked stage of a ring: a copy from pageable memory may make the driver wait for the
  // whole stream first; from page-locked memory it is queued like a kernel. A stage is rewritten
  // only once the copy that last read it has run (its event: long done, normally, as the host
  // waits at least once per micro-batch, and a micro-batch uploads at most three times).
  const int32_t* upload_ids(const int32_t* ids, int N, const char* op) {
    NURI_CHECK(N >= 0, shape, op, "bad row count N=" << N);
    int32_t* d = scratch<int32_t>(kTokens, size_t(N));
    if (N == 0) return d;
    IdStage& s = id_stages_[next_id_stage_];
    next_id_stage_ = (next_id_stage_ + 1) % kIdStages;
    if (s.copied) {
      check(cudaEventSynchronize(s.copied), op,
            "while waiting for an earlier upload of ids; the fault may be in earlier queued work: rerun with "
            "NURI_CUDA_SYNC=1 to name the op");
    } else {
      check(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming), op);
    }
    if (s.count < size_t(N)) {
      if (s.host) check(cudaFreeHost(s.host), op);
      s.host = nullptr;
      s.count = 0;
      void* p = nullptr;
      check(cudaMallocHost(&p, size_t(N) * sizeof(int32_t)), op, "page-locked staging for token ids");
      s.host = static_cast<int32_t*>(p);
      s.count = size_t(N);
    }
    std::copy_n(ids, N, s.host);
    check(cudaMemcpyAsync(d, s.host, size_t(N) * sizeof(int32_t), cudaMemcpyDefault, stream_), op);
    check(cudaEventRecord(s.copied, stream_), op);
    return d;
  }

  void matmul(const char* op, bool ta, bool tb, int M, int N, int K, float alpha, const bf16* A, int lda,
              const bf16* B, int ldb, float beta, float* C, int ldc, const float* bias, GemmEpilogue ep,
              float* pre_gelu) {
#if defined(NURI_CUDA_EMU)
    check(gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ep, pre_gelu, stream_), op);
#else
    check(gemm_->run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias, ep, pre_gelu), op);
#endif
  }

  // out (N,OC) = epilogue(inp (N,IC) @ W (OC,IC)^T [+ bias] + beta out), inputs rounded to bf16.
  void linear_nt(const char* op, float* out, const float* inp, const float* weight, const float* bias, int N, int IC,
                 int OC, float beta, GemmEpilogue epilogue, float* pre_gelu) {
    check_linear(op, N, IC, OC);
    linear_nt16(op, out, to_bf16(kBf16A, inp, N, IC, IC), weight, bias, N, IC, OC, beta, epilogue, pre_gelu);
    finish(op);
  }
  // C (M,N) bf16 = epilogue(x (M,K) @ w (N,K)^T [+ bias]), pre (bf16, with bias_gelu) the
  // pre-activation; queued. Our GEMM writes bf16 directly; where the dispatcher picks cuBLASLt
  // for the shape (the default until a GPU run's table says otherwise), cuBLASLt writes fp32
  // scratch and one cast per output rounds it, the same bits, in chunks of rows that keep each
  // scratch at most kCastChunkFloats (128 MiB).
  void matmul16(const char* op, int M, int N, int K, const bf16* x, const bf16* w, bf16* C, const float* bias,
                GemmEpilogue ep, bf16* pre) {
#if !defined(NURI_CUDA_EMU)
    if (M > 0 && gemm_->tries_cublaslt(GemmShapeKey{false, true, M, N, K, gemm_epilogue_name(ep)})) {
      const int chunk = int(std::clamp<size_t>(kCastChunkFloats / size_t(N), 1, size_t(M)));
      float* c = scratch<float>(kF32A, size_t(chunk) * N);
      float* p = pre ? scratch<float>(kF32B, size_t(chunk) * N) : nullptr;
      for (int m0 = 0; m0 < M; m0 += chunk) {
        const int rows = std::min(chunk, M - m0);
        const size_t at = size_t(m0) * N, n = size_t(rows) * N;
        matmul(op, false, true, rows, N, K, 1.0f, x + size_t(m0) * K, K, w, K, 0.0f, c, N, bias, ep, p);
        check(cast_f32_to_bf16(C + at, c, n, stream_), op);
        if (p) check(cast_f32_to_bf16(pre + at, p, n, stream_), op);
      }
      return;
    }
#endif
    check(gemm_bf16(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, C, N, bias, ep, pre, stream_), op);
  }
  // linear_nt's product once its input x (N,IC) is bf16 (queued; the caller finishes).
  void linear_nt16(const char* op, float* out, const bf16* x, const float* weight, const float* bias, int N, int IC,
                   int OC, float beta, GemmEpilogue epilogue, float* pre_gelu) {
    const bf16* w = to_bf16(kBf16B, weight, OC, IC, IC);
    matmul(op, false, true, N, OC, IC, 1.0f, x, IC, w, IC, beta, out, OC, bias, epilogue, pre_gelu);
  }
  // Backend::linear_backward with its input x (N,IC) in bf16 (read only when dweight is non-null).
  void linear_backward16(const char* op, float* dinp, float* dweight, float* dbias, const float* dout, const bf16* x,
                         const float* weight, int N, int IC, int OC) {
    check_linear(op, N, IC, OC);
    const bf16* dy = to_bf16(kBf16C, dout, N, OC, OC);
    if (dinp) {  // dinp (N,IC) = dout (N,OC) @ W (OC,IC)
      const bf16* w = to_bf16(kBf16B, weight, OC, IC, IC);
      matmul(op, false, false, N, IC, OC, 1.0f, dy, OC, w, IC, 0.0f, dinp, IC, nullptr, GemmEpilogue::none, nullptr);
    }
    if (dweight)  // dW (OC,IC) += dout^T (OC,N) @ inp (N,IC)
      matmul(op, true, false, OC, IC, N, 1.0f, dy, OC, x, IC, 1.0f, dweight, IC, nullptr, GemmEpilogue::none, nullptr);
    if (dbias) check(bias_grad(dbias, dout, N, OC, stream_), op);
    finish(op);
  }
  // The bf16 attention (cuDNN SDPA when chosen and it takes the shape, else ours), queued:
  // o (B,T,H*D) and lse from q = qkv (B,T,(H+2KV)*D), all bf16 but lse.
  void attention_forward16(const char* op, bf16* o, float* lse, const bf16* q, int B, int T, int H, int KV, int D) {
    bool done = false;
#if defined(NURI_WITH_CUDNN) && !defined(NURI_CUDA_EMU)
    if (cudnn_) done = cudnn_ok(cudnn_->forward(o, lse, q, B, T, H, KV, D), op);
#endif
    if (!done) check(attention_forward_bf16(o, lse, q, B, T, H, KV, D, stream_), op);
  }
  // Its backward into fp32 dqkv (B,T,(H+2KV)*D), queued.
  void attention_backward16(const char* op, float* dqkv, const float* dout, const bf16* q, const bf16* o,
                            const float* lse, int B, int T, int H, int KV, int D) {
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D, ow = size_t(H) * D;
    const bf16* dy = to_bf16(kBf16C, dout, rows, ow, ow);
    bf16* dq = scratch<bf16>(kBf16D, rows * width);
    bool done = false;
#if defined(NURI_WITH_CUDNN) && !defined(NURI_CUDA_EMU)
    if (cudnn_) done = cudnn_ok(cudnn_->backward(dq, dy, q, o, lse, B, T, H, KV, D), op);
#endif
    if (!done) {
      float* ws = scratch<float>(kWorkspace, attention_backward_bf16_workspace(B, T, H, KV, D));
      check(attention_backward_bf16(dq, dy, q, o, lse, ws, B, T, H, KV, D, stream_), op);
    }
    check(cast_bf16_to_f32(dqkv, dq, rows * width, stream_), op);
  }
  // A slot's fp32 copy of bf16 src (n), queued.
  float* widen(Slot slot, const bf16_t* src, size_t n, const char* op) {
    float* x = scratch<float>(slot, n);
    if (n) check(cast_bf16_to_f32(x, dev(src), n, stream_), op);
    return x;
  }

  // The bf16 attention kernels and cuDNN read and write bf16 16 bytes at a time.
  void check_aligned(const char* op, std::initializer_list<const bf16_t*> buffers) {
    for (const bf16_t* p : buffers)
      NURI_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, shape, op,
                 "a bf16 buffer at " << static_cast<const void*>(p)
                                     << " is not 16-byte aligned; the bf16 attention needs its qkv and output "
                                        "aligned (start them at a multiple of 8 values into an alloc() buffer)");
  }
  void check_linear(const char* op, int N, int IC, int OC) {
    NURI_CHECK(N >= 0 && IC > 0 && OC > 0, shape, op, "bad sizes N=" << N << " IC=" << IC << " OC=" << OC);
  }
  void check_attention(const char* op, int B, int T, int H, int KV, int D) {
    NURI_CHECK(B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0 && D > 0 && D <= 128, shape, op,
               "unsupported attention shape B=" << B << " T=" << T << " H=" << H << " KV=" << KV << " D=" << D
                                                << " (the cuda backend needs H % KV == 0 and head dim D <= 128)");
  }
#if defined(NURI_WITH_CUDNN) && !defined(NURI_CUDA_EMU)
  // True when cuDNN ran the op; false (once warned) when it refused the shape, so our kernel runs;
  // an execution failure throws.
  bool cudnn_ok(cudaError_t e, const char* op) {
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotSupported) check(e, op, "cuDNN SDPA: " + cudnn_->last_error());
    if (!cudnn_warned_) NURI_WARN("cuda backend: " << op << ": cuDNN SDPA refused (" << cudnn_->last_error()
                                                   << "); using nuri's attention kernels for such shapes");
    cudnn_warned_ = true;
    return false;
  }
#endif
  // Our bf16 kernels where the GPU has the shared memory they need (D = 128 does not fit on
  // sm_86/sm_89), else the fp32 ones.
  bool use_bf16_attention(int D) const {
    return (D == 64 || D == 128) && attention_choice_ != "fp32" &&
           attention_bf16_shared_bytes(D) <= size_t(shared_optin_);
  }

  // The (T, D/2, 2) cos/sin table of (D, theta): one per pair, grown to the longest T asked for (a
  // table for T rows starts with the table for fewer).
  const float* rope_table_for(int T, int D, float theta) {
    RopeTable& t = rope_tables_[std::make_pair(D, theta)];
    if (t.data && t.rows >= T) return t.data;
    const int rows = std::max({T, 1, 2 * t.rows});  // doubling: sampling asks for T = 1, 2, 3, ...
    wait("rope_table");  // queued work may still read the old table
    allocator_.release(t.data);
    t = RopeTable{};  // nothing held if the allocation below throws
    t.data = static_cast<float*>(allocator_.allocate(size_t(rows) * size_t(D) * sizeof(float), "the RoPE table"));
    t.rows = rows;
    check(rope_table(t.data, rows, D, theta, stream_), "rope_table");
    finish("rope_table");
    return t.data;
  }

  int device_ = 0, sm_ = 0;
  std::string device_name_;
  DeviceAllocator allocator_{true};  // the interface's buffers: managed memory
  DeviceAllocator scratch_alloc_{false};  // device-only scratch
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  Scratch scratch_[kSlots];
  struct IdStage {  // page-locked host staging for upload_ids
    int32_t* host = nullptr;
    size_t count = 0;  // int32 capacity
    cudaEvent_t copied = nullptr;  // recorded after the copy that last read `host`
  };
  static constexpr int kIdStages = 4;
  IdStage id_stages_[kIdStages];
  int next_id_stage_ = 0;
  struct RopeTable {
    float* data = nullptr;
    int rows = 0;
  };
  std::map<std::pair<int, float>, RopeTable> rope_tables_;
  std::vector<AdamwSegment> adamw_segments_;  // the segments the kAdamwChunks table was built for
  int adamw_nchunks_ = 0;
  int shared_optin_ = 0;  // bytes of shared memory a block may opt into on this GPU
  bool sync_each_op_ = false;  // NURI_CUDA_SYNC=1
  const float* frozen_ = nullptr;  // freeze_weights' range, null when none
  size_t frozen_count_ = 0;
  int frozen_depth_ = 0;  // open freezes (they nest)
  bf16* frozen_bf16_ = nullptr;  // its bf16 copy (slot kFrozenWeights)
  std::string attention_choice_;
#if !defined(NURI_CUDA_EMU)
  std::unique_ptr<GemmDispatch> gemm_;
#if defined(NURI_WITH_CUDNN)
  std::unique_ptr<CudnnAttention> cudnn_;
  bool cudnn_warned_ = false;
#endif
#endif
};

}  // namespace

int local_rank_device(int device_count) {
  int local = 0;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
    if (const char* v = std::getenv(var)) {
      local = std::atoi(v);
      break;
    }
  }
  return device_count > 0 ? local % device_count : 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    NURI_THROW(backend, "make_backend",
               "backend = \"cuda\" but no CUDA device is usable here ("
                   << (e != cudaSuccess ? cudaGetErrorString(e) : "no GPU found")
                   << "); run on a GPU node (check nvidia-smi and CUDA_VISIBLE_DEVICES) or set backend = \"cpu\"");
  }
  if (device < 0) device = local_rank_device(count);
  NURI_CHECK(device < count, backend, "make_backend",
             "GPU " << device << " asked for, but only " << count << " visible (CUDA_VISIBLE_DEVICES)");
  return std::make_unique<CudaBackend>(device);
}

}  // namespace nuri::cuda

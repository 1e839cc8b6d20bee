#pragma once
// \file
// The Backend interface: memory and the op set every model is built from.
//
// Tensors are fp32, row-major, given as raw pointers plus sizes; a block's large activations may
// also be held in bf16 (bf16_t, the "bf16 activations" ops). Shapes are in the comments:
// N = rows (B*T), C = channels, V = vocab, H = query heads, KV = key/value heads, D = head dim.
// Conventions shared by every op:
//   - parameter gradients (dweight, dbias, ...) are ACCUMULATED (+=), so micro-batches add up;
//   - activation gradients are OVERWRITTEN, except where an op says "accumulates into dinp"
//     (the norms, which sit on the residual stream and add their gradient to it).
// The `cpu` backend is the reference. Callers ask `supports()` rather than testing the type.
// Ops are not thread-safe with respect to one another on the same backend object.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// The fused LM head holds at most this many logits at once (rows are processed in chunks of
// max(16, min(N, kLmHeadChunkFloats / V))): 128 MB in fp32. Larger chunks make the LM-head GEMMs
// faster (at V = 50257, 667-row chunks ran the gpt2-124m step 4-5% faster than 166-row ones).
inline constexpr size_t kLmHeadChunkFloats = size_t(32) << 20;

// bf16 storage: the upper 16 bits of an fp32 value (8 exponent bits, 7 mantissa bits). Plain
// data of 2 bytes, the layout of CUDA's __nv_bfloat16; what the "bf16 activations" ops hold.
struct bf16_t {
  uint16_t bits;  // sign, exponent, the top 7 mantissa bits
};
// x rounded to bf16: to nearest, ties to even; NaN stays a (quiet) NaN, infinities stay.
inline bf16_t bf16_round(float x) {
  uint32_t u;
  static_assert(sizeof u == sizeof x, "fp32 is 32 bits");
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
// The fp32 value of x (exact).
inline float bf16_widen(bf16_t x) {
  const uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One tensor (or part of one) of a fused AdamW update (Backend::adamw_update_segments).
struct AdamwSegment {
  size_t param_offset;   // into the parameter and gradient buffers
  size_t moment_offset;  // into the moment buffers
  size_t count;          // elements
  bool decay;            // weight decay applies (matrices and embeddings; not norms or biases)
  // Equal when every field is (the cuda backend keeps one chunk table per segment list).
  bool operator==(const AdamwSegment&) const = default;
};

// A compute device: allocates fp32 buffers and runs the ops below on them. Made by make_backend.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // the name given to make_backend, e.g. "cpu"
  virtual int threads() const = 0;       // worker threads the ops use
  // One line for logs: the name and what was chosen for this machine (threads, libraries).
  virtual std::string describe() const { return name(); }

  // True when ops may be given plain host memory (malloc, std::vector) as float buffers; false
  // when every float buffer must come from alloc() (the cuda backend: its kernels cannot read
  // pageable host memory). Token and target ids are host memory with every backend.
  virtual bool accepts_host_buffers() const { return true; }
  // The CUDA device this backend runs on; -1 for none (the CPU backend).
  virtual int device() const { return -1; }
  // The free and total bytes of the device's own memory, where it has one (the cuda backend:
  // cudaMemGetInfo); false where the backend uses the host's memory (the CPU backend).
  virtual bool device_memory(size_t* free_bytes, size_t* total_bytes) {
    (void)free_bytes;
    (void)total_bytes;
    return false;
  }

  // ---- memory (owned by the caller until free) ----
  virtual float* alloc(size_t count) = 0;  // count floats, zeroed, 64-byte aligned
  virtual void free(float* ptr) = 0;  // releases a buffer from this backend's alloc()
  virtual void zero(float* ptr, size_t count) = 0;  // ptr[0, count) = 0
  // dst = src, count floats; either may also be plain host memory (how data enters and leaves).
  virtual void copy(float* dst, const float* src, size_t count) = 0;

  // ---- dense algebra ----
  // C (M,N) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T. lda/ldb/ldc are row strides.
  virtual void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                    int lda, const float* B, int ldb, float beta, float* C, int ldc) = 0;
  // out (N,OC) = inp (N,IC) @ weight(OC,IC)^T + bias (OC) [bias may be null]. If accumulate,
  // out += instead of =.
  virtual void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                              int N, int IC, int OC, bool accumulate) = 0;
  // pre (N,OC) = inp (N,IC) @ weight (OC,IC)^T + bias (OC) [bias may be null], out (N,OC) =
  // gelu(pre): linear_forward then gelu_forward, which a backend may fuse (the cuda backend does,
  // in the GEMM's epilogue). The MLP of gpt2 models.
  virtual void linear_gelu_forward(float* pre, float* out, const float* inp, const float* weight,
                                   const float* bias, int N, int IC, int OC) {
    linear_forward(pre, inp, weight, bias, N, IC, OC, false);
    gelu_forward(out, pre, size_t(N) * size_t(OC));
  }
  // dinp (N,IC) = dout @ weight (dinp may be null); dweight (OC,IC) += dout^T @ inp;
  // dbias (OC) += column sums of dout (dbias may be null).
  virtual void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int N, int IC, int OC) = 0;
  // out = a + b (n elements); out may alias a or b.
  virtual void add(float* out, const float* a, const float* b, size_t n) = 0;
  // x *= s
  virtual void scale(float* x, float s, size_t n) = 0;
  // sum of x^2 (double accumulation)
  virtual double sum_squares(const float* x, size_t n) = 0;

  // ---- norms ----
  // out (N,C) = (inp - mean) * rstd * weight + bias; saves mean (N), rstd (N).
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                 const float* weight, const float* bias, int N, int C,
                                 float eps) = 0;
  // Accumulates into dinp (N,C); dweight, dbias (C) +=.
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, const float* mean,
                                  const float* rstd, int N, int C) = 0;
  // out (N,C) = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps); saves rstd (N).
  virtual void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                               int N, int C, float eps) = 0;
  // Accumulates into dinp (N,C); dweight (C) +=.
  virtual void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                const float* weight, const float* rstd, int N, int C) = 0;

  // ---- activations ----
  // GELU, tanh approximation (GPT-2's "gelu_new"). out may alias inp.
  virtual void gelu_forward(float* out, const float* inp, size_t n) = 0;
  // dinp (n) = dout * gelu'(inp), overwritten.
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) = 0;
  // out (N,F) = silu(inp[:, :F]) * inp[:, F:], inp (N,2F) = [gate | up].
  virtual void swiglu_forward(float* out, const float* inp, int N, int F) = 0;
  // dinp (N,2F) from dout (N,F).
  virtual void swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) = 0;

  // ---- positions ----
  // Rotary embedding in place on x (B,T,nh,D) with row stride `row_stride` floats between
  // consecutive (b,t) rows (heads are contiguous, D apart). Half-split layout (Hugging Face
  // Llama / GPT-NeoX): pairs (i, i + D/2) rotate by angle t * theta^(-2i/D). inverse=true rotates
  // back (the backward of the forward rotation).
  virtual void rope(float* x, int B, int T, int nh, int D, int row_stride, float theta,
                    bool inverse) = 0;

  // ---- attention ----
  // Causal scaled-dot-product attention with grouped-query heads (H % KV == 0, query head h
  // reads kv head h / (H/KV)). qkv (B,T,(H+2KV)*D) holds [q heads | k heads | v heads] per row.
  // out (B,T,H*D); lse (B,H,T) log-sum-exp of each score row, saved for the backward. No T x T
  // matrix is kept: the backward recomputes scores from q, k and lse.
  virtual void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                                 int KV, int D) = 0;
  // dqkv (B,T,(H+2KV)*D) overwritten.
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv,
                                  const float* out, const float* lse, int B, int T, int H, int KV,
                                  int D) = 0;

  // ---- embedding ----
  // out (N,C) = wte[tokens[n]] (+ wpe[n % T] when wpe is non-null). tokens < V.
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte,
                                 const float* wpe, int N, int T, int C) = 0;
  // dwte[tokens[n]] += dout[n]; dwpe[n % T] += dout[n] when dwpe is non-null.
  // A negative token has no wte row (forward: wpe only, or zero; backward: no dwte), which is how
  // the vocabulary-parallel embedding skips the ids of other ranks' slices.
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout,
                                  const int32_t* tokens, int N, int T, int C) = 0;

  // ---- loss ----
  // Softmax cross-entropy fused with the LM head: logits = x (N,C) @ weight (V,C)^T, computed in
  // chunks of rows so the full (N,V) logits are never kept. Targets < 0 are ignored.
  // Returns the SUM of the losses over non-ignored rows (the caller divides).
  // When dx is non-null: dx (N,C) = grad_scale * dloss/dx and dweight (V,C) += grad_scale *
  // dloss/dweight, where loss is the sum above.
  virtual double lm_head_cross_entropy(float* dx, float* dweight, const float* x,
                                       const float* weight, const int32_t* targets, int N, int C,
                                       int V, float grad_scale) = 0;
  // logits (N,V) = x (N,C) @ weight (V,C)^T, for sampling.
  virtual void lm_head_logits(float* logits, const float* x, const float* weight, int N, int C,
                              int V) = 0;
  // Vocabulary-parallel cross-entropy, the local halves. logits (N,V) hold the full vocabulary
  // ids [vocab_start, vocab_start + V); targets (N) are full ids, < 0 ignored.
  // row_max (N) = max of each row; row_sum (N) = sum of e^{logit - row_max}; target_logit (N) =
  // the target's logit when it falls in this slice, else 0. (Combined over the slices: M = max
  // of row_max, S = sum of row_sum e^{row_max - M}, lse = M + log S, loss = lse - target logit.)
  virtual void cross_entropy_partial(float* row_max, float* row_sum, float* target_logit,
                                     const float* logits, const int32_t* targets, int N, int V,
                                     int vocab_start) = 0;
  // In place: logits = scale (e^{logits - lse} - onehot(target)), with lse (N) the full rows'
  // log-sum-exp; rows with an ignored target become 0.
  virtual void cross_entropy_partial_backward(float* logits, const float* lse,
                                              const int32_t* targets, int N, int V,
                                              int vocab_start, float scale) = 0;

  // ---- optimizer ----
  // AdamW with decoupled weight decay, bias-corrected, step >= 1:
  //   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (mhat / (sqrt(vhat)+eps) + wd p),
  // where g = grad * grad_scale.
  virtual void adamw_update(float* param, const float* grad, float* m, float* v, size_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int step, float grad_scale) = 0;
  // The same update over many tensors at once: segment s updates params[param_offset, +count)
  // from grads at the same offsets, with moments m, v at [moment_offset, +count), and decays by
  // weight_decay only where s.decay. Segments must not overlap. The default calls adamw_update
  // once per segment; the cuda backend runs all segments in one launch (fused AdamW).
  virtual void adamw_update_segments(float* params, const float* grads, float* m, float* v,
                                     const std::vector<AdamwSegment>& segments, float lr,
                                     float beta1, float beta2, float eps, float weight_decay,
                                     int step, float grad_scale) {
    for (const AdamwSegment& s : segments)
      adamw_update(params + s.param_offset, grads + s.param_offset, m + s.moment_offset,
                   v + s.moment_offset, s.count, lr, beta1, beta2, eps,
                   s.decay ? weight_decay : 0.0f, step, grad_scale);
  }

  // ---- weights ----
  // Promises that nobody writes [params, params + count) until the matching unfreeze_weights(): a
  // backend may then convert those weights once for its matrix products instead of at every
  // product (the cuda backend casts them to bf16 in one launch and keeps the copy: 2 bytes per
  // parameter). Freezes nest: a freeze of the same range while frozen converts nothing again, and
  // each freeze needs its unfreeze; the range ends with the outermost. Model::forward_backward
  // freezes for its call; a trainer freezes around a step's micro-batches so that the weights are
  // converted once per step (FrozenWeights below). A different range while frozen is
  // Error(internal). Default: nothing.
  virtual void freeze_weights(const float* params, size_t count) {
    (void)params;
    (void)count;
  }
  virtual void unfreeze_weights() {}  // ends one freeze
  // Bytes per parameter a freeze keeps while frozen (the cuda backend: 2, its bf16 copy, whose
  // scratch also stays allocated for the next freeze); 0 where freezing converts nothing.
  virtual int frozen_weight_bytes() const { return 0; }

  // ---- bf16 activations ----
  // dst (n) = src rounded to bf16 (bf16_round); dst and src do not overlap. bf16 buffers live in
  // this backend's memory: a float buffer from alloc() holds two bf16 values per float. The
  // default converts on the host after synchronize() (a backend whose memory the host can read);
  // the cuda backend queues a kernel.
  virtual void to_bf16(bf16_t* dst, const float* src, size_t n);
  // dst (n) = src widened to fp32 (exact); as to_bf16.
  virtual void to_fp32(float* dst, const bf16_t* src, size_t n);
  // True when the matrix products, and attention at head dim D, round their inputs to bf16
  // anyway (the cuda backend, where its attention at D runs on bf16 tensor cores): holding those
  // inputs in bf16 then changes none of their uses, so activation_dtype = "auto" means bf16.
  virtual bool bf16_matmul_inputs(int head_dim) const {
    (void)head_dim;
    return false;
  }
  // The ops below are those a block's large activations pass through (norm outputs, qkv, the
  // attention output, the MLP pre-activation and activation), with those tensors in bf16, which
  // a model uses where its activations are bf16 (ModelConfig::bf16_activations): half the bytes
  // to keep and to move. Each computes what the fp32 op of the same name computes from the
  // widened bf16 inputs, and rounds its bf16 outputs once (bf16_round); the fp32 arguments
  // (statistics, log-sum-exp, weights, gradients, the residual stream) mean what they mean there.
  // The defaults do exactly that: widen into temporaries, run the fp32 op, round (any backend;
  // where accepts_host_buffers(), host temporaries kept per calling thread for the life of the
  // process, sized by the largest op seen, about three N x FC floats; else alloc(), freed per
  // op); the cuda backend reads and writes bf16 directly.
  //
  // layernorm_forward with a bf16 out.
  virtual void layernorm_forward(bf16_t* out, float* mean, float* rstd, const float* inp,
                                 const float* weight, const float* bias, int N, int C, float eps);
  // rmsnorm_forward with a bf16 out.
  virtual void rmsnorm_forward(bf16_t* out, float* rstd, const float* inp, const float* weight,
                               int N, int C, float eps);
  // out (N,OC) bf16 = inp (N,IC) @ weight (OC,IC)^T + bias [bias may be null]; no accumulate.
  virtual void linear_forward(bf16_t* out, const bf16_t* inp, const float* weight,
                              const float* bias, int N, int IC, int OC);
  // out (N,OC) fp32 (+= when accumulate) from a bf16 inp: the row-parallel products.
  virtual void linear_forward(float* out, const bf16_t* inp, const float* weight, const float* bias,
                              int N, int IC, int OC, bool accumulate);
  // linear_gelu_forward with bf16 inp, pre and out.
  virtual void linear_gelu_forward(bf16_t* pre, bf16_t* out, const bf16_t* inp,
                                   const float* weight, const float* bias, int N, int IC, int OC);
  // linear_backward with a bf16 inp (the gradients fp32).
  virtual void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const bf16_t* inp, const float* weight, int N, int IC, int OC);
  // gelu_backward with a bf16 inp (the gradients fp32).
  virtual void gelu_backward(float* dinp, const bf16_t* inp, const float* dout, size_t n);
  // swiglu_forward with bf16 inp and out.
  virtual void swiglu_forward(bf16_t* out, const bf16_t* inp, int N, int F);
  // swiglu_backward with a bf16 inp (the gradients fp32).
  virtual void swiglu_backward(float* dinp, const bf16_t* inp, const float* dout, int N, int F);
  // The forward rotation, in place on bf16 x (the backward rotates fp32 gradients: rope above).
  virtual void rope(bf16_t* x, int B, int T, int nh, int D, int row_stride, float theta);
  // attention_forward with bf16 qkv and out (lse fp32).
  virtual void attention_forward(bf16_t* out, float* lse, const bf16_t* qkv, int B, int T, int H,
                                 int KV, int D);
  // attention_backward from bf16 qkv and out (dout, lse and dqkv fp32).
  virtual void attention_backward(float* dqkv, const float* dout, const bf16_t* qkv,
                                  const bf16_t* out, const float* lse, int B, int T, int H, int KV,
                                  int D);

  // ---- ordering ----
  // Ops may be asynchronous (the cuda backend queues them on a stream and returns): the host may
  // read or write an op's buffers directly, or hand them to MPI, only after synchronize(), which
  // waits for every op issued so far and reports a fault in any of them. Ops that return a value
  // to the host (sum_squares, lm_head_cross_entropy), alloc(), and copy() to or from host memory
  // wait for their own work (and everything before it).
  // On the CPU backend every op is complete when it returns and this does nothing.
  virtual void synchronize() {}
};

// Backend::freeze_weights for the guard's lifetime. Nothing may write the range meanwhile.
class FrozenWeights {
 public:
  // Freezes [params, params + count) on `backend`, which must outlive the guard.
  FrozenWeights(Backend& backend, const float* params, size_t count) : backend_(backend) {
    backend_.freeze_weights(params, count);
  }
  // Ends the freeze (Backend::unfreeze_weights).
  ~FrozenWeights() { backend_.unfreeze_weights(); }
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;

 private:
  Backend& backend_;
};

// Creates a backend by name ("cpu"; "cuda" when nuri was built with it). threads <= 0 picks the
// default (cores on this node / ranks on this node). cpu_gemm picks the CPU backend's matrix
// products: "auto" (the default, fp32: see src/backend/cpu/sgemm.hpp), "openblas", "eigen", or
// "bf16" (inputs rounded to bf16, fp32 accumulation; needs AVX512_BF16); process-wide.
// Throws Error(backend) naming what is missing, Error(config) for a bad name.
std::unique_ptr<Backend> make_backend(const std::string& name, int threads = 0,
                                      const std::string& cpu_gemm = "auto");

}  // namespace nuri
NURI_API_END

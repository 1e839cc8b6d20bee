#pragma once
// A decoder-only transformer written for one device.
//
//   gpt2 family:  learned positions, LayerNorm (with bias), GELU MLP, biases on linear layers.
//   llama family: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, no biases.
//
// Parameters and their gradients each live in one flat fp32 buffer owned by the model; every
// tensor is a view into it (see `params()`), which keeps the optimizer, gradient clipping,
// checkpoints and bucketed gradient reduction simple. The model calls no communicator: a
// data-parallel engine (parallel.hpp) learns when gradients are final through a generic hook.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nuri {

class Backend;

struct ModelConfig {
  std::string preset = "gpt2-tiny";  // the preset this config started from
  std::string family = "gpt2";       // "gpt2" | "llama"
  int n_layer = 6;
  int d_model = 384;
  int n_head = 6;
  int n_kv_head = 6;   // == n_head: multi-head attention; smaller: grouped-query attention
  int d_ff = 1536;     // MLP hidden width
  int vocab_size = 8192;
  int max_seq_len = 256;
  bool tied_embeddings = true;  // LM head shares the token embedding
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool recompute = false;  // keep only each block's input; recompute the block in backward

  int head_dim() const { return d_model / n_head; }
  // Throws Error(shape) naming the first inconsistency (e.g. n_head not dividing d_model).
  void validate() const;
  // Parameter count; with_positions=false leaves out the learned position table (for FLOPs).
  int64_t num_params(bool with_positions = true) const;
  // FLOPs of one training token (forward + backward): 6 N + 12 L T d, T = seq_len.
  double train_flops_per_token(int seq_len) const;
};

// Presets: gpt2-tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.5b, llama-tiny, llama-1b, llama-8b,
// llama-70b. Throws Error(config) listing the valid names for an unknown one.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

struct MemoryEstimate {
  double params_bytes, grads_bytes, adam_bytes;       // fp32 each
  double activations_bytes;                           // without recompute
  double activations_recompute_bytes;                 // with recompute
  double total(bool recompute) const {
    return params_bytes + grads_bytes + adam_bytes +
           (recompute ? activations_recompute_bytes : activations_bytes);
  }
};
// Analytic estimate for one micro-batch of B sequences of T tokens on one device, fp32.
MemoryEstimate estimate_memory(const ModelConfig& cfg, int B, int T);

struct ParamTensor {
  std::string name;            // e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;  // e.g. {3*C, C} for a linear layer (out, in)
  size_t offset = 0;           // in floats, into params() / grads()
  size_t numel = 0;
  bool weight_decay = false;   // true for matrices and embeddings, false for norms and biases
};

// A contiguous range of the flat parameter (and gradient) buffer, in floats.
struct ParamRange {
  size_t offset = 0;
  size_t count = 0;
};

// Called during backward with a range of grads() whose values are final for this
// forward_backward: (offset, count) in floats. See Model::set_grad_ready_hook.
using GradReadyHook = std::function<void(size_t offset, size_t count)>;

class Model {
 public:
  // Allocates parameters (zero) and gradients on `backend`, which must outlive the model.
  Model(const ModelConfig& cfg, Backend& backend);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  // GPT-2 initialisation: N(0, 0.02), residual output projections N(0, 0.02/sqrt(2L)), norms 1,
  // biases 0. Deterministic for a seed.
  void init_weights(uint64_t seed);

  float* params() { return params_; }
  const float* params() const { return params_; }
  float* grads() { return grads_; }
  const float* grads() const { return grads_; }
  size_t num_params() const { return num_params_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& tensor(const std::string& name) const;  // throws for an unknown name
  void zero_grads();

  // Training micro-batch: tokens, targets (B,T), targets < 0 ignored. Runs the forward and the
  // backward, ACCUMULATING grad_scale * d(mean loss)/d(params) into grads(). Returns the mean
  // loss of this micro-batch. Throws Error(shape) if T > max_seq_len, Error(data) for a token
  // outside [0, vocab_size).
  float forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                         float grad_scale = 1.0f);
  // Gradient-ready hook: when set, every forward_backward calls it once per entry of
  // grad_ready_order(), in that order, as soon as backward has finished writing that range of
  // grads(): the final norm (and an untied LM head) first, then each block from the last to the
  // first, then the embeddings (with tied embeddings the shared matrix is reported there, after
  // the embedding backward). The ranges are contiguous, disjoint, cover the whole buffer and come
  // in descending offset order. The hook runs on the calling thread between layers. Once reported,
  // a range is not read or written again by that forward_backward, so the hook may hand it to
  // another thread (an asynchronous all-reduce rewriting it in place) while backward goes on. A
  // micro-batch with no valid target still reports every range (its contribution is zero). An
  // empty hook (the default) turns it off. DataParallel (parallel.hpp) starts its bucketed
  // gradient reductions from here; the model itself knows nothing of communication.
  void set_grad_ready_hook(GradReadyHook hook);
  // The ranges the hook reports, in the order it reports them (fixed for the model's lifetime).
  const std::vector<ParamRange>& grad_ready_order() const { return grad_ready_order_; }

  // Mean loss only (evaluation); no gradients, no state kept for a backward.
  float forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Logits (B,T,V) for every position.
  void forward_logits(float* logits, const int32_t* tokens, int B, int T);

  struct Impl;  // opaque: activation buffers and tensor offsets (src/model/model.cpp)

 private:
  ModelConfig cfg_;
  Backend& backend_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  size_t num_params_ = 0;
  std::vector<ParamTensor> tensors_;
  std::vector<ParamRange> grad_ready_order_;
  GradReadyHook grad_ready_hook_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nuri

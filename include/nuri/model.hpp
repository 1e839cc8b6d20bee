#pragma once
// \file
// A decoder-only transformer written for one device.
//
//   gpt2 family:  learned positions, LayerNorm (with bias), GELU MLP, biases on linear layers.
//   llama family: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, no biases.
//
// Parameters and their gradients each live in one flat fp32 buffer owned by the model; every
// tensor is a view into it (see `params()`), which keeps the optimizer, gradient clipping,
// checkpoints and bucketed gradient reduction simple. The model calls no communicator: a
// data-parallel engine (parallel.hpp) learns when gradients are final through a generic hook,
// and tensor parallelism (Megatron style) is given to the model as an abstract set of
// collectives, TensorParallelOps, built over a Communicator by tensor_parallel.hpp.
//
// Tensor parallelism over p ranks (rank r), when the model is built with TensorParallelOptions:
//   attention   q heads split: rank r has heads [r H/p, (r+1) H/p) (H % p == 0); kv heads split
//               the same way when KV % p == 0, else replicated: rank r has kv head r KV / p
//               (p % KV == 0; the p/KV ranks sharing a kv head sum its weight gradients)
//   attn.qkv    column-parallel: local rows [q_r | k_r | v_r], (H_r + 2 KV_r) D of them
//   attn.proj   row-parallel: columns of the rank's q heads; bias replicated
//   mlp.fc      column-parallel over F (block_range(F, p, r)); llama: local rows [gate_r | up_r]
//   mlp.proj    row-parallel over F; bias replicated
//   wte/lm_head vocab-parallel: rows block_range(V, p, r); the loss is a vocab-parallel
//               softmax cross-entropy (no rank holds a full row of logits)
//   norms, wpe  replicated (identical gradients on every rank)
// One all-reduce per attention and per MLP in the forward (after the row-parallel product) and
// in the backward (after the column-parallel input gradient), plus the embedding and the loss.
// Sequence parallelism (optional): the residual stream and the norms hold N/p rows per rank
// (N = B*T must divide); the all-reduces become reduce-scatter (forward) and all-gather
// (before each column-parallel product), the same bytes on the wire with 1/p of the norm work
// and activations; norm weight gradients are partial per rank and summed over the group.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class Backend;

// The shape of a model (the config keys under [model]). Start from model_preset() and change fields;
// validate() checks them (the Model constructor calls it).
struct ModelConfig {
  std::string preset = "gpt2-tiny";  // the preset this config started from
  std::string family = "gpt2";       // "gpt2" | "llama"
  int n_layer = 6;                   // transformer blocks
  int d_model = 384;                 // model width C
  int n_head = 6;                    // attention (query) heads H; must divide d_model
  int n_kv_head = 6;   // == n_head: multi-head attention; smaller: grouped-query attention
  int d_ff = 1536;     // MLP hidden width
  int vocab_size = 8192;             // V; at least the tokenizer's vocabulary
  int max_seq_len = 256;             // longest sequence (gpt2: rows of the position table)
  bool tied_embeddings = true;  // LM head shares the token embedding
  float norm_eps = 1e-5f;            // epsilon of LayerNorm / RMSNorm
  float rope_theta = 10000.0f;       // RoPE base (llama)
  bool recompute = false;  // keep only each block's input; recompute the block in backward
  // The type of the blocks' large activations (the norm outputs, qkv, the attention output, the
  // MLP pre-activation and activation), between the ops and as kept for the backward: "fp32",
  // "bf16" (half their memory and bytes moved; the norms' statistics, the attention's
  // log-sum-exp, the residual stream and all gradients stay fp32), or "auto": bf16 where the
  // backend's matrix products round their inputs to bf16 anyway (Backend::bf16_matmul_inputs:
  // the cuda backend with head dim 64 or 128, whose attention is bf16 too), fp32 elsewhere.
  // A run setting.
  std::string activation_dtype = "auto";

  int head_dim() const { return d_model / n_head; }  // D = d_model / n_head
  // activation_dtype resolved: true for "bf16", and for "auto" on a backend whose products round
  // their inputs to bf16 anyway (Backend::bf16_matmul_inputs(head_dim())).
  bool bf16_activations(bool bf16_matmul_inputs) const {
    return activation_dtype == "bf16" || (activation_dtype == "auto" && bf16_matmul_inputs);
  }
  // Throws Error(shape) naming the first inconsistency (e.g. n_head not dividing d_model).
  void validate() const;
  // Parameter count; with_positions=false leaves out the learned position table (for FLOPs).
  int64_t num_params(bool with_positions = true) const;
  // FLOPs of one training token (forward + backward): 6 N + 12 L T d, T = seq_len (PaLM's count,
  // as llm.c and nanoGPT use: attention over the full T x T scores, not only the causal half).
  double train_flops_per_token(int seq_len) const;
};

// Presets: gpt2-tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.5b, llama-tiny, llama-1b, llama-8b,
// llama-70b. Throws Error(config) listing the valid names for an unknown one.
ModelConfig model_preset(const std::string& name);
// The names model_preset() accepts, in the order above.
std::vector<std::string> model_preset_names();

// Bytes one device needs to train a model (estimate_memory), by part.
struct MemoryEstimate {
  double params_bytes = 0;                            // parameters, fp32
  double grads_bytes = 0;                             // gradients, fp32
  double adam_bytes = 0;                              // both AdamW moments, fp32
  double activations_bytes = 0;                       // without recompute (bf16 ones as BackendMemoryFacts say)
  double activations_recompute_bytes = 0;             // with recompute
  double weight_copy_bytes = 0;  // the backend's converted weights (cuda: bf16, 2 bytes per parameter)
  // The sum, with the activations of recompute on or off.
  double total(bool recompute) const {
    return params_bytes + grads_bytes + adam_bytes + weight_copy_bytes +
           (recompute ? activations_recompute_bytes : activations_bytes);
  }
};
// What estimate_memory needs to know of the backend that will run the model (memory_facts).
struct BackendMemoryFacts {
  bool bf16_matmul_inputs = false;  // Backend::bf16_matmul_inputs(head_dim()): "auto" means bf16
  int frozen_weight_bytes = 0;      // Backend::frozen_weight_bytes(): its weight copy, per parameter
};
// The facts of `backend` for a model of `cfg`.
BackendMemoryFacts memory_facts(const Backend& backend, const ModelConfig& cfg);
// Analytic estimate for one micro-batch of B sequences of T tokens on one device, fp32 state. The
// default facts are the CPU backend's; activation_dtype = "auto" follows
// facts.bf16_matmul_inputs (ModelConfig::bf16_activations).
MemoryEstimate estimate_memory(const ModelConfig& cfg, int B, int T,
                               const BackendMemoryFacts& facts = {});

// Under tensor parallelism a rank holds a slice of a tensor: runs of rows (dimension 0) or of
// columns (dimension 1, a matrix) of the full tensor. A piece maps `length` local indices from
// `local_start` to full indices from `full_start` along `dim`.
struct ShardPiece {
  int64_t local_start = 0;  // first index along dim in this rank's tensor
  int64_t full_start = 0;   // ... and in the full tensor
  int64_t length = 0;       // indices in the piece
  // TP ranks holding this same piece (1: split; p: replicated; p/KV: a shared kv head).
  int replicas = 1;
};

// One named tensor of a model: a view into its flat parameter (and gradient) buffer.
struct ParamTensor {
  std::string name;            // e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;  // this rank's shape, e.g. {3*C, C} for a linear layer (out, in)
  size_t offset = 0;           // in floats, into params() / grads()
  size_t numel = 0;            // elements (the product of shape)
  bool weight_decay = false;   // true for matrices and embeddings, false for norms and biases
  // The tensor on one process; equals `shape` without tensor parallelism.
  std::vector<int64_t> full_shape;
  // Tensor parallelism: the dimension the pieces index (0 rows, 1 columns) and the pieces, which
  // cover `shape[dim]`. A replicated tensor has dim 0 and one piece of the whole with replicas p.
  int dim = 0;
  std::vector<ShardPiece> pieces;  // this rank's runs of the full tensor along dim
};

// The collectives a tensor-parallel model needs. The model calls these and nothing else of
// communication; make_tensor_parallel_ops (tensor_parallel.hpp) builds them over the TP group of
// a ProcessGrid. Every rank of the group must make the same calls in the same order. Buffers are
// host memory (the CPU backend's). Errors are the communicator's (Error(backend)).
class TensorParallelOps {
 public:
  virtual ~TensorParallelOps() = default;
  virtual int size() const = 0;  // p
  virtual int rank() const = 0;  // r in [0, p)
  // x[i] = sum over the group of x[i], in place.
  virtual void all_reduce_sum(float* x, size_t count) = 0;
  // x[i] = max over the group of x[i], in place.
  virtual void all_reduce_max(float* x, size_t count) = 0;
  // full (p * count) = the ranks' `part` (count each) in rank order.
  virtual void all_gather(float* full, const float* part, size_t count) = 0;
  // part (count) = rank r's block [r count, (r+1) count) of the sum over the group of full.
  virtual void reduce_scatter(float* part, const float* full, size_t count) = 0;

  // What the calls above cost since reset_stats(): every one blocks the caller, so under tensor
  // parallelism all of this time is exposed communication. (An implementation may keep none.)
  struct Stats {
    uint64_t calls = 0;  // collectives called
    double bytes = 0;    // payload of the calls (count x 4 per rank; all_gather: the full buffer)
    double seconds = 0;  // wall time inside the calls
  };
  virtual Stats stats() const { return {}; }  // the counters since reset_stats()
  virtual void reset_stats() {}               // zeroes the counters
};

// How a Model is split over a tensor-parallel group (see the top of this file).
struct TensorParallelOptions {
  std::shared_ptr<TensorParallelOps> ops;  // null or size 1: no tensor parallelism
  bool sequence_parallel = false;          // split the norm regions over rows (see above)
};

// The parameter layout of `cfg` on TP rank `tp_rank` of `tp_size` (1, 0: one process): every
// tensor with its local and full shape, offset and pieces. Throws Error(config) when the heads,
// kv heads, MLP width or vocabulary cannot be split over tp_size, saying which and what would.
std::vector<ParamTensor> parameter_layout(const ModelConfig& cfg, int tp_size = 1, int tp_rank = 0);

// Calls fn(full_offset, local_offset, count) for each run of elements of the full tensor (row-
// major offsets) that local elements [lo, hi) of `t` are (offsets within the tensor): one run per
// piece for a row split, one per piece and row for a column split. tp_rank >= 0: only the pieces
// that rank is the first holder of (tp_rank % replicas == 0); -1: every piece. The mapping behind
// slice_from_full, place_into_full and the checkpoint files.
void for_each_full_run(const ParamTensor& t, size_t lo, size_t hi, int tp_rank,
                       const std::function<void(size_t full_offset, size_t local_offset, size_t count)>& fn);
// Copies a rank's slice of tensor `t` out of the full tensor: local (numel floats, t.shape) from
// full (t.full_shape).
void slice_from_full(const ParamTensor& t, const float* full, float* local);
// The inverse: writes the slice into its place in full. With tp_rank >= 0 only the pieces this
// rank is the first holder of (tp_rank % replicas == 0), so that the ranks' writes into zeroed
// buffers sum to the full tensor (tensor_parallel.hpp gathers so); tp_rank < 0 writes all.
void place_into_full(const ParamTensor& t, const float* local, float* full, int tp_rank = -1);

// A contiguous range of the flat parameter (and gradient) buffer, in floats.
struct ParamRange {
  size_t offset = 0;  // first float
  size_t count = 0;   // floats
};

// Called during backward with a range of grads() whose values are final for this
// forward_backward: (offset, count) in floats. See Model::set_grad_ready_hook.
using GradReadyHook = std::function<void(size_t offset, size_t count)>;

// What nuri's optimizer (AdamW, optim.hpp) and data-parallel engine (DataParallel, parallel.hpp)
// need of a model: a flat fp32 parameter buffer and its gradient buffer (host memory on the CPU
// backend), named tensors over them, a training forward/backward that accumulates gradients,
// and the grad-ready hook. Model implements it; so can a model of your own
// (examples/installed/custom_decoder.cpp), which then trains with nuri's engine. The contracts
// are Model's (below): forward_backward accumulates grad_scale * d(mean loss)/d(params) and, when
// a hook is set, reports every range of grad_ready_order() once, in order, as it becomes final.
// On an asynchronous backend (cuda) the buffers are in memory when a call returns; inside the hook
// "final" means final in the backend's queue: call Backend::synchronize() before the host reads
// the range or hands it to MPI (DataParallel does, once per bucket it starts).
class Trainable {
 public:
  virtual ~Trainable() = default;
  virtual float* params() = 0;                // num_params() floats
  virtual const float* params() const = 0;    // num_params() floats
  virtual float* grads() = 0;                 // num_params() floats, laid out as params()
  virtual const float* grads() const = 0;     // num_params() floats, laid out as params()
  virtual size_t num_params() const = 0;      // floats in each buffer
  // The named views into the buffers, sorted by offset and tiling them (weight_decay is read by
  // AdamW; full_shape, dim and pieces by DataParallel under tensor parallelism).
  virtual const std::vector<ParamTensor>& tensors() const = 0;
  virtual void zero_grads() = 0;  // grads() = 0
  // One micro-batch: tokens, targets (B,T), targets < 0 ignored; returns its mean loss.
  virtual float forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                                 float grad_scale = 1.0f) = 0;
  virtual void set_grad_ready_hook(GradReadyHook hook) = 0;  // an empty hook turns it off
  // Contiguous, disjoint ranges covering the buffer, in descending offset order.
  virtual const std::vector<ParamRange>& grad_ready_order() const = 0;
  virtual int tp_size() const { return 1; }  // TP ranks the model is split over
};

// nuri's decoder (see the top of this file): gpt2 and llama families, optionally tensor-parallel.
// Not thread-safe: one thread calls it (a DataParallel engine's communication thread only
// touches gradient ranges the hook has handed over).
class Model : public Trainable {
 public:
  // Allocates parameters (zero) and gradients on `backend`, which must outlive the model. With
  // `tp`, this rank's slices (see the top of this file; forward and backward are then collective
  // over the group). Throws Error(config) for a config that cannot be split over tp.
  Model(const ModelConfig& cfg, Backend& backend, TensorParallelOptions tp = {});
  ~Model() override;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }  // the validated config
  int tp_size() const override { return tp_size_; }    // TP ranks (1: not split)
  int tp_rank() const { return tp_rank_; }             // this rank in the TP group
  bool sequence_parallel() const { return sequence_parallel_; }  // SP norm regions on
  TensorParallelOps* tp_ops() const { return tp_.get(); }  // null without tensor parallelism
  // GPT-2 initialisation: N(0, 0.02), residual output projections N(0, 0.02/sqrt(2L)), norms 1,
  // biases 0. Deterministic for a seed, and the same full tensors at any TP degree (each rank
  // draws the full tensor and keeps its slice).
  void init_weights(uint64_t seed);

  float* params() override { return params_; }               // this rank's parameters
  const float* params() const override { return params_; }   // this rank's parameters
  float* grads() override { return grads_; }                 // their gradients
  const float* grads() const override { return grads_; }     // their gradients
  size_t num_params() const override { return num_params_; } // floats on this rank
  const std::vector<ParamTensor>& tensors() const override { return tensors_; }
  const ParamTensor& tensor(const std::string& name) const;  // throws for an unknown name
  void zero_grads() override;                                // grads() = 0
  // Bytes of backend memory held for activations (sized by the last call; 0 before the first).
  size_t activation_bytes() const;
  // Whether the blocks' large activations are bf16, between the ops and for the backward
  // (ModelConfig::activation_dtype, resolved for this model's backend: bf16_activations).
  bool bf16_activations() const;

  // Training micro-batch: tokens, targets (B,T), targets < 0 ignored. Runs the forward and the
  // backward, ACCUMULATING grad_scale * d(mean loss)/d(params) into grads(). Returns the mean
  // loss of this micro-batch. Throws Error(shape) if T > max_seq_len, Error(data) for a token
  // outside [0, vocab_size).
  float forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                         float grad_scale = 1.0f) override;
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
  void set_grad_ready_hook(GradReadyHook hook) override;
  // The ranges the hook reports, in the order it reports them (fixed for the model's lifetime).
  const std::vector<ParamRange>& grad_ready_order() const override { return grad_ready_order_; }

  // Mean loss only (evaluation); no gradients, no state kept for a backward.
  float forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Logits (B,T,V) for every position (the full vocabulary on every TP rank).
  void forward_logits(float* logits, const int32_t* tokens, int B, int T);

  struct Impl;  // opaque: activation buffers and tensor offsets (src/model/model.cpp)

 private:
  ModelConfig cfg_;
  Backend& backend_;
  std::shared_ptr<TensorParallelOps> tp_;  // null without tensor parallelism
  int tp_size_ = 1, tp_rank_ = 0;
  bool sequence_parallel_ = false;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  size_t num_params_ = 0;
  std::vector<ParamTensor> tensors_;
  std::vector<ParamRange> grad_ready_order_;
  GradReadyHook grad_ready_hook_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nuri
NURI_API_END

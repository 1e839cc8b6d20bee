// The decoder: embedding, n_layer blocks (norm, attention, norm, MLP), final norm, fused LM head
// and loss. Forward and backward are written out per block; see model.hpp for the families and
// for the tensor-parallel split (TP below), whose collectives come from TensorParallelOps.
//
// Activations for B*T = N rows (fp32, or bf16 where marked below); under TP, H, KV, F and V below are this rank's counts and
// Nl = N/p under sequence parallelism (SP), else N:
//   res[l]            (Nl,C)     input of block l (res[L] is the last block's output)
//   per block (kept for every block, or for one block when recomputing):
//     ln1, ln2        (N,C)      norm outputs (under SP: this rank's Nl rows, then all-gathered;
//                                in bf16, gathered in fp32 through `full` and rounded after)
//     mean/rstd       (Nl)       norm statistics (mean1/rstd1, mean2/rstd2)
//     qkv             (N,QKV)    QKV = (H+2KV)*D, after RoPE for llama
//     att             (N,H*D)    attention output;  lse (B,H,T)
//     mid             (Nl,C)     residual after attention
//     fc              (N,FC)     MLP pre-activation, FC = F (gpt2) or 2F (llama: [gate | up])
//     act             (N,F)      GELU / SwiGLU output
//   Where the activations are bf16 (ModelConfig::bf16_activations) ln1, qkv, att, ln2, fc and act are
//   bf16 (bf16_t) between the ops and for the backward (Backend's bf16 activation ops); the
//   statistics, lse and mid stay fp32, as do the residual stream and every gradient.
//   head: lnf (N,C), meanf/rstdf (Nl)
// Gradient scratch (one block at a time): dres (Nl,C), dln (N,C), datt (N,H*D), dqkv (N,QKV),
// dfc (N,FC), dact (N,F); under TP also full (N,C): the row-parallel partial sums in forward,
// the all-gathered residual gradient in backward under SP, and under SP with bf16 activations
// each norm's fp32 output while it is gathered (so nothing may keep `full` across a norm).
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>

#include "backend/lm_head.hpp"  // lm_head_chunk_rows
#include "nuri/backend.hpp"
#include "nuri/comm.hpp"  // block_range
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/rng.hpp"

namespace nuri {

namespace {

// Views of one block's parameters (or of its gradients: same layout, other base pointer).
struct BlockParams {
  float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w,
      *mlp_proj_b;
};

// One block's activations (the top of this file). A = float, or bf16_t where the model's
// activations are bf16: the large tensors are A, the statistics, lse and mid fp32.
template <class A>
struct BlockActs {
  A *ln1, *qkv, *att, *ln2, *fc, *act;
  float *mean1, *rstd1, *lse, *mid, *mean2, *rstd2;
};

// The model's collectives run on backend memory that MPI reads and writes from the host, so each
// one first waits for the backend's queued work (Backend::synchronize; nothing on the CPU).
class SynchronizedTensorParallelOps final : public TensorParallelOps {
 public:
  SynchronizedTensorParallelOps(std::shared_ptr<TensorParallelOps> ops, Backend& backend)
      : ops_(std::move(ops)), backend_(backend) {}
  int size() const override { return ops_->size(); }
  int rank() const override { return ops_->rank(); }
  void all_reduce_sum(float* x, size_t count) override {
    backend_.synchronize();
    ops_->all_reduce_sum(x, count);
  }
  void all_reduce_max(float* x, size_t count) override {
    backend_.synchronize();
    ops_->all_reduce_max(x, count);
  }
  void all_gather(float* full, const float* part, size_t count) override {
    backend_.synchronize();
    ops_->all_gather(full, part, count);
  }
  void reduce_scatter(float* part, const float* full, size_t count) override {
    backend_.synchronize();
    ops_->reduce_scatter(part, full, count);
  }
  Stats stats() const override { return ops_->stats(); }
  void reset_stats() override { ops_->reset_stats(); }

 private:
  std::shared_ptr<TensorParallelOps> ops_;
  Backend& backend_;
};

}  // namespace

struct Model::Impl {
  // Offsets (in floats) of each block's tensors; SIZE_MAX where the family has none.
  struct BlockOffsets {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, mlp_proj_w,
        mlp_proj_b;
  };
  std::vector<BlockOffsets> blocks;
  size_t wte = 0, wpe = SIZE_MAX, lnf_w = 0, lnf_b = SIZE_MAX, head = 0;

  // Activation arena, sized for `rows` = B*T and `sets` block activation sets.
  Backend* backend = nullptr;
  float* arena = nullptr;
  int arena_rows = 0, arena_sets = 0, arena_B = 0, arena_Nl = 0;  // what the arena was sized for
  size_t arena_floats = 0;
  std::vector<float*> res;
  // The blocks' activation sets: one per block when the backward follows without recompute,
  // else one; fp32 (acts) or, where the activations are bf16 (resolved at construction), acts16.
  bool bf16 = false;
  std::vector<BlockActs<float>> acts;
  std::vector<BlockActs<bf16_t>> acts16;
  float *lnf = nullptr, *meanf = nullptr, *rstdf = nullptr;
  float *dres = nullptr, *dln = nullptr, *datt = nullptr, *dqkv = nullptr, *dfc = nullptr,
        *dact = nullptr;
  float* full = nullptr;  // (N,C) TP scratch

  // Tensor parallelism (see model.hpp); tp null on one process.
  TensorParallelOps* tp = nullptr;
  bool sp = false;
  int H = 0, KV = 0, F = 0, V = 0;  // this rank's q heads, kv heads, MLP units, vocabulary ids
  int vocab_start = 0;            // this rank's first vocabulary id
  int kv_slot = 0, kv_slots = 1;  // replicated kv heads: this rank's kv head, of KV
  bool kv_shared = false;         // kv heads replicated over p/KV ranks
  std::vector<int32_t> local_tokens;           // tokens in this rank's vocabulary slice, else -1
  std::vector<float> snapshot, slots;          // partial-gradient reduction scratch
  float* head_stats = nullptr;                 // vocab-parallel loss: per-row statistics (backend memory)
  size_t head_stats_floats = 0;
  float* head_logits = nullptr;                // vocab-parallel loss: one chunk of logits
  size_t head_logits_floats = 0;
  float* out_logits = nullptr;                 // forward_logits' staging, for backends that need it
  size_t out_logits_floats = 0;

  ~Impl() {
    if (head_stats) backend->free(head_stats);
    if (out_logits) backend->free(out_logits);
    if (head_logits) backend->free(head_logits);
    if (arena) backend->free(arena);
  }

  static float* at(float* base, size_t off) { return off == SIZE_MAX ? nullptr : base + off; }
  BlockParams view(float* base, int l) const {
    const BlockOffsets& o = blocks[l];
    return {at(base, o.ln1_w),  at(base, o.ln1_b),  at(base, o.qkv_w), at(base, o.qkv_b),
            at(base, o.proj_w), at(base, o.proj_b), at(base, o.ln2_w), at(base, o.ln2_b),
            at(base, o.fc_w),   at(base, o.fc_b),   at(base, o.mlp_proj_w),
            at(base, o.mlp_proj_b)};
  }
};

namespace {

// The sizes a rank holds under TP, checked (see the split at the top of model.hpp).
struct TpSplit {
  int p = 1, r = 0;
  int H_r = 0, q_head0 = 0;         // q heads
  int KV_r = 0, kv_head0 = 0;       // kv heads held (first one, in full numbering)
  int kv_replicas = 1;              // ranks holding the same kv heads
  BlockRange f, v;                  // MLP hidden units and vocabulary ids
};

std::string divisors_up_to(int n, int limit) {
  std::string out;
  for (int d = 1; d <= std::min(n, limit); ++d)
    if (n % d == 0) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return out;
}

TpSplit tp_split(const ModelConfig& c, int p, int r) {
  const char* op = "tensor parallel";
  NURI_CHECK(p >= 1 && r >= 0 && r < p, config, op, "TP rank " << r << " of " << p << " is not a valid rank");
  TpSplit s;
  s.p = p;
  s.r = r;
  NURI_CHECK(c.n_head % p == 0, config, op,
             "parallel.tp = " << p << " does not divide model.n_head = " << c.n_head
                              << ": attention is split by heads; tp must be one of " << divisors_up_to(c.n_head, 1 << 20));
  NURI_CHECK(c.n_kv_head % p == 0 || p % c.n_kv_head == 0, config, op,
             "parallel.tp = " << p << " and model.n_kv_head = " << c.n_kv_head
                              << ": kv heads are split when tp divides n_kv_head and replicated when n_kv_head divides "
                              << "tp; neither holds. Choose tp among " << divisors_up_to(c.n_kv_head, 1 << 20)
                              << " or a multiple of " << c.n_kv_head << " that divides n_head = " << c.n_head);
  NURI_CHECK(c.d_ff >= p && c.vocab_size >= p, config, op,
             "parallel.tp = " << p << " is larger than model.d_ff = " << c.d_ff << " or model.vocab_size = "
                              << c.vocab_size << "; every rank needs at least one MLP unit and one vocabulary id");
  s.H_r = c.n_head / p;
  s.q_head0 = r * s.H_r;
  if (c.n_kv_head % p == 0) {
    s.KV_r = c.n_kv_head / p;
    s.kv_head0 = r * s.KV_r;
  } else {
    s.KV_r = 1;
    s.kv_replicas = p / c.n_kv_head;
    s.kv_head0 = r / s.kv_replicas;  // the kv head of this rank's q heads
  }
  s.f = block_range(size_t(c.d_ff), p, r);
  s.v = block_range(size_t(c.vocab_size), p, r);
  return s;
}

}  // namespace

std::vector<ParamTensor> parameter_layout(const ModelConfig& cfg, int tp_size, int tp_rank) {
  cfg.validate();
  const TpSplit s = tp_split(cfg, tp_size, tp_rank);
  const int p = s.p;
  const int64_t C = cfg.d_model, F = cfg.d_ff, V = cfg.vocab_size, D = cfg.head_dim();
  const int64_t H = cfg.n_head, KV = cfg.n_kv_head;
  const int64_t Hr = s.H_r, KVr = s.KV_r, Fr = int64_t(s.f.count), Vr = int64_t(s.v.count);
  const bool gpt2 = cfg.family == "gpt2";

  std::vector<ParamTensor> out;
  size_t offset = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> full_shape,
                 bool decay, int dim, std::vector<ShardPiece> pieces) {
    ParamTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.full_shape = std::move(full_shape);
    t.numel = 1;
    for (int64_t d : t.shape) t.numel *= size_t(d);
    t.offset = offset;
    t.weight_decay = decay;
    t.dim = dim;
    t.pieces = std::move(pieces);
    offset += t.numel;
    out.push_back(std::move(t));
  };
  auto replicated = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    const int64_t n = shape[0];
    add(name, shape, shape, decay, 0, {{0, 0, n, p}});
  };
  // Split along rows (dim 0): `pieces` of (local start, full start, length).
  auto rows = [&](const std::string& name, int64_t local_rows, std::vector<int64_t> full_shape,
                  std::vector<int64_t> rest, bool decay, std::vector<ShardPiece> pieces) {
    std::vector<int64_t> shape = {local_rows};
    shape.insert(shape.end(), rest.begin(), rest.end());
    add(name, shape, std::move(full_shape), decay, 0, std::move(pieces));
  };
  const std::vector<ShardPiece> vocab = {{0, int64_t(s.v.offset), Vr, 1}};
  rows("wte", Vr, {V, C}, {C}, true, vocab);
  if (gpt2) replicated("wpe", {cfg.max_seq_len, C}, true);
  // qkv rows: [q heads | k heads | v heads] of this rank.
  const std::vector<ShardPiece> qkv = {{0, s.q_head0 * D, Hr * D, 1},
                                       {Hr * D, (H + s.kv_head0) * D, KVr * D, s.kv_replicas},
                                       {(Hr + KVr) * D, (H + KV + s.kv_head0) * D, KVr * D, s.kv_replicas}};
  const int64_t QKVr = (Hr + 2 * KVr) * D, QKV = (H + 2 * KV) * D;
  const std::vector<ShardPiece> fc = gpt2 ? std::vector<ShardPiece>{{0, int64_t(s.f.offset), Fr, 1}}
                                          : std::vector<ShardPiece>{{0, int64_t(s.f.offset), Fr, 1},
                                                                    {Fr, F + int64_t(s.f.offset), Fr, 1}};
  const int64_t FCr = gpt2 ? Fr : 2 * Fr, FC = gpt2 ? F : 2 * F;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    replicated(b + "ln1.weight", {C}, false);
    if (gpt2) replicated(b + "ln1.bias", {C}, false);
    rows(b + "attn.qkv.weight", QKVr, {QKV, C}, {C}, true, qkv);
    if (gpt2) rows(b + "attn.qkv.bias", QKVr, {QKV}, {}, false, qkv);
    add(b + "attn.proj.weight", {C, Hr * D}, {C, H * D}, true, 1, {{0, s.q_head0 * D, Hr * D, 1}});
    if (gpt2) replicated(b + "attn.proj.bias", {C}, false);
    replicated(b + "ln2.weight", {C}, false);
    if (gpt2) replicated(b + "ln2.bias", {C}, false);
    rows(b + "mlp.fc.weight", FCr, {FC, C}, {C}, true, fc);
    if (gpt2) rows(b + "mlp.fc.bias", FCr, {FC}, {}, false, fc);
    add(b + "mlp.proj.weight", {C, Fr}, {C, F}, true, 1, {{0, int64_t(s.f.offset), Fr, 1}});
    if (gpt2) replicated(b + "mlp.proj.bias", {C}, false);
  }
  replicated("ln_f.weight", {C}, false);
  if (gpt2) replicated("ln_f.bias", {C}, false);
  if (!cfg.tied_embeddings) rows("lm_head.weight", Vr, {V, C}, {C}, true, vocab);
  return out;
}

void for_each_full_run(const ParamTensor& t, size_t lo, size_t hi, int tp_rank,
                       const std::function<void(size_t full_offset, size_t local_offset, size_t count)>& fn) {
  auto mine = [&](const ShardPiece& pc) { return tp_rank < 0 || tp_rank % pc.replicas == 0; };
  if (t.dim == 0) {  // row pieces: one run each
    const size_t inner = t.shape.empty() || t.shape[0] == 0 ? 1 : t.numel / size_t(t.shape[0]);
    for (const ShardPiece& pc : t.pieces) {
      if (!mine(pc)) continue;
      const size_t begin = size_t(pc.local_start) * inner, end = begin + size_t(pc.length) * inner;
      const size_t a = std::max(lo, begin), b = std::min(hi, end);
      if (a < b) fn(size_t(pc.full_start) * inner + (a - begin), a, b - a);
    }
    return;
  }
  const size_t lc = size_t(t.shape[1]), fc = size_t(t.full_shape[1]);  // column pieces: a run per row
  for (size_t row = lo / lc; row * lc < hi; ++row) {
    for (const ShardPiece& pc : t.pieces) {
      if (!mine(pc)) continue;
      const size_t begin = row * lc + size_t(pc.local_start), end = begin + size_t(pc.length);
      const size_t a = std::max(lo, begin), b = std::min(hi, end);
      if (a < b) fn(row * fc + size_t(pc.full_start) + (a - begin), a, b - a);
    }
  }
}

void slice_from_full(const ParamTensor& t, const float* full, float* local) {
  for_each_full_run(t, 0, t.numel, -1, [&](size_t f, size_t l, size_t n) { std::copy_n(full + f, n, local + l); });
}

void place_into_full(const ParamTensor& t, const float* local, float* full, int tp_rank) {
  for_each_full_run(t, 0, t.numel, tp_rank, [&](size_t f, size_t l, size_t n) { std::copy_n(local + l, n, full + f); });
}

Model::Model(const ModelConfig& cfg, Backend& backend, TensorParallelOptions tp)
    : cfg_(cfg), backend_(backend), impl_(std::make_unique<Impl>()) {
  cfg_.validate();
  impl_->backend = &backend;
  if (tp.ops && tp.ops->size() > 1) {
    tp_ = std::make_shared<SynchronizedTensorParallelOps>(std::move(tp.ops), backend);
    tp_size_ = tp_->size();
    tp_rank_ = tp_->rank();
    sequence_parallel_ = tp.sequence_parallel;
  }
  const TpSplit split = tp_split(cfg_, tp_size_, tp_rank_);
  impl_->tp = tp_.get();
  impl_->sp = sequence_parallel_;
  impl_->H = split.H_r;
  impl_->KV = split.KV_r;
  impl_->F = int(split.f.count);
  impl_->V = int(split.v.count);
  impl_->vocab_start = int(split.v.offset);
  impl_->kv_shared = split.kv_replicas > 1;
  impl_->kv_slot = split.kv_head0;
  impl_->kv_slots = cfg_.n_kv_head;
  impl_->bf16 = cfg_.bf16_activations(backend.bf16_matmul_inputs(cfg_.head_dim()));

  tensors_ = parameter_layout(cfg_, tp_size_, tp_rank_);
  auto offset_of = [&](const std::string& name) {
    for (const ParamTensor& t : tensors_)
      if (t.name == name) return t.offset;
    return SIZE_MAX;
  };
  impl_->wte = offset_of("wte");
  impl_->wpe = offset_of("wpe");
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    Impl::BlockOffsets o;
    o.ln1_w = offset_of(p + "ln1.weight");
    o.ln1_b = offset_of(p + "ln1.bias");
    o.qkv_w = offset_of(p + "attn.qkv.weight");
    o.qkv_b = offset_of(p + "attn.qkv.bias");
    o.proj_w = offset_of(p + "attn.proj.weight");
    o.proj_b = offset_of(p + "attn.proj.bias");
    o.ln2_w = offset_of(p + "ln2.weight");
    o.ln2_b = offset_of(p + "ln2.bias");
    o.fc_w = offset_of(p + "mlp.fc.weight");
    o.fc_b = offset_of(p + "mlp.fc.bias");
    o.mlp_proj_w = offset_of(p + "mlp.proj.weight");
    o.mlp_proj_b = offset_of(p + "mlp.proj.bias");
    impl_->blocks.push_back(o);
  }
  impl_->lnf_w = offset_of("ln_f.weight");
  impl_->lnf_b = offset_of("ln_f.bias");
  impl_->head = cfg_.tied_embeddings ? impl_->wte : offset_of("lm_head.weight");

  num_params_ = tensors_.back().offset + tensors_.back().numel;
  if (tp_size_ == 1 && int64_t(num_params_) != cfg_.num_params()) {
    NURI_THROW(internal, "Model", "parameter layout has " << num_params_ << " floats but "
                                  << "ModelConfig::num_params() says " << cfg_.num_params());
  }
  params_ = backend_.alloc(num_params_);
  grads_ = backend_.alloc(num_params_);

  // The order in which backward finishes the gradients (see set_grad_ready_hook): the head
  // (final norm, and lm_head when untied: both at the end of the buffer), blocks last to first,
  // then the embeddings (wte, which a tied head shares, and wpe).
  const size_t head_start = impl_->lnf_w;
  grad_ready_order_.push_back({head_start, num_params_ - head_start});
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const size_t begin = impl_->blocks[l].ln1_w;
    const size_t end = l + 1 < cfg_.n_layer ? impl_->blocks[l + 1].ln1_w : head_start;
    grad_ready_order_.push_back({begin, end - begin});
  }
  grad_ready_order_.push_back({0, impl_->blocks.empty() ? head_start : impl_->blocks[0].ln1_w});
}

void Model::set_grad_ready_hook(GradReadyHook hook) { grad_ready_hook_ = std::move(hook); }

size_t Model::activation_bytes() const { return impl_->arena_floats * sizeof(float); }
bool Model::bf16_activations() const { return impl_->bf16; }

Model::~Model() {
  impl_.reset();
  backend_.free(params_);
  backend_.free(grads_);
}

const ParamTensor& Model::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  NURI_THROW(config, "Model::tensor", "no parameter named '" << name << "' in this "
                                      << cfg_.family << " model");
}

void Model::zero_grads() {
  backend_.zero(grads_, num_params_);
  backend_.synchronize();
}

void Model::init_weights(uint64_t seed) {
  // Host-side init; the CPU backend's memory is host memory. (A device backend copies.)
  std::vector<float> host(num_params_);
  const double residual_std = 0.02 / std::sqrt(2.0 * cfg_.n_layer);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const ParamTensor& t = tensors_[i];
    float* p = host.data() + t.offset;
    const bool is_norm = t.name.find("ln") != std::string::npos && t.name.find(".weight") != std::string::npos &&
                         t.shape.size() == 1;
    if (t.shape.size() == 1) {
      std::fill(p, p + t.numel, is_norm ? 1.0f : 0.0f);
      continue;
    }
    const bool residual_out = t.name.ends_with("attn.proj.weight") || t.name.ends_with("mlp.proj.weight");
    const double std_dev = residual_out ? residual_std : 0.02;
    Rng rng(seed, uint64_t(i) << 40);  // one stream per tensor: independent of layout changes
    // The full tensor is drawn on every TP rank, which keeps its slice: the same model at any tp.
    size_t full_numel = 1;
    for (int64_t d : t.full_shape) full_numel *= size_t(d);
    std::vector<float> full(full_numel);
    for (float& x : full) x = float(std_dev * rng.normal());
    slice_from_full(t, full.data(), p);
  }
  backend_.copy(params_, host.data(), num_params_);
}

// ---------------------------------------------------------------------------------------------
namespace {

struct Dims {
  int B, T, N, C, H, KV, D, QKV, HD, F, FC, V;  // H, KV, F, V (and QKV, HD, FC): this rank's
  int V_full;
  int Nl, row0;  // residual-stream rows on this rank and the first of them (SP: N/p, r N/p)
  bool sp;       // sequence parallel for this call
  bool gpt2;
};

// Carves the arena: hands out consecutive pieces of `base`, each starting on a 64-byte boundary
// (alloc() aligns the base so), as the vector loads and the libraries (cuBLASLt, cuDNN) want of
// every operand. With a null base it only counts, for the size to allocate.
class Carver {
 public:
  explicit Carver(float* base) : base_(base) {}
  // n values of T (fp32, or bf16: two per float).
  template <class T = float>
  T* take(size_t n) {
    const size_t floats = std::is_same_v<T, float> ? n : (n + 1) / 2;
    const size_t at = used_;
    used_ += (floats + 15) / 16 * 16;
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
  }
  size_t used() const { return used_; }

 private:
  float* base_;
  size_t used_ = 0;
};

// Sets `sets` activation sets, their large tensors in A.
template <class A>
void take_sets(std::vector<BlockActs<A>>& out, int sets, const Dims& d, Carver& c) {
  const size_t N = size_t(d.N), Nl = size_t(d.Nl);
  out.assign(size_t(sets), BlockActs<A>{});
  for (BlockActs<A>& a : out) {
    a.mean1 = c.take(Nl);
    a.rstd1 = c.take(Nl);
    a.lse = c.take(size_t(d.B) * d.H * d.T);
    a.mid = c.take(Nl * d.C);
    a.mean2 = c.take(Nl);
    a.rstd2 = c.take(Nl);
    a.ln1 = c.take<A>(N * d.C);
    a.qkv = c.take<A>(N * d.QKV);
    a.att = c.take<A>(N * d.HD);
    a.ln2 = c.take<A>(N * d.C);
    a.fc = c.take<A>(N * d.FC);
    a.act = c.take<A>(N * d.F);
  }
}

// Points every activation of `m` into c's arena (or only counts, with a null base).
void lay_out_arena(Model::Impl& m, const Dims& d, int sets, int n_layer, Carver& c) {
  const size_t N = size_t(d.N), Nl = size_t(d.Nl);
  m.res.assign(n_layer + 1, nullptr);
  for (auto& r : m.res) r = c.take(Nl * d.C);
  m.acts.clear();
  m.acts16.clear();
  if (m.bf16)
    take_sets(m.acts16, sets, d, c);
  else
    take_sets(m.acts, sets, d, c);
  m.lnf = c.take(N * d.C);
  m.meanf = c.take(Nl);
  m.rstdf = c.take(Nl);
  m.dres = c.take(Nl * d.C);
  m.dln = c.take(N * d.C);
  m.datt = c.take(N * d.HD);
  m.dqkv = c.take(N * d.QKV);
  m.dfc = c.take(N * d.FC);
  m.dact = c.take(N * d.F);
  m.full = m.tp ? c.take(N * d.C) : nullptr;
}

void ensure_arena(Model::Impl& m, const Dims& d, int sets, int n_layer) {
  if (m.arena && m.arena_rows == d.N && m.arena_sets == sets && m.arena_B == d.B && m.arena_Nl == d.Nl) return;
  if (m.arena) m.backend->free(m.arena);
  m.arena = nullptr;
  m.arena_floats = 0;
  Carver count(nullptr);
  lay_out_arena(m, d, sets, n_layer, count);
  m.arena = m.backend->alloc(count.used());
  m.arena_floats = count.used();
  m.arena_rows = d.N;
  m.arena_sets = sets;
  m.arena_B = d.B;
  m.arena_Nl = d.Nl;
  Carver carve(m.arena);
  lay_out_arena(m, d, sets, n_layer, carve);
}

// ---- tensor-parallel pieces (each is the plain single-process computation when m.tp is null) ----

// Gradients that are partial sums on each TP rank (of rows under SP, or of the q heads of a
// replicated kv head). partial_begin sets the accumulated values of `regions` aside and zeroes
// them, so the backward writes only this micro-batch's part; partial_end sums the parts over the
// ranks in the same slot (each rank writes its part to slot `slot` of `slots` of an all-reduce
// buffer) and adds the accumulated values back.
struct Region {
  float* g;
  size_t n;
};

void partial_begin(Model::Impl& m, std::vector<Region>& regions) {
  m.backend->synchronize();  // the host reads and zeroes the regions
  m.snapshot.clear();
  for (const Region& r : regions) {
    m.snapshot.insert(m.snapshot.end(), r.g, r.g + r.n);
    std::fill_n(r.g, r.n, 0.0f);
  }
}

void partial_end(Model::Impl& m, const std::vector<Region>& regions, int slot, int slots) {
  m.backend->synchronize();  // the host reads the regions
  const size_t total = m.snapshot.size();
  m.slots.assign(total * size_t(slots), 0.0f);
  float* mine = m.slots.data() + total * size_t(slot);
  size_t k = 0;
  for (const Region& r : regions) {
    std::copy_n(r.g, r.n, mine + k);
    k += r.n;
  }
  m.tp->all_reduce_sum(m.slots.data(), m.slots.size());
  k = 0;
  for (const Region& r : regions) {
    for (size_t i = 0; i < r.n; ++i) r.g[i] = m.snapshot[k + i] + mine[k + i];
    k += r.n;
  }
}

// out (N,C) = norm of this rank's residual rows inp (Nl,C); under SP each rank normalizes its
// rows into its slot of out and all-gathers, so out is the full (N,C) on every rank. A bf16 out
// under SP: the rows are normalized and gathered in fp32 (TP scratch m.full), then rounded.
template <class A>
void norm_forward(Model::Impl& m, Backend& be, const Dims& d, float eps, A* out, float* mean,
                  float* rstd, const float* inp, const float* w, const float* b) {
  if constexpr (std::is_same_v<A, bf16_t>) {
    if (d.sp) {
      norm_forward(m, be, d, eps, m.full, mean, rstd, inp, w, b);
      be.to_bf16(out, m.full, size_t(d.N) * d.C);
      return;
    }
  }
  A* mine = out + size_t(d.row0) * d.C;
  if (d.gpt2) {
    be.layernorm_forward(mine, mean, rstd, inp, w, b, d.Nl, d.C, eps);
  } else {
    be.rmsnorm_forward(mine, rstd, inp, w, d.Nl, d.C, eps);
  }
  if constexpr (std::is_same_v<A, float>) {
    if (d.sp) m.tp->all_gather(out, mine, size_t(d.Nl) * d.C);
  }
}

// dln (N,C): this rank's part of dL/d(norm output) (under TP a column-parallel product's partial
// input gradient, summed here over the group: all-reduce, or reduce-scatter of rows under SP).
// Accumulates dL/d(norm input) into dres (Nl,C) and the weights' gradients dw (and db, which
// follows dw in the buffer); under SP those are partial (this rank's rows) and summed too.
void norm_backward(Model::Impl& m, Backend& be, const Dims& d, float* dres, float* dw, float* db,
                   float* dln, const float* inp, const float* w, const float* mean,
                   const float* rstd) {
  const float* dout = dln;
  std::vector<Region> weights;
  if (m.tp) {
    if (d.sp) {
      float* mine = dln + size_t(d.row0) * d.C;
      m.tp->reduce_scatter(mine, dln, size_t(d.Nl) * d.C);
      dout = mine;
      NURI_CHECK(!db || db == dw + d.C, internal, "Model", "a norm's bias does not follow its weight");
      weights.push_back({dw, size_t(d.C) * (db ? 2 : 1)});
      partial_begin(m, weights);
    } else {
      m.tp->all_reduce_sum(dln, size_t(d.N) * d.C);
    }
  }
  if (d.gpt2) {
    be.layernorm_backward(dres, dw, db, dout, inp, w, mean, rstd, d.Nl, d.C);
  } else {
    be.rmsnorm_backward(dres, dw, dout, inp, w, rstd, d.Nl, d.C);
  }
  if (!weights.empty()) partial_end(m, weights, 0, 1);
}

// y (Nl,C) = x (Nl,C) + inp (N,IC) W^T + b for a row-parallel W (this rank's columns): the
// rank's product is a partial sum, completed over the group (all-reduce; under SP a
// reduce-scatter of rows). The bias is added once, by rank 0.
template <class A>
void row_parallel_forward(Model::Impl& m, Backend& be, const Dims& d, float* y, const float* x,
                          const A* inp, const float* w, const float* b, int IC) {
  const size_t n = size_t(d.Nl) * d.C;
  const bool first = !m.tp || m.tp->rank() == 0;
  if (!d.sp) {
    if (first) {
      be.copy(y, x, n);
      be.linear_forward(y, inp, w, b, d.N, IC, d.C, true);
    } else {
      be.linear_forward(y, inp, w, nullptr, d.N, IC, d.C, false);
    }
    if (m.tp) m.tp->all_reduce_sum(y, n);
    return;
  }
  be.linear_forward(m.full, inp, w, first ? b : nullptr, d.N, IC, d.C, false);
  m.tp->reduce_scatter(y, m.full, n);
  be.add(y, y, x, n);
}

// The residual gradient (Nl,C) as full rows (N,C): itself, or all-gathered under SP.
const float* full_rows(Model::Impl& m, const Dims& d, const float* local) {
  if (!d.sp) return local;
  m.tp->all_gather(m.full, local, size_t(d.Nl) * d.C);
  return m.full;
}

void embed_forward(Model::Impl& m, Backend& be, const Dims& d, const float* params,
                   const int32_t* tokens) {
  const float* wpe = Model::Impl::at(const_cast<float*>(params), m.wpe);
  if (!m.tp) {
    be.embedding_forward(m.res[0], tokens, params + m.wte, wpe, d.N, d.T, d.C);
    return;
  }
  // Vocab-parallel: each rank embeds the tokens of its slice (others get -1: a zero row), rank 0
  // adds the positions, and the sum over the group is the embedding.
  m.local_tokens.resize(size_t(d.N));
  for (int i = 0; i < d.N; ++i) {
    const int32_t t = tokens[i] - m.vocab_start;
    m.local_tokens[size_t(i)] = t >= 0 && t < d.V ? t : -1;
  }
  const bool first = m.tp->rank() == 0;
  float* out = d.sp ? m.full : m.res[0];
  be.embedding_forward(out, m.local_tokens.data(), params + m.wte, first ? wpe : nullptr, d.N, d.T, d.C);
  if (d.sp) {
    m.tp->reduce_scatter(m.res[0], m.full, size_t(d.Nl) * d.C);
  } else {
    m.tp->all_reduce_sum(m.res[0], size_t(d.N) * d.C);
  }
}

void embed_backward(Model::Impl& m, Backend& be, const Dims& d, float* grads, const int32_t* tokens) {
  const float* dy = full_rows(m, d, m.dres);
  be.embedding_backward(grads + m.wte, Model::Impl::at(grads, m.wpe), dy,
                        m.tp ? m.local_tokens.data() : tokens, d.N, d.T, d.C);
}

// Sum over rows with valid targets of the cross-entropy of logits = lnf W^T. With dx: dx (N,C) =
// scale dloss/dx (under TP this rank's part, summed by the final norm's backward) and dw +=
// scale dloss/dW. Under TP the vocabulary is split: per chunk of rows each rank computes its
// logits (rows, V_r), their max, exp-sum and target logit; one all-reduce of the maxima and one
// of the rescaled sums and target logits give every rank the full rows' log-sum-exp.
double head_loss(Model::Impl& m, Backend& be, const Dims& d, float* dx, float* dw, const float* w,
                 const int32_t* targets, float scale) {
  if (!m.tp) return be.lm_head_cross_entropy(dx, dw, m.lnf, w, targets, d.N, d.C, d.V, scale);
  // The chunk must be the same on every rank (the collectives below are per chunk): sized by the
  // largest slice, ceil(V / p), not this rank's, which may be one smaller.
  const size_t v_max = (size_t(d.V_full) + size_t(m.tp->size()) - 1) / size_t(m.tp->size());
  const int chunk = lm_head_chunk_rows(d.N, v_max);
  const size_t rows_max = size_t(std::min(chunk, d.N));
  if (m.head_logits_floats < rows_max * d.V) {
    if (m.head_logits) be.free(m.head_logits);
    m.head_logits_floats = rows_max * d.V;
    m.head_logits = be.alloc(m.head_logits_floats);
  }
  if (m.head_stats_floats < 6 * rows_max) {  // backend memory: the backend's ops write it
    if (m.head_stats) be.free(m.head_stats);
    m.head_stats_floats = 6 * rows_max;
    m.head_stats = be.alloc(m.head_stats_floats);
  }
  float* logits = m.head_logits;
  float *mx = m.head_stats, *sum = mx + rows_max, *tl = sum + rows_max, *gmax = tl + rows_max,
        *pack = gmax + rows_max;  // pack: 2 rows_max (sums, target logits), then lse reuses gmax
  double loss = 0;
  for (int n0 = 0; n0 < d.N; n0 += chunk) {
    const int rows = std::min(chunk, d.N - n0);
    const float* x = m.lnf + size_t(n0) * d.C;
    be.gemm(false, true, rows, d.V, d.C, 1.0f, x, d.C, w, d.C, 0.0f, logits, d.V);
    be.cross_entropy_partial(mx, sum, tl, logits, targets + n0, rows, d.V, m.vocab_start);
    be.synchronize();  // the host reads the row statistics
    std::copy_n(mx, rows, gmax);
    m.tp->all_reduce_max(gmax, size_t(rows));
    for (int i = 0; i < rows; ++i) {
      pack[i] = sum[i] * std::exp(mx[i] - gmax[i]);
      pack[rows + i] = tl[i];
    }
    m.tp->all_reduce_sum(pack, 2 * size_t(rows));
    float* lse = gmax;  // overwrites the maxima, row by row
    for (int i = 0; i < rows; ++i) {
      const double row_lse = double(gmax[i]) + std::log(double(pack[i]));
      if (targets[n0 + i] >= 0) loss += row_lse - double(pack[rows + i]);
      lse[i] = float(row_lse);
    }
    if (!dx) continue;
    be.cross_entropy_partial_backward(logits, lse, targets + n0, rows, d.V, m.vocab_start, scale);
    be.gemm(false, false, rows, d.C, d.V, 1.0f, logits, d.V, w, d.C, 0.0f, dx + size_t(n0) * d.C, d.C);
    if (dw) be.gemm(true, false, d.V, d.C, rows, 1.0f, logits, d.V, x, d.C, 1.0f, dw, d.C);
  }
  return loss;
}

// out (N,OC) = inp (N,IC) W^T + b, fp32 or bf16 (the two ops differ in their arguments).
void linear(Backend& be, float* out, const float* inp, const float* w, const float* b, int N, int IC, int OC) {
  be.linear_forward(out, inp, w, b, N, IC, OC, false);
}
void linear(Backend& be, bf16_t* out, const bf16_t* inp, const float* w, const float* b, int N, int IC, int OC) {
  be.linear_forward(out, inp, w, b, N, IC, OC);
}
// RoPE's forward rotation of nh heads of x (B,T, row stride `stride`), fp32 or bf16.
void rope_forward(Backend& be, float* x, const Dims& d, int nh, int stride, float theta) {
  be.rope(x, d.B, d.T, nh, d.D, stride, theta, false);
}
void rope_forward(Backend& be, bf16_t* x, const Dims& d, int nh, int stride, float theta) {
  be.rope(x, d.B, d.T, nh, d.D, stride, theta);
}

template <class A>
void block_forward(Model::Impl& m, Backend& be, const Dims& d, const ModelConfig& cfg,
                   const BlockParams& p, const BlockActs<A>& a, const float* x, float* y) {
  norm_forward(m, be, d, cfg.norm_eps, a.ln1, a.mean1, a.rstd1, x, p.ln1_w, p.ln1_b);
  linear(be, a.qkv, a.ln1, p.qkv_w, p.qkv_b, d.N, d.C, d.QKV);
  if (!d.gpt2) {
    rope_forward(be, a.qkv, d, d.H, d.QKV, cfg.rope_theta);
    rope_forward(be, a.qkv + size_t(d.H) * d.D, d, d.KV, d.QKV, cfg.rope_theta);
  }
  be.attention_forward(a.att, a.lse, a.qkv, d.B, d.T, d.H, d.KV, d.D);
  row_parallel_forward(m, be, d, a.mid, x, a.att, p.proj_w, p.proj_b, d.HD);
  norm_forward(m, be, d, cfg.norm_eps, a.ln2, a.mean2, a.rstd2, a.mid, p.ln2_w, p.ln2_b);
  if (d.gpt2) {
    be.linear_gelu_forward(a.fc, a.act, a.ln2, p.fc_w, p.fc_b, d.N, d.C, d.FC);  // FC = F
  } else {
    linear(be, a.fc, a.ln2, p.fc_w, p.fc_b, d.N, d.C, d.FC);
    be.swiglu_forward(a.act, a.fc, d.N, d.F);
  }
  row_parallel_forward(m, be, d, y, a.mid, a.act, p.mlp_proj_w, p.mlp_proj_b, d.F);
}

// dres (Nl,C): on entry dL/d(block output), on exit dL/d(block input).
template <class A>
void block_backward(Model::Impl& m, Backend& be, const Dims& d, const ModelConfig& cfg,
                    const BlockParams& p, const BlockParams& g, const BlockActs<A>& a, const float* x) {
  be.linear_backward(m.dact, g.mlp_proj_w, g.mlp_proj_b, full_rows(m, d, m.dres), a.act, p.mlp_proj_w,
                     d.N, d.F, d.C);
  if (d.gpt2) {
    be.gelu_backward(m.dfc, a.fc, m.dact, size_t(d.N) * d.F);
  } else {
    be.swiglu_backward(m.dfc, a.fc, m.dact, d.N, d.F);
  }
  be.linear_backward(m.dln, g.fc_w, g.fc_b, m.dfc, a.ln2, p.fc_w, d.N, d.C, d.FC);
  norm_backward(m, be, d, m.dres, g.ln2_w, g.ln2_b, m.dln, a.mid, p.ln2_w, a.mean2, a.rstd2);
  be.linear_backward(m.datt, g.proj_w, g.proj_b, full_rows(m, d, m.dres), a.att, p.proj_w, d.N, d.HD, d.C);
  be.attention_backward(m.dqkv, m.datt, a.qkv, a.att, a.lse, d.B, d.T, d.H, d.KV, d.D);
  if (!d.gpt2) {
    be.rope(m.dqkv, d.B, d.T, d.H, d.D, d.QKV, cfg.rope_theta, true);
    be.rope(m.dqkv + size_t(d.H) * d.D, d.B, d.T, d.KV, d.D, d.QKV, cfg.rope_theta, true);
  }
  // A kv head replicated over several ranks gets a part of its gradient from each (from the
  // q heads each rank holds): the k and v rows of the weight (and bias) are summed over them.
  std::vector<Region> kv;
  if (m.kv_shared) {
    const size_t q_rows = size_t(d.H) * d.D, kv_rows = 2 * size_t(d.KV) * d.D;
    kv.push_back({g.qkv_w + q_rows * d.C, kv_rows * d.C});
    if (g.qkv_b) kv.push_back({g.qkv_b + q_rows, kv_rows});
    partial_begin(m, kv);
  }
  be.linear_backward(m.dln, g.qkv_w, g.qkv_b, m.dqkv, a.ln1, p.qkv_w, d.N, d.C, d.QKV);
  if (m.kv_shared) partial_end(m, kv, m.kv_slot, m.kv_slots);
  norm_backward(m, be, d, m.dres, g.ln1_w, g.ln1_b, m.dln, x, p.ln1_w, a.mean1, a.rstd1);
}

// sp_required: a training step (forward_backward) under sequence parallelism needs N % p == 0;
// evaluation and sampling fall back to plain TP for a batch the ranks cannot split (a prompt of
// odd length), which computes the same values.
Dims make_dims(const ModelConfig& c, const Model::Impl& m, int B, int T, bool sp_required) {
  Dims d;
  d.B = B;
  d.T = T;
  d.N = B * T;
  d.C = c.d_model;
  d.H = m.H;
  d.KV = m.KV;
  d.D = c.head_dim();
  d.QKV = (d.H + 2 * d.KV) * d.D;
  d.HD = d.H * d.D;
  d.F = m.F;
  d.gpt2 = c.family == "gpt2";
  d.FC = d.gpt2 ? d.F : 2 * d.F;
  d.V = m.V;
  d.V_full = c.vocab_size;
  d.Nl = d.N;
  d.row0 = 0;
  d.sp = m.sp && (sp_required || d.N % m.tp->size() == 0);
  if (d.sp) {
    const int p = m.tp->size();
    NURI_CHECK(d.N % p == 0, shape, "Model::forward",
               "sequence parallelism splits the B*T = " << B << " x " << T << " = " << d.N
                   << " rows over tp = " << p << " ranks, which does not divide them; choose a batch size or "
                   << "sequence length whose product tp divides, or set parallel.sequence_parallel = false");
    d.Nl = d.N / p;
    d.row0 = m.tp->rank() * d.Nl;
  }
  return d;
}

void check_inputs(const ModelConfig& c, const int32_t* tokens, int B, int T) {
  NURI_CHECK(B >= 1 && T >= 1, shape, "Model::forward", "batch " << B << " x " << T << " is empty");
  NURI_CHECK(T <= c.max_seq_len, shape, "Model::forward",
             "sequence length " << T << " exceeds model.max_seq_len " << c.max_seq_len
                                << "; lower train.seq_len or raise model.max_seq_len");
  for (int64_t i = 0; i < int64_t(B) * T; ++i) {
    NURI_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, data, "Model::forward",
               "token " << tokens[i] << " at position " << i << " is outside the vocabulary [0, "
                        << c.vocab_size << "); the tokenizer and model.vocab_size disagree");
  }
}

template <class A>
std::vector<BlockActs<A>>& act_sets(Model::Impl& m) {
  if constexpr (std::is_same_v<A, float>)
    return m.acts;
  else
    return m.acts16;
}

// Runs embedding and all blocks; leaves the final norm output (N,C) in impl.lnf.
// keep_all: keep every block's activations (for a backward without recompute, or when the arena
// already holds a set per block), else one set serves every block.
template <class A>
void forward_trunk(Model::Impl& m, Backend& be, const ModelConfig& cfg, float* params, const Dims& d,
                   const int32_t* tokens, bool keep_all) {
  ensure_arena(m, d, keep_all ? cfg.n_layer : 1, cfg.n_layer);
  const std::vector<BlockActs<A>>& sets = act_sets<A>(m);
  embed_forward(m, be, d, params, tokens);
  for (int l = 0; l < cfg.n_layer; ++l)
    block_forward(m, be, d, cfg, m.view(params, l), sets[keep_all ? size_t(l) : 0], m.res[l], m.res[l + 1]);
  norm_forward(m, be, d, cfg.norm_eps, m.lnf, m.meanf, m.rstdf, m.res[cfg.n_layer], params + m.lnf_w,
               Model::Impl::at(params, m.lnf_b));
}
void forward_trunk(Model::Impl& m, Backend& be, const ModelConfig& cfg, float* params, const Dims& d,
                   const int32_t* tokens, bool keep_all) {
  if (m.bf16)
    forward_trunk<bf16_t>(m, be, cfg, params, d, tokens, keep_all);
  else
    forward_trunk<float>(m, be, cfg, params, d, tokens, keep_all);
}

// The blocks' backward, last to first (each recomputed first when its activations were not
// kept); grads_ready() after each.
template <class A>
void blocks_backward(Model::Impl& m, Backend& be, const ModelConfig& cfg, float* params, float* grads,
                     const Dims& d, bool keep_all, const std::function<void()>& grads_ready) {
  const std::vector<BlockActs<A>>& sets = act_sets<A>(m);
  for (int l = cfg.n_layer - 1; l >= 0; --l) {
    const BlockParams p = m.view(params, l);
    const BlockActs<A>& a = sets[keep_all ? size_t(l) : 0];
    if (!keep_all) block_forward(m, be, d, cfg, p, a, m.res[l], m.res[l + 1]);
    block_backward(m, be, d, cfg, p, m.view(grads, l), a, m.res[l]);
    grads_ready();  // block l
  }
}

}  // namespace

float Model::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                              float grad_scale) {
  check_inputs(cfg_, tokens, B, T);
  Impl& m = *impl_;
  const Dims d = make_dims(cfg_, m, B, T, /*sp_required=*/true);
  // The weights are read two or three times each (forward, backward, and a forward again under
  // recompute): converted once for the call (Backend::freeze_weights). The evaluation and
  // sampling calls read each weight once, so they convert at the product and keep no copy.
  const FrozenWeights frozen(backend_, params_, num_params_);
  const bool keep_all = !cfg_.recompute;
  forward_trunk(m, backend_, cfg_, params_, d, tokens, keep_all);

  // Reports the next entry of grad_ready_order() to the hook, if one is set.
  size_t next_ready = 0;
  auto grads_ready = [&] {
    if (grad_ready_hook_) {
      const ParamRange& r = grad_ready_order_[next_ready];
      grad_ready_hook_(r.offset, r.count);
    }
    ++next_ready;
  };

  int64_t valid = 0;
  for (int i = 0; i < d.N; ++i) valid += targets[i] >= 0;
  if (valid == 0) {
    while (next_ready < grad_ready_order_.size()) grads_ready();
    backend_.synchronize();
    return 0.0f;
  }
  // Loss head: LM head + cross-entropy writes dL/d(lnf) into dln and accumulates dW_head.
  const double loss_sum = head_loss(m, backend_, d, m.dln, grads_ + m.head, params_ + m.head, targets,
                                    grad_scale / float(valid));
  backend_.zero(m.dres, size_t(d.Nl) * d.C);
  norm_backward(m, backend_, d, m.dres, grads_ + m.lnf_w, Impl::at(grads_, m.lnf_b), m.dln,
                m.res[cfg_.n_layer], params_ + m.lnf_w, m.meanf, m.rstdf);
  grads_ready();  // final norm (+ untied LM head)
  if (m.bf16)
    blocks_backward<bf16_t>(m, backend_, cfg_, params_, grads_, d, keep_all, grads_ready);
  else
    blocks_backward<float>(m, backend_, cfg_, params_, grads_, d, keep_all, grads_ready);
  embed_backward(m, backend_, d, grads_, tokens);
  grads_ready();  // embeddings (and the tied LM head)
  backend_.synchronize();  // the gradients are complete when this returns
  return float(loss_sum / double(valid));
}

float Model::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T) {
  check_inputs(cfg_, tokens, B, T);
  Impl& m = *impl_;
  const Dims d = make_dims(cfg_, m, B, T, /*sp_required=*/false);
  // (keep_all when the arena is sized so: it is reused as it is, not reallocated for one set)
  forward_trunk(m, backend_, cfg_, params_, d, tokens, /*keep_all=*/m.arena_sets > 1 && m.arena_rows == d.N);
  int64_t valid = 0;
  for (int i = 0; i < d.N; ++i) valid += targets[i] >= 0;
  if (valid == 0) {
    backend_.synchronize();
    return 0.0f;
  }
  const double loss_sum = head_loss(m, backend_, d, nullptr, nullptr, params_ + m.head, targets, 1.0f);
  backend_.synchronize();
  return float(loss_sum / double(valid));
}

void Model::forward_logits(float* logits, const int32_t* tokens, int B, int T) {
  check_inputs(cfg_, tokens, B, T);
  Impl& m = *impl_;
  const Dims d = make_dims(cfg_, m, B, T, /*sp_required=*/false);
  forward_trunk(m, backend_, cfg_, params_, d, tokens, m.arena_sets > 1 && m.arena_rows == d.N);
  // The caller's logits may be host memory (a std::vector): where the backend cannot write that,
  // the logits go to a backend buffer first and are copied out.
  const size_t all = size_t(d.N) * d.V_full;
  float* out = logits;
  if (!backend_.accepts_host_buffers()) {
    if (m.out_logits_floats < all) {
      if (m.out_logits) backend_.free(m.out_logits);
      m.out_logits_floats = all;
      m.out_logits = backend_.alloc(all);
    }
    out = m.out_logits;
  }
  if (!m.tp) {
    backend_.lm_head_logits(out, m.lnf, params_ + m.head, d.N, d.C, d.V);
  } else {
    // Each rank writes its vocabulary columns of the zeroed (N, V) logits; the sum is every column.
    backend_.zero(out, all);
    backend_.gemm(false, true, d.N, d.V, d.C, 1.0f, m.lnf, d.C, params_ + m.head, d.C, 0.0f,
                  out + m.vocab_start, d.V_full);
    m.tp->all_reduce_sum(out, all);
  }
  if (out != logits) backend_.copy(logits, out, all);
  backend_.synchronize();
}

}  // namespace nuri

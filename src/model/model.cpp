// The decoder: embedding, n_layer blocks (norm, attention, norm, MLP), final norm, fused LM head
// and loss. Forward and backward are written out per block; see model.hpp for the families.
//
// Activations for B*T = N rows (fp32):
//   res[l]            (N,C)      input of block l (res[L] is the last block's output)
//   per block (kept for every block, or for one block when recomputing):
//     ln1, ln2        (N,C)      norm outputs;  mean1/rstd1, mean2/rstd2 (N)
//     qkv             (N,QKV)    QKV = (H+2KV)*D, after RoPE for llama
//     att             (N,H*D)    attention output;  lse (B,H,T)
//     mid             (N,C)      residual after attention
//     fc              (N,FC)     MLP pre-activation, FC = F (gpt2) or 2F (llama: [gate | up])
//     act             (N,F)      GELU / SwiGLU output
//   head: lnf (N,C), meanf/rstdf (N)
// Gradient scratch (one block at a time): dres (N,C), dln (N,C), datt (N,H*D), dqkv (N,QKV),
// dfc (N,FC), dact (N,F).
#include <algorithm>
#include <cmath>
#include <string>

#include "nuri/backend.hpp"
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

struct BlockActs {
  float *ln1, *mean1, *rstd1, *qkv, *att, *lse, *mid, *ln2, *mean2, *rstd2, *fc, *act;
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
  int arena_rows = 0, arena_sets = 0, arena_B = 0, arena_T = 0;
  std::vector<float*> res;
  std::vector<BlockActs> acts;
  float *lnf = nullptr, *meanf = nullptr, *rstdf = nullptr;
  float *dres = nullptr, *dln = nullptr, *datt = nullptr, *dqkv = nullptr, *dfc = nullptr,
        *dact = nullptr;

  ~Impl() {
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

Model::Model(const ModelConfig& cfg, Backend& backend)
    : cfg_(cfg), backend_(backend), impl_(std::make_unique<Impl>()) {
  cfg_.validate();
  impl_->backend = &backend;
  const int64_t C = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab_size, D = cfg_.head_dim();
  const int64_t QKV = int64_t(cfg_.n_head + 2 * cfg_.n_kv_head) * D, HD = int64_t(cfg_.n_head) * D;
  const bool gpt2 = cfg_.family == "gpt2";
  const int64_t FC = gpt2 ? F : 2 * F;

  size_t offset = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    ParamTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.numel = 1;
    for (int64_t s : t.shape) t.numel *= size_t(s);
    t.offset = offset;
    t.weight_decay = decay;
    offset += t.numel;
    tensors_.push_back(t);
    return t.offset;
  };
  impl_->wte = add("wte", {V, C}, true);
  if (gpt2) impl_->wpe = add("wpe", {cfg_.max_seq_len, C}, true);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    Impl::BlockOffsets o;
    o.ln1_w = add(p + "ln1.weight", {C}, false);
    o.ln1_b = gpt2 ? add(p + "ln1.bias", {C}, false) : SIZE_MAX;
    o.qkv_w = add(p + "attn.qkv.weight", {QKV, C}, true);
    o.qkv_b = gpt2 ? add(p + "attn.qkv.bias", {QKV}, false) : SIZE_MAX;
    o.proj_w = add(p + "attn.proj.weight", {C, HD}, true);
    o.proj_b = gpt2 ? add(p + "attn.proj.bias", {C}, false) : SIZE_MAX;
    o.ln2_w = add(p + "ln2.weight", {C}, false);
    o.ln2_b = gpt2 ? add(p + "ln2.bias", {C}, false) : SIZE_MAX;
    o.fc_w = add(p + "mlp.fc.weight", {FC, C}, true);
    o.fc_b = gpt2 ? add(p + "mlp.fc.bias", {FC}, false) : SIZE_MAX;
    o.mlp_proj_w = add(p + "mlp.proj.weight", {C, F}, true);
    o.mlp_proj_b = gpt2 ? add(p + "mlp.proj.bias", {C}, false) : SIZE_MAX;
    impl_->blocks.push_back(o);
  }
  impl_->lnf_w = add("ln_f.weight", {C}, false);
  if (gpt2) impl_->lnf_b = add("ln_f.bias", {C}, false);
  impl_->head = cfg_.tied_embeddings ? impl_->wte : add("lm_head.weight", {V, C}, true);

  num_params_ = offset;
  if (int64_t(num_params_) != cfg_.num_params()) {
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

void Model::zero_grads() { backend_.zero(grads_, num_params_); }

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
    for (size_t k = 0; k < t.numel; ++k) p[k] = float(std_dev * rng.normal());
  }
  backend_.copy(params_, host.data(), num_params_);
}

// ---------------------------------------------------------------------------------------------
namespace {

struct Dims {
  int B, T, N, C, H, KV, D, QKV, HD, F, FC, V;
  bool gpt2;
};

void ensure_arena(Model::Impl& m, const Dims& d, int sets, int n_layer) {
  if (m.arena && m.arena_rows == d.N && m.arena_sets == sets && m.arena_B == d.B) return;
  if (m.arena) m.backend->free(m.arena);
  const size_t N = size_t(d.N);
  const size_t lse = size_t(d.B) * d.H * d.T;
  const size_t per_set = N * (2 * size_t(d.C) + 4 + d.QKV + d.HD + d.C + d.FC + d.F) + lse;
  const size_t res = size_t(n_layer + 1) * N * d.C;
  const size_t head = N * d.C + 2 * N;
  const size_t grads = N * (2 * size_t(d.C) + d.HD + d.QKV + d.FC + d.F);
  const size_t total = res + size_t(sets) * per_set + head + grads;
  m.arena = m.backend->alloc(total);
  m.arena_rows = d.N;
  m.arena_sets = sets;
  m.arena_B = d.B;
  m.arena_T = d.T;
  float* p = m.arena;
  auto take = [&](size_t n) {
    float* q = p;
    p += n;
    return q;
  };
  m.res.assign(n_layer + 1, nullptr);
  for (auto& r : m.res) r = take(N * d.C);
  m.acts.assign(sets, BlockActs{});
  for (auto& a : m.acts) {
    a.ln1 = take(N * d.C);
    a.mean1 = take(N);
    a.rstd1 = take(N);
    a.qkv = take(N * d.QKV);
    a.att = take(N * d.HD);
    a.lse = take(lse);
    a.mid = take(N * d.C);
    a.ln2 = take(N * d.C);
    a.mean2 = take(N);
    a.rstd2 = take(N);
    a.fc = take(N * d.FC);
    a.act = take(N * d.F);
  }
  m.lnf = take(N * d.C);
  m.meanf = take(N);
  m.rstdf = take(N);
  m.dres = take(N * d.C);
  m.dln = take(N * d.C);
  m.datt = take(N * d.HD);
  m.dqkv = take(N * d.QKV);
  m.dfc = take(N * d.FC);
  m.dact = take(N * d.F);
  if (size_t(p - m.arena) != total) {
    NURI_THROW(internal, "Model", "activation arena accounting is off by " << (p - m.arena) - total);
  }
}

void norm_forward(Backend& be, const Dims& d, float eps, float* out, float* mean, float* rstd,
                  const float* inp, const float* w, const float* b) {
  if (d.gpt2) {
    be.layernorm_forward(out, mean, rstd, inp, w, b, d.N, d.C, eps);
  } else {
    be.rmsnorm_forward(out, rstd, inp, w, d.N, d.C, eps);
  }
}

void norm_backward(Backend& be, const Dims& d, float* dinp, float* dw, float* db, const float* dout,
                   const float* inp, const float* w, const float* mean, const float* rstd) {
  if (d.gpt2) {
    be.layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, d.N, d.C);
  } else {
    be.rmsnorm_backward(dinp, dw, dout, inp, w, rstd, d.N, d.C);
  }
}

void block_forward(Backend& be, const Dims& d, const ModelConfig& cfg, const BlockParams& p,
                   const BlockActs& a, const float* x, float* y) {
  norm_forward(be, d, cfg.norm_eps, a.ln1, a.mean1, a.rstd1, x, p.ln1_w, p.ln1_b);
  be.linear_forward(a.qkv, a.ln1, p.qkv_w, p.qkv_b, d.N, d.C, d.QKV, false);
  if (!d.gpt2) {
    be.rope(a.qkv, d.B, d.T, d.H, d.D, d.QKV, cfg.rope_theta, false);
    be.rope(a.qkv + size_t(d.H) * d.D, d.B, d.T, d.KV, d.D, d.QKV, cfg.rope_theta, false);
  }
  be.attention_forward(a.att, a.lse, a.qkv, d.B, d.T, d.H, d.KV, d.D);
  be.copy(a.mid, x, size_t(d.N) * d.C);
  be.linear_forward(a.mid, a.att, p.proj_w, p.proj_b, d.N, d.HD, d.C, true);
  norm_forward(be, d, cfg.norm_eps, a.ln2, a.mean2, a.rstd2, a.mid, p.ln2_w, p.ln2_b);
  be.linear_forward(a.fc, a.ln2, p.fc_w, p.fc_b, d.N, d.C, d.FC, false);
  if (d.gpt2) {
    be.gelu_forward(a.act, a.fc, size_t(d.N) * d.F);
  } else {
    be.swiglu_forward(a.act, a.fc, d.N, d.F);
  }
  be.copy(y, a.mid, size_t(d.N) * d.C);
  be.linear_forward(y, a.act, p.mlp_proj_w, p.mlp_proj_b, d.N, d.F, d.C, true);
}

// dres (N,C): on entry dL/d(block output), on exit dL/d(block input).
void block_backward(Backend& be, const Dims& d, const ModelConfig& cfg, const BlockParams& p,
                    const BlockParams& g, const BlockActs& a, const float* x, Model::Impl& m) {
  be.linear_backward(m.dact, g.mlp_proj_w, g.mlp_proj_b, m.dres, a.act, p.mlp_proj_w, d.N, d.F, d.C);
  if (d.gpt2) {
    be.gelu_backward(m.dfc, a.fc, m.dact, size_t(d.N) * d.F);
  } else {
    be.swiglu_backward(m.dfc, a.fc, m.dact, d.N, d.F);
  }
  be.linear_backward(m.dln, g.fc_w, g.fc_b, m.dfc, a.ln2, p.fc_w, d.N, d.C, d.FC);
  norm_backward(be, d, m.dres, g.ln2_w, g.ln2_b, m.dln, a.mid, p.ln2_w, a.mean2, a.rstd2);
  be.linear_backward(m.datt, g.proj_w, g.proj_b, m.dres, a.att, p.proj_w, d.N, d.HD, d.C);
  be.attention_backward(m.dqkv, m.datt, a.qkv, a.att, a.lse, d.B, d.T, d.H, d.KV, d.D);
  if (!d.gpt2) {
    be.rope(m.dqkv, d.B, d.T, d.H, d.D, d.QKV, cfg.rope_theta, true);
    be.rope(m.dqkv + size_t(d.H) * d.D, d.B, d.T, d.KV, d.D, d.QKV, cfg.rope_theta, true);
  }
  be.linear_backward(m.dln, g.qkv_w, g.qkv_b, m.dqkv, a.ln1, p.qkv_w, d.N, d.C, d.QKV);
  norm_backward(be, d, m.dres, g.ln1_w, g.ln1_b, m.dln, x, p.ln1_w, a.mean1, a.rstd1);
}

}  // namespace

namespace {
Dims make_dims(const ModelConfig& c, int B, int T) {
  Dims d;
  d.B = B;
  d.T = T;
  d.N = B * T;
  d.C = c.d_model;
  d.H = c.n_head;
  d.KV = c.n_kv_head;
  d.D = c.head_dim();
  d.QKV = (d.H + 2 * d.KV) * d.D;
  d.HD = d.H * d.D;
  d.F = c.d_ff;
  d.gpt2 = c.family == "gpt2";
  d.FC = d.gpt2 ? d.F : 2 * d.F;
  d.V = c.vocab_size;
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
}  // namespace

// Runs embedding and all blocks; leaves the final norm output in impl.lnf.
// keep_all: keep every block's activations (for a backward without recompute).
static void forward_trunk(Model::Impl& m, Backend& be, const ModelConfig& cfg, float* params,
                          const Dims& d, const int32_t* tokens, bool keep_all) {
  ensure_arena(m, d, keep_all ? cfg.n_layer : 1, cfg.n_layer);
  be.embedding_forward(m.res[0], tokens, params + m.wte, Model::Impl::at(params, m.wpe), d.N, d.T, d.C);
  for (int l = 0; l < cfg.n_layer; ++l) {
    block_forward(be, d, cfg, m.view(params, l), m.acts[keep_all ? l : 0], m.res[l], m.res[l + 1]);
  }
  norm_forward(be, d, cfg.norm_eps, m.lnf, m.meanf, m.rstdf, m.res[cfg.n_layer], params + m.lnf_w,
               Model::Impl::at(params, m.lnf_b));
}

float Model::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                              float grad_scale) {
  check_inputs(cfg_, tokens, B, T);
  const Dims d = make_dims(cfg_, B, T);
  Impl& m = *impl_;
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
    return 0.0f;
  }
  // Loss head: fused LM head + cross-entropy writes dL/d(lnf) into dln and accumulates dW_head.
  const double loss_sum = backend_.lm_head_cross_entropy(m.dln, grads_ + m.head, m.lnf,
                                                         params_ + m.head, targets, d.N, d.C, d.V,
                                                         grad_scale / float(valid));
  backend_.zero(m.dres, size_t(d.N) * d.C);
  norm_backward(backend_, d, m.dres, grads_ + m.lnf_w, Impl::at(grads_, m.lnf_b), m.dln,
                m.res[cfg_.n_layer], params_ + m.lnf_w, m.meanf, m.rstdf);
  grads_ready();  // final norm (+ untied LM head)
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const BlockParams p = m.view(params_, l);
    if (!keep_all) block_forward(backend_, d, cfg_, p, m.acts[0], m.res[l], m.res[l + 1]);
    block_backward(backend_, d, cfg_, p, m.view(grads_, l), m.acts[keep_all ? l : 0], m.res[l], m);
    grads_ready();  // block l
  }
  backend_.embedding_backward(grads_ + m.wte, Impl::at(grads_, m.wpe), m.dres, tokens, d.N, d.T, d.C);
  grads_ready();  // embeddings (and the tied LM head)
  return float(loss_sum / double(valid));
}

float Model::forward_loss(const int32_t* tokens, const int32_t* targets, int B, int T) {
  check_inputs(cfg_, tokens, B, T);
  const Dims d = make_dims(cfg_, B, T);
  Impl& m = *impl_;
  forward_trunk(m, backend_, cfg_, params_, d, tokens, /*keep_all=*/m.arena_sets > 1 && m.arena_rows == d.N);
  int64_t valid = 0;
  for (int i = 0; i < d.N; ++i) valid += targets[i] >= 0;
  if (valid == 0) return 0.0f;
  const double loss_sum = backend_.lm_head_cross_entropy(nullptr, nullptr, m.lnf, params_ + m.head,
                                                         targets, d.N, d.C, d.V, 1.0f);
  return float(loss_sum / double(valid));
}

void Model::forward_logits(float* logits, const int32_t* tokens, int B, int T) {
  check_inputs(cfg_, tokens, B, T);
  const Dims d = make_dims(cfg_, B, T);
  Impl& m = *impl_;
  forward_trunk(m, backend_, cfg_, params_, d, tokens, m.arena_sets > 1 && m.arena_rows == d.N);
  backend_.lm_head_logits(logits, m.lnf, params_ + m.head, d.N, d.C, d.V);
}

}  // namespace nuri

// Model configuration: presets, validation, parameter count, FLOPs and the memory estimate.
#include <algorithm>
#include <cmath>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"

namespace nuri {

namespace {

ModelConfig gpt2(const char* name, int L, int C, int H, int V, int T) {
  ModelConfig c;
  c.preset = name;
  c.family = "gpt2";
  c.n_layer = L;
  c.d_model = C;
  c.n_head = H;
  c.n_kv_head = H;
  c.d_ff = 4 * C;
  c.vocab_size = V;
  c.max_seq_len = T;
  c.tied_embeddings = true;
  c.norm_eps = 1e-5f;
  return c;
}

ModelConfig llama(const char* name, int L, int C, int H, int KV, int F, int V, int T, bool tied,
                  float theta) {
  ModelConfig c;
  c.preset = name;
  c.family = "llama";
  c.n_layer = L;
  c.d_model = C;
  c.n_head = H;
  c.n_kv_head = KV;
  c.d_ff = F;
  c.vocab_size = V;
  c.max_seq_len = T;
  c.tied_embeddings = tied;
  c.norm_eps = 1e-5f;
  c.rope_theta = theta;
  return c;
}

}  // namespace

std::vector<std::string> model_preset_names() {
  return {"gpt2-tiny",  "gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1.5b",
          "llama-tiny", "llama-1b",  "llama-8b",  "llama-70b"};
}

ModelConfig model_preset(const std::string& name) {
  // GPT-2 sizes from the GPT-2 paper / Hugging Face configs; Llama sizes from Llama 3 / 3.2
  // (context capped at 8192 here; vocabulary 128256).
  if (name == "gpt2-tiny") return gpt2("gpt2-tiny", 6, 384, 6, 8192, 256);
  if (name == "gpt2-124m") return gpt2("gpt2-124m", 12, 768, 12, 50257, 1024);
  if (name == "gpt2-350m") return gpt2("gpt2-350m", 24, 1024, 16, 50257, 1024);
  if (name == "gpt2-774m") return gpt2("gpt2-774m", 36, 1280, 20, 50257, 1024);
  if (name == "gpt2-1.5b") return gpt2("gpt2-1.5b", 48, 1600, 25, 50257, 1024);
  if (name == "llama-tiny") return llama("llama-tiny", 6, 384, 6, 2, 1024, 8192, 256, false, 1e4f);
  if (name == "llama-1b") return llama("llama-1b", 16, 2048, 32, 8, 8192, 128256, 8192, true, 5e5f);
  if (name == "llama-8b") return llama("llama-8b", 32, 4096, 32, 8, 14336, 128256, 8192, false, 5e5f);
  if (name == "llama-70b")
    return llama("llama-70b", 80, 8192, 64, 8, 28672, 128256, 8192, false, 5e5f);
  std::string names;
  for (const auto& n : model_preset_names()) names += (names.empty() ? "" : ", ") + n;
  NURI_THROW(config, "model.preset", "unknown model preset '" << name << "'; choose one of: " << names);
}

void ModelConfig::validate() const {
  const char* op = "model config";
  NURI_CHECK(family == "gpt2" || family == "llama", config, op,
             "model.family must be \"gpt2\" or \"llama\", got \"" << family << "\"");
  NURI_CHECK(n_layer >= 1, shape, op, "model.n_layer must be >= 1, got " << n_layer);
  NURI_CHECK(d_model >= 1 && n_head >= 1, shape, op,
             "model.d_model and model.n_head must be >= 1, got " << d_model << " and " << n_head);
  if (d_model % n_head != 0) {
    int below = n_head, above = n_head;
    while (below > 1 && d_model % below != 0) --below;
    while (above < d_model && d_model % above != 0) ++above;
    NURI_THROW(shape, op, "model.n_head (" << n_head << ") must divide model.d_model (" << d_model
                                           << "); the nearest that do are " << below << " and " << above);
  }
  NURI_CHECK(n_kv_head >= 1 && n_head % n_kv_head == 0, shape, op,
             "model.n_kv_head (" << n_kv_head << ") must divide model.n_head (" << n_head << ")");
  NURI_CHECK(family != "llama" || head_dim() % 2 == 0, shape, op,
             "RoPE needs an even head dimension; d_model/n_head = " << head_dim());
  NURI_CHECK(d_ff >= 1, shape, op, "model.d_ff must be >= 1, got " << d_ff);
  NURI_CHECK(vocab_size >= 2, shape, op, "model.vocab_size must be >= 2, got " << vocab_size);
  NURI_CHECK(max_seq_len >= 1, shape, op, "model.max_seq_len must be >= 1, got " << max_seq_len);
  NURI_CHECK(norm_eps > 0 && std::isfinite(norm_eps), config, op,
             "model.norm_eps must be a positive number, got " << norm_eps);
  NURI_CHECK(rope_theta > 0 && std::isfinite(rope_theta), config, op,
             "model.rope_theta must be a positive number, got " << rope_theta);
  NURI_CHECK(activation_dtype == "auto" || activation_dtype == "fp32" || activation_dtype == "bf16", config, op,
             "model.activation_dtype must be \"auto\", \"fp32\" or \"bf16\", got \"" << activation_dtype << "\"");
}

int64_t ModelConfig::num_params(bool with_positions) const {
  const int64_t C = d_model, F = d_ff, V = vocab_size, D = head_dim();
  const int64_t QKV = int64_t(n_head + 2 * n_kv_head) * D, HD = int64_t(n_head) * D;
  const bool g = family == "gpt2";
  int64_t per_layer = QKV * C + C * HD + (g ? 2 * F * C : 3 * F * C);
  per_layer += g ? (4 * C + QKV + C + F + C) : 2 * C;  // norms and biases
  int64_t n = V * C + n_layer * per_layer + (g ? 2 * C : C);
  if (g && with_positions) n += int64_t(max_seq_len) * C;
  if (!tied_embeddings) n += V * C;
  return n;
}

double ModelConfig::train_flops_per_token(int seq_len) const {
  return 6.0 * double(num_params(false)) + 12.0 * n_layer * double(seq_len) * d_model;
}

BackendMemoryFacts memory_facts(const Backend& backend, const ModelConfig& cfg) {
  return {backend.bf16_matmul_inputs(cfg.head_dim()), backend.frozen_weight_bytes()};
}

MemoryEstimate estimate_memory(const ModelConfig& cfg, int B, int T, const BackendMemoryFacts& facts) {
  const double N = double(B) * T, C = cfg.d_model, F = cfg.d_ff, D = cfg.head_dim();
  const double QKV = (cfg.n_head + 2.0 * cfg.n_kv_head) * D, HD = cfg.n_head * D;
  const double fc = cfg.family == "gpt2" ? F : 2 * F;
  const double f = 4.0;  // bytes per fp32
  MemoryEstimate m;
  m.params_bytes = f * double(cfg.num_params());
  m.grads_bytes = m.params_bytes;
  m.adam_bytes = 2 * m.params_bytes;
  m.weight_copy_bytes = double(facts.frozen_weight_bytes) * double(cfg.num_params());
  // One block's saved activations: two norm outputs and statistics, qkv, attention output and
  // its log-sum-exp, the mid-block residual, the MLP pre-activation and activation.
  const double block = N * (2 * C + 4 + QKV + HD + C + fc + F) + double(B) * cfg.n_head * T;
  // Activation gradients live one block at a time: the residual gradient plus scratch.
  const double grad_scratch = N * (C + C + std::max(QKV, fc) + std::max(F, HD) + fc);
  // The fused LM head keeps one chunk of logits (see cross_entropy.cpp) and the final norm.
  const double chunk_rows = std::max(16.0, std::min(N, double(kLmHeadChunkFloats) / cfg.vocab_size));
  const double head = N * (2 * C + 2) + chunk_rows * cfg.vocab_size + N * 2;  // + tokens/targets
  const double residuals = (cfg.n_layer + 1) * N * C;
  // bf16 activations: each block's large tensors (norm outputs, qkv, attention output, MLP
  // pre-activation and activation) at half the bytes.
  const double large = N * (2 * C + QKV + HD + fc + F);
  const double set = cfg.bf16_activations(facts.bf16_matmul_inputs) ? block - large / 2 : block;
  m.activations_bytes = f * (residuals + cfg.n_layer * set + grad_scratch + head);
  m.activations_recompute_bytes = f * (residuals + set + grad_scratch + head);
  return m;
}

}  // namespace nuri

// hf_logits: the nuri side of tests/hf_parity.sh. Uses only nuri's public API.
//
//   hf_logits init <gpt2|llama> OUT.bin [--n_kv_head KV] [--tied 0|1] [--seed N]
//       A small random model file (2 layers, C=32, 4 heads, F=64 (gpt2) / 48 (llama), V=97,
//       max_seq_len 16, rope_theta 5e5): GPT-2 init, then norms and biases perturbed and the q/k
//       rows scaled up so that attention is far from uniform (a wrong mask, scale or RoPE shows).
//   hf_logits logits MODEL.bin TOKENS.bin B T OUT.bin
//       forward_logits on int32 tokens (B,T); writes float32 logits (B,T,V).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace {

const char* kUsage =
    "usage: hf_logits init <gpt2|llama> OUT.bin [--n_kv_head KV] [--tied 0|1] [--seed N]\n"
    "       hf_logits logits MODEL.bin TOKENS.bin B T OUT.bin\n";

void perturb(nuri::Model& model, uint64_t seed) {
  const nuri::ModelConfig& cfg = model.config();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const nuri::ParamTensor& t : model.tensors()) {
    if (t.weight_decay) continue;  // norms and biases
    const bool norm_weight = t.name.ends_with(".weight");
    float* p = model.params() + t.offset;
    for (size_t i = 0; i < t.numel; ++i) p[i] = norm_weight ? 1.0f + 0.2f * normal(rng) : 0.05f * normal(rng);
  }
  const int64_t qk_rows = int64_t(cfg.n_head + cfg.n_kv_head) * cfg.head_dim();
  for (int l = 0; l < cfg.n_layer; ++l) {
    const nuri::ParamTensor& t = model.tensor("blocks." + std::to_string(l) + ".attn.qkv.weight");
    float* p = model.params() + t.offset;
    for (size_t i = 0; i < size_t(qk_rows) * cfg.d_model; ++i) p[i] *= 6.0f;
  }
}

int run_init(int argc, char** argv) {
  if (argc < 4 || (argc - 4) % 2 != 0) throw std::invalid_argument(kUsage);
  const std::string family = argv[2];
  if (family != "gpt2" && family != "llama") throw std::invalid_argument("family must be gpt2 or llama");
  const bool gpt2 = family == "gpt2";
  nuri::ModelConfig cfg;
  cfg.preset = "hf-parity";
  cfg.family = family;
  cfg.n_layer = 2;
  cfg.d_model = 32;
  cfg.n_head = 4;
  cfg.n_kv_head = gpt2 ? 4 : 2;
  cfg.d_ff = gpt2 ? 64 : 48;
  cfg.vocab_size = 97;
  cfg.max_seq_len = 16;
  cfg.tied_embeddings = gpt2;
  cfg.rope_theta = 5e5f;
  uint64_t seed = 7;
  for (int i = 4; i < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--n_kv_head") {
      cfg.n_kv_head = std::stoi(value);
    } else if (key == "--tied") {
      cfg.tied_embeddings = value != "0";
    } else if (key == "--seed") {
      seed = std::stoull(value);
    } else {
      throw std::invalid_argument("unknown option " + key + "\n" + kUsage);
    }
  }
  cfg.validate();
  std::unique_ptr<nuri::Backend> backend = nuri::make_backend("cpu", 1);
  nuri::Model model(cfg, *backend);
  model.init_weights(seed);
  perturb(model, seed + 1);
  nuri::save_model(argv[3], model);
  std::printf("wrote %s: %s, %zu parameters\n", argv[3], family.c_str(), model.num_params());
  return 0;
}

int run_logits(int argc, char** argv) {
  if (argc != 7) throw std::invalid_argument(kUsage);
  const std::string model_path = argv[2], tokens_path = argv[3], out_path = argv[6];
  const int B = std::stoi(argv[4]), T = std::stoi(argv[5]);
  const nuri::ModelConfig cfg = nuri::read_model_config(model_path);
  std::unique_ptr<nuri::Backend> backend = nuri::make_backend("cpu", 1);
  nuri::Model model(cfg, *backend);
  nuri::load_model_weights(model_path, model);
  std::vector<int32_t> tokens(size_t(B) * T);
  std::ifstream in(tokens_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(tokens.data()), std::streamsize(tokens.size() * 4));
  if (!in) throw std::runtime_error("cannot read " + std::to_string(tokens.size()) + " tokens from " + tokens_path);
  std::vector<float> logits(tokens.size() * size_t(cfg.vocab_size));
  model.forward_logits(logits.data(), tokens.data(), B, T);
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
  if (!out) throw std::runtime_error("cannot write " + out_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "init") return run_init(argc, argv);
    if (mode == "logits") return run_logits(argc, argv);
    std::cerr << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "hf_logits: " << e.what() << "\n";
    return 1;
  }
}

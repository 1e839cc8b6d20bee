// parity_dump: runs one forward, backward and AdamW step of a small nuri model and writes
// everything an independent implementation needs to check it (tests/torch_parity.py does, with
// PyTorch). Uses only nuri's public API.
//
//   parity_dump <gpt2|llama> <outdir> [--n_layer N] [--d_model C] [--n_head H] [--n_kv_head KV]
//               [--d_ff F] [--vocab V] [--seq T] [--batch B] [--max_seq S] [--tied 0|1]
//               [--recompute 0|1] [--rope_theta X] [--norm_eps X] [--lr X] [--weight_decay X]
//               [--attn_gain X] [--seed N]
//
// Defaults: 2 layers, C=32, H=4, KV=4 (gpt2) / 2 (llama), F=64 (gpt2) / 48 (llama), V=97, T=11,
// B=3, max_seq 16, tied (gpt2) / untied (llama), no recompute, AdamW lr 1e-3, betas (0.9, 0.95),
// eps 1e-8, weight decay 0.1, no clipping; attn_gain 6 (see below), seed 1234.
//
// Writes into <outdir> (created if missing):
//   meta.json         config, tensor table (name, shape, offset, numel, weight_decay), B, T,
//                     loss (from forward_backward), loss_eval (from forward_loss), adamw settings
//   params.bin        float32 (num_params): initial parameters (norms and biases perturbed)
//   tokens.bin        int32 (B*T)
//   targets.bin       int32 (B*T), a few set to -1 (ignored by the loss)
//   logits.bin        float32 (B*T*V) from forward_logits
//   grads.bin         float32 (num_params): gradient of the mean loss
//   params_step1.bin  float32 (num_params): parameters after one AdamW step (no clipping)
// All binary files are little-endian (this host's order; nuri builds only for little-endian).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nuri/backend.hpp"
#include "nuri/config.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"

namespace {

const char* kUsage =
    "usage: parity_dump <gpt2|llama> <outdir> [--n_layer N] [--d_model C] [--n_head H]\n"
    "         [--n_kv_head KV] [--d_ff F] [--vocab V] [--seq T] [--batch B] [--max_seq S]\n"
    "         [--tied 0|1] [--recompute 0|1] [--rope_theta X] [--norm_eps X] [--lr X]\n"
    "         [--weight_decay X] [--attn_gain X] [--seed N]\n";

template <typename T>
void write_file(const std::filesystem::path& path, const std::vector<T>& data) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot open " + path.string() + " for writing");
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(T)));
  out.close();
  if (!out) throw std::runtime_error("failed writing " + path.string());
}

std::vector<float> copy_of(const float* p, size_t n) { return std::vector<float>(p, p + n); }

// "--key value" pairs into a map; throws on a stray word or a key without a value.
std::map<std::string, std::string> parse_options(int argc, char** argv, int first) {
  std::map<std::string, std::string> opts;
  for (int i = first; i < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc)
      throw std::invalid_argument("expected '--option value', got '" + key + "'");
    opts[key.substr(2)] = argv[i + 1];
  }
  return opts;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << kUsage;
    return 2;
  }
  try {
    const std::string family = argv[1];
    const std::filesystem::path outdir = argv[2];
    if (family != "gpt2" && family != "llama")
      throw std::invalid_argument("family must be gpt2 or llama, got '" + family + "'");
    std::map<std::string, std::string> opts = parse_options(argc, argv, 3);
    const bool gpt2 = family == "gpt2";
    auto take = [&](const std::string& key, double fallback) {
      auto it = opts.find(key);
      if (it == opts.end()) return fallback;
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(it->second, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != it->second.size())
        throw std::invalid_argument("--" + key + " needs a number, got '" + it->second + "'");
      opts.erase(it);
      return v;
    };

    nuri::ModelConfig cfg;
    cfg.preset = "parity";
    cfg.family = family;
    cfg.n_layer = int(take("n_layer", 2));
    cfg.d_model = int(take("d_model", 32));
    cfg.n_head = int(take("n_head", 4));
    cfg.n_kv_head = int(take("n_kv_head", gpt2 ? 4 : 2));
    cfg.d_ff = int(take("d_ff", gpt2 ? 64 : 48));
    cfg.vocab_size = int(take("vocab", 97));
    cfg.max_seq_len = int(take("max_seq", 16));
    cfg.tied_embeddings = take("tied", gpt2 ? 1 : 0) != 0;
    cfg.recompute = take("recompute", 0) != 0;
    cfg.norm_eps = float(take("norm_eps", 1e-5));
    cfg.rope_theta = float(take("rope_theta", 10000.0));
    const int T = int(take("seq", 11));
    const int B = int(take("batch", 3));
    const uint64_t seed = uint64_t(take("seed", 1234));
    const float attn_gain = float(take("attn_gain", 6.0));
    nuri::OptimConfig ocfg;
    ocfg.lr = take("lr", 1e-3);
    ocfg.beta1 = 0.9;
    ocfg.beta2 = 0.95;
    ocfg.eps = 1e-8;
    ocfg.weight_decay = take("weight_decay", 0.1);
    ocfg.grad_clip = 0;  // the parity step checks the update itself, not clipping
    if (!opts.empty()) throw std::invalid_argument("unknown option --" + opts.begin()->first);
    if (B < 1 || T < 1) throw std::invalid_argument("--batch and --seq must be >= 1");
    cfg.validate();

    std::unique_ptr<nuri::Backend> backend = nuri::make_backend("cpu", 1);
    nuri::Model model(cfg, *backend);
    model.init_weights(seed);

    // Norm weights of exactly 1 and biases of exactly 0 would hide a missing or misplaced
    // multiply/add; perturb every non-decayed tensor (norms, biases).
    std::mt19937_64 rng(seed + 1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const nuri::ParamTensor& t : model.tensors()) {
      if (t.weight_decay) continue;
      const bool norm_weight = t.name.ends_with(".weight");
      float* p = model.params() + t.offset;
      for (size_t i = 0; i < t.numel; ++i)
        p[i] = norm_weight ? 1.0f + 0.2f * normal(rng) : 0.05f * normal(rng);
    }

    // GPT-2's N(0, 0.02) init gives attention scores ~0.03: nearly uniform attention, under which
    // a wrong score scale, mask or RoPE barely moves the logits. Scaling the q and k rows of each
    // qkv weight by attn_gain makes the scores O(1) (attn_gain^2 larger).
    const int64_t qk_rows = int64_t(cfg.n_head + cfg.n_kv_head) * cfg.head_dim();
    for (int l = 0; l < cfg.n_layer; ++l) {
      const nuri::ParamTensor& t = model.tensor("blocks." + std::to_string(l) + ".attn.qkv.weight");
      float* p = model.params() + t.offset;
      for (size_t i = 0; i < size_t(qk_rows) * cfg.d_model; ++i) p[i] *= attn_gain;
    }

    const size_t N = size_t(B) * T;
    std::vector<int32_t> tokens(N), targets(N);
    std::uniform_int_distribution<int32_t> token_dist(0, cfg.vocab_size - 1);
    for (size_t i = 0; i < N; ++i) {
      tokens[i] = token_dist(rng);
      targets[i] = token_dist(rng);
    }
    for (size_t i = 2; i < N; i += 7) targets[i] = -1;  // ignored positions

    std::filesystem::create_directories(outdir);
    const size_t P = model.num_params();
    write_file(outdir / "params.bin", copy_of(model.params(), P));
    write_file(outdir / "tokens.bin", tokens);
    write_file(outdir / "targets.bin", targets);

    std::vector<float> logits(N * size_t(cfg.vocab_size));
    model.forward_logits(logits.data(), tokens.data(), B, T);
    write_file(outdir / "logits.bin", logits);

    const float loss_eval = model.forward_loss(tokens.data(), targets.data(), B, T);
    model.zero_grads();
    const float loss = model.forward_backward(tokens.data(), targets.data(), B, T, 1.0f);
    write_file(outdir / "grads.bin", copy_of(model.grads(), P));

    nuri::AdamW opt(ocfg, model, *backend);
    opt.step(ocfg.lr, opt.grad_norm());
    write_file(outdir / "params_step1.bin", copy_of(model.params(), P));

    nlohmann::json meta;
    meta["config"] = {{"family", cfg.family},
                      {"n_layer", cfg.n_layer},
                      {"d_model", cfg.d_model},
                      {"n_head", cfg.n_head},
                      {"n_kv_head", cfg.n_kv_head},
                      {"d_ff", cfg.d_ff},
                      {"vocab_size", cfg.vocab_size},
                      {"max_seq_len", cfg.max_seq_len},
                      {"tied_embeddings", cfg.tied_embeddings},
                      {"recompute", cfg.recompute},
                      {"norm_eps", cfg.norm_eps},
                      {"rope_theta", cfg.rope_theta}};
    nlohmann::json tensors = nlohmann::json::array();
    for (const nuri::ParamTensor& t : model.tensors())
      tensors.push_back({{"name", t.name},
                         {"shape", t.shape},
                         {"offset", t.offset},
                         {"numel", t.numel},
                         {"weight_decay", t.weight_decay}});
    meta["tensors"] = tensors;
    meta["num_params"] = P;
    meta["B"] = B;
    meta["T"] = T;
    meta["loss"] = loss;
    meta["loss_eval"] = loss_eval;
    meta["attn_gain"] = attn_gain;
    meta["adamw"] = {{"lr", ocfg.lr},
                     {"beta1", ocfg.beta1},
                     {"beta2", ocfg.beta2},
                     {"eps", ocfg.eps},
                     {"weight_decay", ocfg.weight_decay}};
    std::ofstream out(outdir / "meta.json");
    if (!out) throw std::runtime_error("cannot open " + (outdir / "meta.json").string());
    out << meta.dump(1) << "\n";
    out.close();
    if (!out) throw std::runtime_error("failed writing " + (outdir / "meta.json").string());
    std::printf("parity_dump: %s, %zu parameters, B=%d T=%d, loss %.6f -> %s\n", family.c_str(), P,
                B, T, loss, outdir.string().c_str());
    return 0;
  } catch (const std::invalid_argument& e) {
    std::cerr << "parity_dump: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "parity_dump: " << e.what() << "\n";
    return 1;
  }
}

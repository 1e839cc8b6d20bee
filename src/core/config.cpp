// TOML configuration with --set overrides, checked against a schema of every known key.
#include "nuri/config.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <toml++/toml.h>

#include "nuri/error.hpp"

namespace nuri {

namespace {

struct Key {
  std::string name;  // "section.key"
  std::string type;  // for messages and --help-config
  std::string doc;
  std::function<void(const toml::node&, const std::string& at)> set;
  std::function<std::string()> get;  // current value in TOML syntax
};

std::string quote(const std::string& s) {
  std::ostringstream o;
  o << toml::value<std::string>(s);
  return o.str();
}

// The shortest text that reads back to the same value of type T (so 1e-5f prints as 1e-05,
// not 9.9999997473787516e-06), always with a '.', 'e', "inf" or "nan" so TOML reads a float.
template <typename T>
std::string fmt_real(T v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

[[noreturn]] void bad_type(const std::string& key, const std::string& want, const std::string& at) {
  NURI_THROW(config, "config", "key '" << key << "' at " << at << " must be " << want);
}

Key int_key(const std::string& name, int* field, int lo, int hi, const std::string& doc) {
  return {name, "integer", doc,
          [=](const toml::node& n, const std::string& at) {
            auto v = n.value_exact<int64_t>();
            if (!v) bad_type(name, "an integer", at);
            if (*v < lo || *v > hi)
              NURI_THROW(config, "config", "key '" << name << "' at " << at << " is " << *v
                                               << "; it must be in [" << lo << ", " << hi << "]");
            *field = int(*v);
          },
          [=] { return std::to_string(*field); }};
}

Key u64_key(const std::string& name, uint64_t* field, const std::string& doc) {
  return {name, "integer", doc,
          [=](const toml::node& n, const std::string& at) {
            auto v = n.value_exact<int64_t>();
            if (!v || *v < 0) bad_type(name, "a non-negative integer", at);
            *field = uint64_t(*v);
          },
          [=] { return std::to_string(*field); }};
}

template <typename T>
Key real_key(const std::string& name, T* field, double lo, double hi, const std::string& doc) {
  return {name, "number", doc,
          [=](const toml::node& n, const std::string& at) {
            std::optional<double> v;
            if (n.is_floating_point()) v = n.value<double>();
            if (n.is_integer()) v = double(*n.value<int64_t>());
            if (!v) bad_type(name, "a number", at);
            if (!std::isfinite(*v) || *v < lo || *v > hi)
              NURI_THROW(config, "config", "key '" << name << "' at " << at << " is " << *v
                                               << "; it must be in [" << lo << ", " << hi << "]");
            *field = T(*v);
          },
          [=] { return fmt_real(*field); }};
}

Key bool_key(const std::string& name, bool* field, const std::string& doc) {
  return {name, "boolean", doc,
          [=](const toml::node& n, const std::string& at) {
            auto v = n.value_exact<bool>();
            if (!v) bad_type(name, "true or false", at);
            *field = *v;
          },
          [=] { return std::string(*field ? "true" : "false"); }};
}

Key string_key(const std::string& name, std::string* field, std::vector<std::string> allowed,
               const std::string& doc) {
  return {name, "string", doc,
          [=](const toml::node& n, const std::string& at) {
            auto v = n.value_exact<std::string>();
            // From --set, "train.sample_prompt=123" means the text "123", not a number.
            if (!v && at.rfind("--set ", 0) == 0) v = at.substr(at.find('=') + 1);
            if (!v) bad_type(name, "a string", at);
            if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), *v) == allowed.end()) {
              std::string list;
              for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + quote(a);
              NURI_THROW(config, "config", "key '" << name << "' at " << at << " is " << quote(*v)
                                               << "; choose one of " << list);
            }
            *field = *v;
          },
          [=] { return quote(*field); }};
}

Key strings_key(const std::string& name, std::vector<std::string>* field, const std::string& doc) {
  return {name, "array of strings", doc,
          [=](const toml::node& n, const std::string& at) {
            field->clear();
            if (auto s = n.value_exact<std::string>()) {
              field->push_back(*s);
              return;
            }
            const toml::array* arr = n.as_array();
            if (!arr) bad_type(name, "a string or an array of strings", at);
            for (const auto& e : *arr) {
              auto s = e.value_exact<std::string>();
              if (!s) bad_type(name, "an array of strings", at);
              field->push_back(*s);
            }
          },
          [=] {
            std::string s = "[";
            for (size_t i = 0; i < field->size(); ++i) s += (i ? ", " : "") + quote((*field)[i]);
            return s + "]";
          }};
}

Key reals_key(const std::string& name, std::vector<double>* field, double lo, double hi, const std::string& doc) {
  return {name, "array of numbers", doc,
          [=](const toml::node& n, const std::string& at) {
            field->clear();
            const toml::array* arr = n.as_array();
            if (!arr) bad_type(name, "an array of numbers", at);
            for (const auto& e : *arr) {
              std::optional<double> v;
              if (e.is_floating_point()) v = e.value<double>();
              if (e.is_integer()) v = double(*e.value<int64_t>());
              if (!v) bad_type(name, "an array of numbers", at);
              if (!std::isfinite(*v) || *v < lo || *v > hi)
                NURI_THROW(config, "config", "key '" << name << "' at " << at << " holds " << *v
                                                 << "; each value must be in [" << lo << ", " << hi << "]");
              field->push_back(*v);
            }
          },
          [=] {
            std::string s = "[";
            for (size_t i = 0; i < field->size(); ++i) s += (i ? ", " : "") + fmt_real((*field)[i]);
            return s + "]";
          }};
}

std::vector<Key> schema(RunConfig& c) {
  ModelConfig& m = c.model;
  DataConfig& d = c.data;
  OptimConfig& o = c.optim;
  TrainConfig& t = c.train;
  ParallelConfig& p = c.parallel;
  CheckpointConfig& k = c.checkpoint;
  const int big = 1 << 30;
  return {
      string_key("backend", &c.backend, {"cpu", "cuda"}, "compute backend (cuda: one GPU per rank, docs/cuda.md)"),
      string_key("cpu_gemm", &c.cpu_gemm, {"auto", "openblas", "eigen", "bf16"},
                 "CPU GEMM: auto (fp32: OpenBLAS if its kernel uses AVX-512, else Eigen), "
                 "openblas, eigen, or bf16 (AVX512_BF16 mixed precision); env NURI_CPU_GEMM"),
      string_key("model.preset", &m.preset, model_preset_names(),
                 "starting point; the other model keys override it"),
      string_key("model.family", &m.family, {"gpt2", "llama"}, "architecture family"),
      int_key("model.n_layer", &m.n_layer, 1, 100000, "transformer blocks"),
      int_key("model.d_model", &m.d_model, 1, big, "model width"),
      int_key("model.n_head", &m.n_head, 1, 100000, "attention (query) heads"),
      int_key("model.n_kv_head", &m.n_kv_head, 1, 100000, "key/value heads (GQA when < n_head)"),
      int_key("model.d_ff", &m.d_ff, 1, big, "MLP hidden width"),
      int_key("model.vocab_size", &m.vocab_size, 2, big, "vocabulary size (>= the tokenizer's)"),
      int_key("model.max_seq_len", &m.max_seq_len, 1, big, "longest sequence"),
      bool_key("model.tied_embeddings", &m.tied_embeddings, "LM head shares the token embedding"),
      real_key("model.norm_eps", &m.norm_eps, 1e-12, 1.0, "epsilon of LayerNorm/RMSNorm"),
      real_key("model.rope_theta", &m.rope_theta, 1.0, 1e9, "RoPE base (llama)"),
      bool_key("model.recompute", &m.recompute, "recompute block activations in backward"),
      string_key("model.activation_dtype", &m.activation_dtype, {"auto", "fp32", "bf16"},
                 "block activations between ops and for backward: auto (bf16 on cuda), fp32, bf16"),
      strings_key("data.train_files", &d.train_files, "UTF-8 text files; blank line = new document"),
      strings_key("data.datasets", &d.datasets, "token-shard directories from `nuri tokenize` (not with train_files)"),
      reals_key("data.weights", &d.weights, 1e-9, 1e9, "sampling weight per dataset (empty: by tokens)"),
      bool_key("data.verify_shards", &d.verify_shards, "checksum every shard at start (reads all data)"),
      string_key("data.tokenizer", &d.tokenizer, {}, "\"bytes\" (byte-level, vocab 257) or a tokenizer file"),
      real_key("data.val_fraction", &d.val_fraction, 0.0, 0.5, "train_files: held-out fraction of documents"),
      real_key("optim.lr", &o.lr, 0.0, 1e30, "peak learning rate"),
      real_key("optim.min_lr", &o.min_lr, 0.0, 1e30, "final learning rate"),
      int_key("optim.warmup_steps", &o.warmup_steps, 0, big, "linear warmup steps"),
      string_key("optim.schedule", &o.schedule, {"cosine", "wsd", "constant"}, "LR schedule after warmup"),
      real_key("optim.decay_fraction", &o.decay_fraction, 0.0, 1.0, "wsd: fraction of steps decaying"),
      real_key("optim.weight_decay", &o.weight_decay, 0.0, 10.0, "decoupled weight decay (matrices only)"),
      real_key("optim.beta1", &o.beta1, 0.0, 0.999999, "AdamW beta1"),
      real_key("optim.beta2", &o.beta2, 0.0, 0.99999999, "AdamW beta2"),
      real_key("optim.eps", &o.eps, 1e-30, 1.0, "AdamW epsilon"),
      real_key("optim.grad_clip", &o.grad_clip, 0.0, 1e30, "global grad-norm clip (0: off)"),
      int_key("train.steps", &t.steps, 1, big, "optimizer steps"),
      int_key("train.batch_size", &t.batch_size, 1, big, "sequences per micro-batch"),
      int_key("train.seq_len", &t.seq_len, 1, big, "tokens per sequence"),
      int_key("train.grad_accum", &t.grad_accum, 1, big, "micro-batches per step"),
      int_key("train.eval_every", &t.eval_every, 0, big, "steps between validations (0: end only)"),
      int_key("train.eval_batches", &t.eval_batches, 1, big, "micro-batches per validation"),
      int_key("train.log_every", &t.log_every, 1, big, "steps between progress lines"),
      u64_key("train.seed", &t.seed, "seed for weights and data order"),
      string_key("train.run_dir", &t.run_dir, {}, "where metrics, config and model go"),
      int_key("train.threads", &t.threads, 0, 4096, "threads per rank (0: cores / local ranks)"),
      real_key("train.peak_gflops", &t.peak_gflops, 0.0, 1e12, "MFU peak (0: measure sgemm)"),
      string_key("train.nonfinite", &t.nonfinite, {"skip", "stop"}, "on a NaN/inf loss: skip the step or stop"),
      int_key("train.max_nonfinite_skips", &t.max_nonfinite_skips, 0, big, "consecutive skips before stopping"),
      string_key("train.sample_prompt", &t.sample_prompt, {}, "prompt sampled at the end"),
      int_key("train.sample_every", &t.sample_every, 0, big, "steps between samples (0: end only)"),
      int_key("train.sample_tokens", &t.sample_tokens, 0, big, "tokens per sample"),
      real_key("train.sample_temperature", &t.sample_temperature, 0.0, 100.0, "sampling temperature"),
      int_key("train.sample_top_k", &t.sample_top_k, 0, big, "top-k (0: all)"),
      bool_key("train.save", &t.save, "write run_dir/model.bin at the end"),
      int_key("train.stop_at", &t.stop_at, 0, big,
              "stop after this step with a checkpoint; the schedule still spans train.steps (0: run to the end)"),
      string_key("train.init_from", &t.init_from, {},
                 "a nuri model file to start from instead of random weights (ignored when resuming)"),
      int_key("parallel.tp", &p.tp, 1, 1 << 20,
              "tensor-parallel degree: attention heads, MLP and vocabulary split over tp ranks (Megatron style)"),
      bool_key("parallel.sequence_parallel", &p.sequence_parallel,
               "with tp > 1, split the norm regions over rows (batch x seq_len must divide by tp)"),
      int_key("parallel.dp", &p.dp, 0, 1 << 20,
              "data-parallel degree; 0: world size / tp (tp x dp must equal the ranks of mpirun -np)"),
      bool_key("parallel.zero1", &p.zero1,
               "ZeRO-1: shard the AdamW moments over DP (reduce-scatter grads, all-gather params)"),
      real_key("parallel.bucket_mb", &p.bucket_mb, 0.0, 1e6,
               "gradient bucket (MiB of fp32), reduced during backward; 0: one per layer"),
      string_key("parallel.dp_comm", &p.dp_comm, {"mpi", "nccl"},
                 "the data-parallel gradient reductions: mpi, or nccl (in GPU memory; needs backend = cuda)"),
      real_key("parallel.comm_timeout_s", &p.comm_timeout_s, 0.0, 1e9,
               "a collective slower than this aborts the job, naming the missing ranks (0: $NURI_COMM_TIMEOUT or 300)"),
      int_key("checkpoint.every", &k.every, 0, big, "save a checkpoint every N steps (0: only at the end)"),
      bool_key("checkpoint.at_end", &k.at_end, "save a checkpoint when the run ends"),
      int_key("checkpoint.keep_last", &k.keep_last, 1, big, "keep the newest N checkpoints"),
      int_key("checkpoint.keep_every", &k.keep_every, 0, big,
              "also keep, permanently, checkpoints whose step is a multiple of this (0: none)"),
      string_key("checkpoint.dir", &k.dir, {}, "where checkpoints go (empty: <train.run_dir>/checkpoints)"),
      string_key("checkpoint.resume", &k.resume, {},
                 "\"auto\" (the latest in checkpoint.dir, if any), \"none\", or a checkpoint or run directory"),
      bool_key("checkpoint.verify", &k.verify, "check every rank file's checksum before resuming"),
      bool_key("checkpoint.async", &k.async,
               "write checkpoints in the background from a snapshot (blocking if the snapshot does not fit in memory)"),
  };
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggestion(const std::string& key, const std::vector<Key>& keys) {
  size_t best = 4;
  std::string name;
  for (const auto& k : keys) {
    size_t dist = edit_distance(key, k.name);
    if (dist < best) best = dist, name = k.name;
  }
  return name.empty() ? "" : " (did you mean '" + name + "'?)";
}

// Flattens nested tables into "a.b.c" -> node.
void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out) {
  for (const auto& [k, v] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* sub = v.as_table()) {
      flatten(*sub, name, out);
    } else {
      out.emplace_back(name, &v);
    }
  }
}

// Parses "section.key=value" into the table (the value in TOML syntax, else a bare string) and
// records where the key came from.
void apply_override(toml::table& root, const std::string& text,
                    std::map<std::string, std::string>& origin) {
  const size_t eq = text.find('=');
  NURI_CHECK(eq != std::string::npos && eq > 0, config, "--set",
             "override '" << text << "' must look like section.key=value (e.g. optim.lr=3e-4)");
  auto trim = [](std::string s) {
    const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value, std::string_view("--set " + text));
  } catch (const toml::parse_error&) {
    parsed = toml::table{};
    parsed.insert("v", value);  // a bare word: take it as a string
  }
  toml::table* t = &root;
  size_t start = 0;
  for (size_t dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    std::string part = key.substr(start, dot - start);
    if (!t->contains(part)) t->insert(part, toml::table{});
    t = (*t)[part].as_table();
    NURI_CHECK(t, config, "--set", "override '" << text << "': '" << part << "' is not a section");
  }
  t->insert_or_assign(key.substr(start), *parsed["v"].node());
  origin[key] = "--set " + text;
}

}  // namespace

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  RunConfig cfg;
  cfg.source = path;
  toml::table root;
  if (!path.empty()) {
    std::ifstream probe(path);
    NURI_CHECK(probe.good(), io, "config", "cannot open config file '" << path
                                            << "'; check the path (nuri train --config FILE)");
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      NURI_THROW(config, "config", "cannot parse " << path << ":" << e.source().begin.line << ":"
                                                  << e.source().begin.column << ": " << e.description());
    }
  }
  std::map<std::string, std::string> origin;  // key -> "--set ..." for overridden keys
  for (const auto& o : overrides) apply_override(root, o, origin);
  auto where = [&](const std::string& name, const toml::node& node) {
    auto it = origin.find(name);
    if (it != origin.end()) return it->second;
    const auto& src = node.source();
    if (src.begin.line > 0 && !path.empty()) return path + ":" + std::to_string(src.begin.line);
    return path.empty() ? std::string("config") : path;
  };

  std::vector<std::pair<std::string, const toml::node*>> entries;
  flatten(root, "", entries);
  std::vector<Key> keys = schema(cfg);
  // Unknown keys first, so a typo is reported as a typo.
  for (const auto& [name, node] : entries) {
    bool known = std::any_of(keys.begin(), keys.end(), [&](const Key& k) { return k.name == name; });
    if (!known) {
      NURI_THROW(config, "config", "unknown key '" << name << "' at " << where(name, *node)
                                                   << suggestion(name, keys)
                                                   << "; `nuri train --help-config` lists every key");
    }
  }
  // The preset first, then every other key overrides it.
  for (const auto& [name, node] : entries) {
    if (name != "model.preset") continue;
    auto v = node->value_exact<std::string>();
    if (!v) bad_type(name, "a string", where(name, *node));
    cfg.model = model_preset(*v);
  }
  // A preset given with --set starts the model afresh: the file's model keys (e.g. those of a
  // run's resolved config.toml) would otherwise silently override it. --set model keys still apply.
  const bool preset_from_cli = origin.count("model.preset") > 0;
  for (const auto& [name, node] : entries) {
    if (name == "model.preset") continue;
    if (preset_from_cli && name.rfind("model.", 0) == 0 && !origin.count(name)) continue;
    for (auto& k : keys)
      if (k.name == name) k.set(*node, where(name, *node));
  }
  cfg.model.validate();
  NURI_CHECK(cfg.optim.min_lr <= cfg.optim.lr, config, "config",
             "optim.min_lr (" << cfg.optim.min_lr << ") must not exceed optim.lr (" << cfg.optim.lr << ")");
  NURI_CHECK(!cfg.train.run_dir.empty(), config, "config", "train.run_dir must not be empty");
  NURI_CHECK(cfg.data.train_files.empty() || cfg.data.datasets.empty(), config, "config",
             "both data.train_files and data.datasets are set; use one: data.train_files for text files "
             "tokenized at start, or data.datasets for token-shard directories written by `nuri tokenize`");
  NURI_CHECK(cfg.data.weights.empty() || cfg.data.weights.size() == cfg.data.datasets.size(), config, "config",
             "data.weights has " << cfg.data.weights.size() << " value(s) but data.datasets has "
                                 << cfg.data.datasets.size() << "; give one weight per dataset, or none");
  NURI_CHECK(!cfg.data.tokenizer.empty(), config, "config",
             "data.tokenizer must not be empty; use \"bytes\" or the path of a tokenizer file");
  NURI_CHECK(int64_t(cfg.train.batch_size) * cfg.train.seq_len < (int64_t(1) << 31), config, "config",
             "train.batch_size x train.seq_len (" << cfg.train.batch_size << " x " << cfg.train.seq_len
                                                   << ") must stay below 2^31 tokens per micro-batch");
  NURI_CHECK(cfg.train.seq_len <= cfg.model.max_seq_len, config, "config",
             "train.seq_len (" << cfg.train.seq_len << ") exceeds model.max_seq_len ("
                               << cfg.model.max_seq_len << ")");
  return cfg;
}

std::string describe_config_keys() {
  RunConfig defaults;
  std::ostringstream out;
  for (const auto& k : schema(defaults)) {
    std::string def = k.get();
    out << "  " << k.name << std::string(k.name.size() < 28 ? 28 - k.name.size() : 1, ' ') << def
        << std::string(def.size() < 14 ? 14 - def.size() : 1, ' ') << k.doc << "\n";
  }
  return out.str();
}

std::string to_toml(const RunConfig& cfg_in) {
  RunConfig cfg = cfg_in;
  std::ostringstream out;
  std::string section;
  for (const auto& k : schema(cfg)) {
    const size_t dot = k.name.find('.');
    std::string sec = dot == std::string::npos ? "" : k.name.substr(0, dot);
    std::string name = dot == std::string::npos ? k.name : k.name.substr(dot + 1);
    if (sec != section) {
      out << "\n[" << sec << "]\n";
      section = sec;
    }
    out << name << " = " << k.get() << "\n";
  }
  return out.str();
}

}  // namespace nuri

// Hugging Face interop: safetensors + config.json for GPT2LMHeadModel and LlamaForCausalLM.
//
// The safetensors format (written and read here by hand; it is small):
//   u64 N (little-endian) | N bytes of JSON header | data
//   header: {"NAME": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
//            "__metadata__": {"format": "pt"}}, offsets relative to the start of the data.
// We pad the header with spaces to a multiple of 8 so the data is 8-byte aligned.
// A sharded model: model-0000i-of-0000N.safetensors + model.safetensors.index.json
//   {"metadata": {"total_size": bytes}, "weight_map": {"NAME": "model-0000i-of-0000N.safetensors"}}.
#include "nuri/hf.hpp"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "nuri/error.hpp"

namespace nuri {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kExportOp = "export hf";
constexpr const char* kImportOp = "import hf";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// ---- the name mapping -------------------------------------------------------------------------

// One Hugging Face tensor and where its values live in nuri's flat buffer: a run of whole rows
// (or, for a 1-D tensor, elements) of one nuri tensor.
struct HfTensor {
  std::string name;            // Hugging Face name
  std::vector<int64_t> shape;  // Hugging Face shape
  size_t offset = 0;           // first float of nuri's piece in the flat parameter buffer
  size_t numel = 0;
  bool transposed = false;     // HF holds the transpose of nuri's (shape[1], shape[0]) piece
};

class HfMapBuilder {
 public:
  explicit HfMapBuilder(const ModelConfig& cfg) : layout_(parameter_layout(cfg)) {}

  // The whole nuri tensor, same layout.
  void same(const std::string& hf_name, const std::string& nuri_name) {
    const ParamTensor& t = find(nuri_name);
    out_.push_back({hf_name, t.full_shape, t.offset, t.numel, false});
  }
  // The whole nuri matrix (out, in), stored by HF as (in, out) (GPT-2's Conv1D).
  void transposed(const std::string& hf_name, const std::string& nuri_name) {
    const ParamTensor& t = find(nuri_name);
    out_.push_back({hf_name, {t.full_shape[1], t.full_shape[0]}, t.offset, t.numel, true});
  }
  // Rows [row_begin, row_begin + rows) of a nuri matrix.
  void rows(const std::string& hf_name, const std::string& nuri_name, int64_t row_begin, int64_t rows) {
    const ParamTensor& t = find(nuri_name);
    const int64_t cols = t.full_shape[1];
    out_.push_back({hf_name, {rows, cols}, t.offset + size_t(row_begin * cols), size_t(rows * cols), false});
  }
  // Checks that the pieces cover the whole buffer once.
  std::vector<HfTensor> finish() {
    size_t mapped = 0;
    for (const HfTensor& t : out_) mapped += t.numel;
    const size_t total = layout_.back().offset + layout_.back().numel;
    NURI_CHECK(mapped == total, internal, "hf names",
               "the Hugging Face name map covers " << mapped << " of " << total << " parameters");
    return std::move(out_);
  }

 private:
  const ParamTensor& find(const std::string& name) const {
    for (const ParamTensor& t : layout_)
      if (t.name == name) return t;
    NURI_THROW(internal, "hf names", "nuri's parameter layout has no tensor '" << name << "'");
  }
  std::vector<ParamTensor> layout_;
  std::vector<HfTensor> out_;
};

void map_gpt2(const ModelConfig& cfg, HfMapBuilder& m) {
  m.same("transformer.wte.weight", "wte");
  m.same("transformer.wpe.weight", "wpe");
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string hf = "transformer.h." + std::to_string(l) + ".";
    const std::string nu = "blocks." + std::to_string(l) + ".";
    m.same(hf + "ln_1.weight", nu + "ln1.weight");
    m.same(hf + "ln_1.bias", nu + "ln1.bias");
    m.transposed(hf + "attn.c_attn.weight", nu + "attn.qkv.weight");  // (C, 3C)
    m.same(hf + "attn.c_attn.bias", nu + "attn.qkv.bias");
    m.transposed(hf + "attn.c_proj.weight", nu + "attn.proj.weight");  // (C, C)
    m.same(hf + "attn.c_proj.bias", nu + "attn.proj.bias");
    m.same(hf + "ln_2.weight", nu + "ln2.weight");
    m.same(hf + "ln_2.bias", nu + "ln2.bias");
    m.transposed(hf + "mlp.c_fc.weight", nu + "mlp.fc.weight");  // (C, F)
    m.same(hf + "mlp.c_fc.bias", nu + "mlp.fc.bias");
    m.transposed(hf + "mlp.c_proj.weight", nu + "mlp.proj.weight");  // (F, C)
    m.same(hf + "mlp.c_proj.bias", nu + "mlp.proj.bias");
  }
  m.same("transformer.ln_f.weight", "ln_f.weight");
  m.same("transformer.ln_f.bias", "ln_f.bias");
  if (!cfg.tied_embeddings) m.same("lm_head.weight", "lm_head.weight");
}

void map_llama(const ModelConfig& cfg, HfMapBuilder& m) {
  const int64_t D = cfg.head_dim(), H = cfg.n_head, KV = cfg.n_kv_head, F = cfg.d_ff;
  m.same("model.embed_tokens.weight", "wte");
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".";
    const std::string nu = "blocks." + std::to_string(l) + ".";
    m.same(hf + "input_layernorm.weight", nu + "ln1.weight");
    m.rows(hf + "self_attn.q_proj.weight", nu + "attn.qkv.weight", 0, H * D);
    m.rows(hf + "self_attn.k_proj.weight", nu + "attn.qkv.weight", H * D, KV * D);
    m.rows(hf + "self_attn.v_proj.weight", nu + "attn.qkv.weight", (H + KV) * D, KV * D);
    m.same(hf + "self_attn.o_proj.weight", nu + "attn.proj.weight");
    m.same(hf + "post_attention_layernorm.weight", nu + "ln2.weight");
    m.rows(hf + "mlp.gate_proj.weight", nu + "mlp.fc.weight", 0, F);
    m.rows(hf + "mlp.up_proj.weight", nu + "mlp.fc.weight", F, F);
    m.same(hf + "mlp.down_proj.weight", nu + "mlp.proj.weight");
  }
  m.same("model.norm.weight", "ln_f.weight");
  if (!cfg.tied_embeddings) m.same("lm_head.weight", "lm_head.weight");
}

// Every Hugging Face tensor of `cfg`, in the order export writes them.
std::vector<HfTensor> hf_tensor_map(const ModelConfig& cfg) {
  HfMapBuilder m(cfg);
  if (cfg.family == "gpt2") {
    map_gpt2(cfg, m);
  } else {
    map_llama(cfg, m);
  }
  return m.finish();
}

// dst (cols, rows) = transpose of src (rows, cols).
void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// ---- writing ----------------------------------------------------------------------------------

// The shortest decimal that reads back as the same float (1e-5f -> 1e-05, not 9.99999974e-06).
double clean_float(float x) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, x);
  return std::strtod(std::string(buf, res.ptr).c_str(), nullptr);
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  NURI_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io, kExportOp,
             "cannot rename '" << tmp << "' to '" << path << "'");
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    NURI_CHECK(out.good(), io, kExportOp, "cannot write '" << tmp << "'; is the directory writable?");
    out << text;
    out.flush();
    NURI_CHECK(out.good(), io, kExportOp, "writing '" << tmp << "' failed (disk full?)");
  }
  rename_into_place(tmp, path);
}

json gpt2_config_json(const ModelConfig& cfg) {
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"model_type", "gpt2"},
          {"n_embd", cfg.d_model},
          {"n_head", cfg.n_head},
          {"n_layer", cfg.n_layer},
          {"n_positions", cfg.max_seq_len},
          {"n_ctx", cfg.max_seq_len},
          {"n_inner", cfg.d_ff},
          {"vocab_size", cfg.vocab_size},
          {"layer_norm_epsilon", clean_float(cfg.norm_eps)},
          {"activation_function", "gelu_new"},
          {"tie_word_embeddings", cfg.tied_embeddings},
          {"torch_dtype", "float32"}};
}

json llama_config_json(const ModelConfig& cfg) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", cfg.d_model},
          {"intermediate_size", cfg.d_ff},
          {"num_attention_heads", cfg.n_head},
          {"num_key_value_heads", cfg.n_kv_head},
          {"head_dim", cfg.head_dim()},
          {"num_hidden_layers", cfg.n_layer},
          {"max_position_embeddings", cfg.max_seq_len},
          {"vocab_size", cfg.vocab_size},
          {"rms_norm_eps", clean_float(cfg.norm_eps)},
          {"rope_theta", clean_float(cfg.rope_theta)},
          {"rope_scaling", nullptr},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", cfg.tied_embeddings},
          {"torch_dtype", "float32"}};
}

// The safetensors header for `tensors` (fp32, stored in this order), padded to a multiple of 8.
std::string safetensors_header(const std::vector<const HfTensor*>& tensors) {
  json header = json::object();
  uint64_t begin = 0;
  for (const HfTensor* t : tensors) {
    const uint64_t end = begin + uint64_t(t->numel) * 4;
    header[t->name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {begin, end}}};
    begin = end;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_safetensors(const std::string& path, const std::vector<const HfTensor*>& tensors,
                       const float* params) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    NURI_CHECK(out.good(), io, kExportOp, "cannot write '" << tmp << "'; is the directory writable?");
    const std::string header = safetensors_header(tensors);
    const uint64_t header_bytes = header.size();
    out.write(reinterpret_cast<const char*>(&header_bytes), 8);
    out.write(header.data(), std::streamsize(header.size()));
    std::vector<float> buffer;  // one transposed tensor
    for (const HfTensor* t : tensors) {
      const float* data = params + t->offset;
      if (t->transposed) {
        buffer.resize(t->numel);
        transpose(data, t->shape[1], t->shape[0], buffer.data());  // nuri (out, in) -> HF (in, out)
        data = buffer.data();
      }
      out.write(reinterpret_cast<const char*>(data), std::streamsize(t->numel * 4));
      NURI_CHECK(out.good(), io, kExportOp, "writing '" << tmp << "' failed (disk full?)");
    }
    out.flush();
    NURI_CHECK(out.good(), io, kExportOp, "writing '" << tmp << "' failed (disk full?)");
  }
  rename_into_place(tmp, path);
}

// Consecutive tensors into shards of at most max_bytes each (a larger tensor alone).
std::vector<std::vector<const HfTensor*>> plan_shards(const std::vector<HfTensor>& tensors,
                                                      size_t max_bytes) {
  std::vector<std::vector<const HfTensor*>> shards(1);
  size_t bytes = 0;
  for (const HfTensor& t : tensors) {
    const size_t n = t.numel * 4;
    if (!shards.back().empty() && bytes + n > max_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(&t);
    bytes += n;
  }
  return shards;
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// Weight files of an earlier export that the new one does not replace (a loader would see both).
void remove_stale_weights(const fs::path& dir, const std::set<std::string>& written) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool weights = name == kSingleFile || name == kIndexFile ||
                         (name.rfind("model-", 0) == 0 && name.find(".safetensors") != std::string::npos);
    if (weights && !written.count(name)) fs::remove(entry.path(), ec);
  }
}

void copy_tokenizer(const std::string& from, const fs::path& dir) {
  const fs::path to = dir / "tokenizer.json";
  const fs::path tmp = dir / "tokenizer.json.tmp";
  std::error_code ec;
  NURI_CHECK(fs::is_regular_file(from), io, kExportOp, "tokenizer file '" << from << "' not found");
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  NURI_CHECK(!ec, io, kExportOp, "cannot copy '" << from << "' to '" << tmp.string() << "': " << ec.message());
  rename_into_place(tmp.string(), to.string());
}

void check_exportable(const ModelConfig& cfg, size_t count, const HfExportOptions& options) {
  cfg.validate();
  NURI_CHECK(cfg.family != "gpt2" || cfg.n_kv_head == cfg.n_head, config, kExportOp,
             "Hugging Face's GPT-2 has multi-head attention only, but this model has n_kv_head = "
                 << cfg.n_kv_head << " and n_head = " << cfg.n_head
                 << "; only a gpt2 model with n_kv_head == n_head can be exported as GPT2LMHeadModel");
  const std::vector<ParamTensor> layout = parameter_layout(cfg);
  const size_t expect = layout.back().offset + layout.back().numel;
  NURI_CHECK(count == expect, shape, kExportOp,
             "got " << count << " parameters but the " << cfg.family << " config needs " << expect
                    << " (the one-process layout of parameter_layout)");
  NURI_CHECK(options.max_shard_bytes > 0, config, kExportOp, "max_shard_bytes must be positive");
}

// ---- reading ----------------------------------------------------------------------------------

struct StEntry {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // relative to the data start
};

struct StFile {
  std::string path;
  uint64_t data_start = 0;  // 8 + header bytes
  std::map<std::string, StEntry> tensors;
};

size_t dtype_bytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;  // a dtype nuri does not read (fine for a tensor it ignores)
}

StEntry parse_entry(const json& j, const std::string& name, const std::string& path) {
  StEntry e;
  try {
    e.dtype = j.at("dtype").get<std::string>();
    e.shape = j.at("shape").get<std::vector<int64_t>>();
    const auto offsets = j.at("data_offsets").get<std::vector<uint64_t>>();
    NURI_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1], data, kImportOp,
               "'" << path << "': tensor '" << name << "' has bad data_offsets");
    e.begin = offsets[0];
    e.end = offsets[1];
  } catch (const json::exception& ex) {
    NURI_THROW(data, kImportOp, "'" << path << "': the header entry of tensor '" << name
                                    << "' is malformed: " << ex.what());
  }
  uint64_t numel = 1;
  for (int64_t d : e.shape) {
    NURI_CHECK(d >= 0, data, kImportOp, "'" << path << "': tensor '" << name << "' has a negative dimension");
    numel *= uint64_t(d);
  }
  const size_t bytes = dtype_bytes(e.dtype);
  NURI_CHECK(bytes == 0 || e.end - e.begin == numel * bytes, data, kImportOp,
             "'" << path << "': tensor '" << name << "' of shape " << shape_str(e.shape) << " and dtype "
                 << e.dtype << " needs " << numel * bytes << " bytes but its data_offsets span "
                 << e.end - e.begin);
  return e;
}

StFile read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  NURI_CHECK(in.good(), io, kImportOp, "cannot open '" << path << "'");
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  uint64_t header_bytes = 0;
  in.read(reinterpret_cast<char*>(&header_bytes), 8);
  NURI_CHECK(in.good() && size >= 8, io, kImportOp,
             "'" << path << "' is truncated: " << size << " bytes, not even a safetensors header length");
  NURI_CHECK(header_bytes <= size - 8 && header_bytes <= (uint64_t(1) << 30), io, kImportOp,
             "'" << path << "' is truncated or not a safetensors file: it announces a " << header_bytes
                 << "-byte header but has " << size << " bytes");
  std::string text(header_bytes, '\0');
  in.read(text.data(), std::streamsize(header_bytes));
  NURI_CHECK(in.good(), io, kImportOp, "cannot read the header of '" << path << "'");
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    NURI_THROW(data, kImportOp, "'" << path << "' has an unreadable safetensors header: " << e.what());
  }
  NURI_CHECK(header.is_object(), data, kImportOp, "'" << path << "': the safetensors header is not a JSON object");
  StFile f;
  f.path = path;
  f.data_start = 8 + header_bytes;
  const uint64_t data_bytes = size - f.data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;
    StEntry e = parse_entry(value, name, path);
    NURI_CHECK(e.end <= data_bytes, io, kImportOp,
               "'" << path << "' is truncated: tensor '" << name << "' ends at data byte " << e.end
                   << " but the file has " << data_bytes << " data bytes");
    f.tensors.emplace(name, std::move(e));
  }
  return f;
}

// IEEE half -> float.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: mant * 2^-24
    const float v = float(mant) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Reads tensor `name` of f (numel values) as fp32 into dst.
void read_tensor(const StFile& f, const std::string& name, const StEntry& e, float* dst, size_t numel) {
  std::ifstream in(f.path, std::ios::binary);
  in.seekg(std::streamoff(f.data_start + e.begin));
  if (e.dtype == "F32") {
    in.read(reinterpret_cast<char*>(dst), std::streamsize(numel * 4));
  } else {
    std::vector<uint16_t> half(numel);
    in.read(reinterpret_cast<char*>(half.data()), std::streamsize(numel * 2));
    for (size_t i = 0; i < numel; ++i) {
      if (e.dtype == "BF16") {
        const uint32_t bits = uint32_t(half[i]) << 16;
        std::memcpy(&dst[i], &bits, 4);
      } else {
        dst[i] = half_to_float(half[i]);
      }
    }
  }
  NURI_CHECK(in.good(), io, kImportOp, "cannot read tensor '" << name << "' from '" << f.path << "'");
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  NURI_CHECK(in.good(), io, kImportOp, "cannot open '" << path << "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    NURI_THROW(data, kImportOp, "'" << path << "' is not valid JSON: " << e.what());
  }
}

// config.json values, each error naming the file and the key.
struct ConfigReader {
  const json& j;
  const std::string& path;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }
  template <typename T>
  T get(const char* key) const {
    NURI_CHECK(has(key), config, kImportOp, "'" << path << "' has no \"" << key << "\"");
    try {
      return j.at(key).get<T>();
    } catch (const json::exception& e) {
      NURI_THROW(config, kImportOp, "'" << path << "': \"" << key << "\" has the wrong type: " << e.what());
    }
  }
  template <typename T>
  T get(const char* key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }
  void require(bool ok, const std::string& what) const {
    NURI_CHECK(ok, config, kImportOp, "'" << path << "': " << what << "; nuri cannot import this model");
  }
};

ModelConfig gpt2_from_config(const ConfigReader& r) {
  ModelConfig c;
  c.preset = "hf-gpt2";
  c.family = "gpt2";
  c.d_model = r.get<int>("n_embd");
  c.n_head = r.get<int>("n_head");
  c.n_kv_head = c.n_head;
  c.n_layer = r.get<int>("n_layer");
  c.max_seq_len = r.get<int>("n_positions");
  c.d_ff = r.get<int>("n_inner", 4 * c.d_model);
  c.vocab_size = r.get<int>("vocab_size");
  c.norm_eps = float(r.get<double>("layer_norm_epsilon", 1e-5));
  c.tied_embeddings = r.get<bool>("tie_word_embeddings", true);
  const std::string act = r.get<std::string>("activation_function", "gelu_new");
  r.require(act == "gelu_new" || act == "gelu_pytorch_tanh",
            "activation_function \"" + act + "\" is not the tanh GELU (gelu_new) nuri computes");
  r.require(r.get<bool>("scale_attn_weights", true), "scale_attn_weights = false");
  r.require(!r.get<bool>("scale_attn_by_inverse_layer_idx", false), "scale_attn_by_inverse_layer_idx = true");
  return c;
}

ModelConfig llama_from_config(const ConfigReader& r) {
  ModelConfig c;
  c.preset = "hf-llama";
  c.family = "llama";
  c.d_model = r.get<int>("hidden_size");
  c.d_ff = r.get<int>("intermediate_size");
  c.n_head = r.get<int>("num_attention_heads");
  c.n_kv_head = r.get<int>("num_key_value_heads", c.n_head);
  c.n_layer = r.get<int>("num_hidden_layers");
  c.max_seq_len = r.get<int>("max_position_embeddings", 2048);
  c.vocab_size = r.get<int>("vocab_size");
  c.norm_eps = float(r.get<double>("rms_norm_eps", 1e-6));
  c.rope_theta = float(r.get<double>("rope_theta", 10000.0));
  c.tied_embeddings = r.get<bool>("tie_word_embeddings", false);
  const std::string act = r.get<std::string>("hidden_act", "silu");
  r.require(act == "silu", "hidden_act \"" + act + "\" is not silu (SwiGLU)");
  if (r.has("rope_scaling"))
    r.require(false, "rope_scaling " + r.j.at("rope_scaling").dump() + " is set; nuri has plain RoPE only");
  r.require(!r.get<bool>("attention_bias", false), "attention_bias = true (nuri's llama has no biases)");
  r.require(!r.get<bool>("mlp_bias", false), "mlp_bias = true (nuri's llama has no biases)");
  if (r.has("head_dim") && c.n_head > 0)
    r.require(r.get<int>("head_dim") * c.n_head == c.d_model,
              "head_dim " + std::to_string(r.get<int>("head_dim")) + " is not hidden_size / num_attention_heads");
  return c;
}

ModelConfig config_from_hf(const std::string& path) {
  const json j = read_json_file(path);
  NURI_CHECK(j.is_object(), data, kImportOp, "'" << path << "' is not a JSON object");
  const ConfigReader r{j, path};
  const std::string type = r.get<std::string>("model_type");
  NURI_CHECK(type == "gpt2" || type == "llama", config, kImportOp,
             "'" << path << "' has model_type \"" << type
                 << "\"; nuri imports \"gpt2\" (GPT2LMHeadModel) and \"llama\" (LlamaForCausalLM) only");
  ModelConfig c = type == "gpt2" ? gpt2_from_config(r) : llama_from_config(r);
  try {
    c.validate();
  } catch (const Error& e) {
    NURI_THROW(config, kImportOp, "'" << path << "' describes a model nuri cannot build: " << e.message());
  }
  return c;
}

// The safetensors files of dir: model.safetensors, else the shards its index names.
std::vector<StFile> open_weights(const fs::path& dir) {
  if (fs::exists(dir / kSingleFile)) return {read_safetensors_header((dir / kSingleFile).string())};
  const fs::path index_path = dir / kIndexFile;
  NURI_CHECK(fs::exists(index_path), io, kImportOp,
             "'" << dir.string() << "' has neither " << kSingleFile << " nor " << kIndexFile
                 << "; nuri reads safetensors only (convert pytorch_model.bin with transformers' "
                    "save_pretrained(..., safe_serialization=True))");
  const json index = read_json_file(index_path.string());
  NURI_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), data,
             kImportOp, "'" << index_path.string() << "' has no \"weight_map\" object");
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    NURI_CHECK(file.is_string(), data, kImportOp,
               "'" << index_path.string() << "': weight_map[\"" << name << "\"] is not a file name");
    shards.insert(file.get<std::string>());
  }
  std::vector<StFile> files;
  for (const std::string& shard : shards) files.push_back(read_safetensors_header((dir / shard).string()));
  return files;
}

// The original GPT-2 checkpoints name tensors without the "transformer." prefix.
std::string canonical_name(const std::string& name, const std::string& family) {
  if (family != "gpt2") return name;
  for (const char* bare : {"h.", "wte.", "wpe.", "ln_f."})
    if (name.rfind(bare, 0) == 0) return "transformer." + name;
  return name;
}

// Buffers transformers keeps in some checkpoints and nuri computes itself.
bool is_known_buffer(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".attn.bias") || ends_with(".attn.masked_bias") || ends_with("rotary_emb.inv_freq");
}

struct Located {
  const StFile* file;
  const StEntry* entry;
  std::string stored_name;
};

std::map<std::string, Located> index_tensors(const std::vector<StFile>& files, const std::string& family) {
  std::map<std::string, Located> where;
  for (const StFile& f : files) {
    for (const auto& [name, entry] : f.tensors) {
      const std::string key = canonical_name(name, family);
      const auto [it, fresh] = where.emplace(key, Located{&f, &entry, name});
      NURI_CHECK(fresh, data, kImportOp,
                 "tensor '" << name << "' is in both '" << it->second.file->path << "' and '" << f.path << "'");
    }
  }
  return where;
}

std::string file_list(const std::vector<StFile>& files) {
  std::string s;
  for (const StFile& f : files) s += (s.empty() ? "'" : ", '") + f.path + "'";
  return s;
}

void read_mapped_tensor(const HfTensor& t, const Located& at, float* params) {
  const StEntry& e = *at.entry;
  NURI_CHECK(e.shape == t.shape, data, kImportOp,
             "'" << at.file->path << "': tensor '" << at.stored_name << "' has shape " << shape_str(e.shape)
                 << " but the config needs " << shape_str(t.shape));
  NURI_CHECK(dtype_bytes(e.dtype) > 0, data, kImportOp,
             "'" << at.file->path << "': tensor '" << at.stored_name << "' has dtype " << e.dtype
                 << "; nuri reads F32, BF16 and F16");
  if (!t.transposed) {
    read_tensor(*at.file, at.stored_name, e, params + t.offset, t.numel);
    return;
  }
  std::vector<float> hf(t.numel);
  read_tensor(*at.file, at.stored_name, e, hf.data(), t.numel);
  transpose(hf.data(), t.shape[0], t.shape[1], params + t.offset);  // HF (in, out) -> nuri (out, in)
}

}  // namespace

HfExportSummary export_hf(const ModelConfig& cfg, const float* full_params, size_t count,
                          const std::string& out_dir, const HfExportOptions& options) {
  check_exportable(cfg, count, options);
  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  NURI_CHECK(!ec && fs::is_directory(dir), io, kExportOp,
             "cannot create the output directory '" << out_dir << "': " << ec.message());
  const std::vector<HfTensor> tensors = hf_tensor_map(cfg);
  const auto shards = plan_shards(tensors, options.max_shard_bytes);
  HfExportSummary summary;
  summary.tensors = tensors.size();
  std::set<std::string> written;
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? kSingleFile : shard_name(i, shards.size());
    write_safetensors((dir / name).string(), shards[i], full_params);
    for (const HfTensor* t : shards[i]) weight_map[t->name] = name;
    summary.files.push_back((dir / name).string());
    written.insert(name);
  }
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", uint64_t(count) * 4}}}, {"weight_map", weight_map}};
    write_text_file((dir / kIndexFile).string(), index.dump(2) + "\n");
    summary.files.push_back((dir / kIndexFile).string());
    written.insert(kIndexFile);
  }
  const json config = cfg.family == "gpt2" ? gpt2_config_json(cfg) : llama_config_json(cfg);
  write_text_file((dir / "config.json").string(), config.dump(2) + "\n");
  summary.files.push_back((dir / "config.json").string());
  if (!options.tokenizer_json.empty()) {
    copy_tokenizer(options.tokenizer_json, dir);
    summary.files.push_back((dir / "tokenizer.json").string());
  }
  remove_stale_weights(dir, written);
  return summary;
}

HfModel import_hf(const std::string& dir_name) {
  const fs::path dir(dir_name);
  NURI_CHECK(fs::is_directory(dir), io, kImportOp,
             "'" << dir_name << "' is not a directory; give a Hugging Face model directory (config.json + "
                 << "*.safetensors)");
  HfModel m;
  m.config = config_from_hf((dir / "config.json").string());
  const std::vector<StFile> files = open_weights(dir);
  for (const StFile& f : files) m.files.push_back(f.path);
  const std::map<std::string, Located> where = index_tensors(files, m.config.family);
  const std::vector<HfTensor> needed = hf_tensor_map(m.config);
  const std::vector<ParamTensor> layout = parameter_layout(m.config);
  m.params.assign(layout.back().offset + layout.back().numel, 0.0f);
  std::set<std::string> used;
  for (const HfTensor& t : needed) {
    const auto it = where.find(t.name);
    NURI_CHECK(it != where.end(), data, kImportOp,
               "tensor '" << t.name << "' of shape " << shape_str(t.shape) << " is missing from "
                          << file_list(files)
                          << (t.name == "lm_head.weight" ? " (config.json says tie_word_embeddings = false)" : ""));
    read_mapped_tensor(t, it->second, m.params.data());
    used.insert(t.name);
  }
  m.tensors_read = needed.size();
  for (const auto& [name, at] : where) {
    const bool tied_head = name == "lm_head.weight" && m.config.tied_embeddings;
    if (!used.count(name) && !tied_head && !is_known_buffer(name)) m.ignored_tensors.push_back(at.stored_name);
  }
  if (fs::is_regular_file(dir / "tokenizer.json")) m.tokenizer_json = (dir / "tokenizer.json").string();
  return m;
}

}  // namespace nuri

// The single-file model format:
//   "NURIMDL1" | u64 config_json_bytes | config JSON | u64 num_params | f32[num_params] |
//   u64 xxh64(float payload, seed 0)
// All integers little-endian. Readers check the magic, every length against the file size and
// the checksum, and name the file in every error.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>
#include <xxhash.h>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/tensor_parallel.hpp"
#include "nuri/train.hpp"
#include "train/model_json.hpp"

namespace nuri {

nlohmann::json model_config_to_json(const ModelConfig& c) {
  return {{"preset", c.preset},       {"family", c.family},
          {"n_layer", c.n_layer},     {"d_model", c.d_model},
          {"n_head", c.n_head},       {"n_kv_head", c.n_kv_head},
          {"d_ff", c.d_ff},           {"vocab_size", c.vocab_size},
          {"max_seq_len", c.max_seq_len}, {"tied_embeddings", c.tied_embeddings},
          {"norm_eps", c.norm_eps},   {"rope_theta", c.rope_theta}};
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  c.preset = j.at("preset").get<std::string>();
  c.family = j.at("family").get<std::string>();
  c.n_layer = j.at("n_layer").get<int>();
  c.d_model = j.at("d_model").get<int>();
  c.n_head = j.at("n_head").get<int>();
  c.n_kv_head = j.at("n_kv_head").get<int>();
  c.d_ff = j.at("d_ff").get<int>();
  c.vocab_size = j.at("vocab_size").get<int>();
  c.max_seq_len = j.at("max_seq_len").get<int>();
  c.tied_embeddings = j.at("tied_embeddings").get<bool>();
  c.norm_eps = j.at("norm_eps").get<float>();
  c.rope_theta = j.at("rope_theta").get<float>();
  return c;
}

namespace {

constexpr char kMagic[8] = {'N', 'U', 'R', 'I', 'M', 'D', 'L', '1'};

struct Header {
  ModelConfig config;
  uint64_t num_params = 0;
  std::streamoff payload_offset = 0;
};

Header read_header(std::ifstream& in, const std::string& path) {
  NURI_CHECK(in.good(), io, "load model", "cannot open model file '" << path << "'");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0);
  char magic[8] = {};
  uint64_t json_bytes = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&json_bytes), 8);
  NURI_CHECK(in.good() && std::memcmp(magic, kMagic, 8) == 0, io, "load model",
             "'" << path << "' is not a nuri model file (bad magic); expected run_dir/model.bin");
  NURI_CHECK(json_bytes < (1u << 24) && std::streamoff(16 + json_bytes + 8) <= size, io,
             "load model", "'" << path << "' is truncated or corrupt (config of " << json_bytes << " bytes)");
  std::string text(json_bytes, '\0');
  in.read(text.data(), std::streamsize(json_bytes));
  Header h;
  try {
    h.config = model_config_from_json(nlohmann::json::parse(text));
  } catch (const nlohmann::json::exception& e) {
    NURI_THROW(io, "load model", "'" << path << "' has an unreadable model config: " << e.what());
  }
  in.read(reinterpret_cast<char*>(&h.num_params), 8);
  h.payload_offset = in.tellg();
  const std::streamoff expect = h.payload_offset + std::streamoff(h.num_params * 4 + 8);
  NURI_CHECK(in.good() && size == expect, io, "load model",
             "'" << path << "' is truncated or has trailing bytes: " << size << " bytes, expected "
                 << expect << " for " << h.num_params << " parameters");
  return h;
}

}  // namespace

void save_model(const std::string& path, const Model& model) {
  NURI_CHECK(model.tp_size() == 1, internal, "save model",
             "a tensor-parallel model holds slices; gather_full_parameters on every TP rank, then save "
             "the full parameters with save_model(path, config, params, count)");
  save_model(path, model.config(), model.params(), model.num_params());
}

void save_model(const std::string& path, const ModelConfig& config, const float* params, size_t count) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    NURI_CHECK(out.good(), io, "save model", "cannot write '" << tmp << "'");
    const std::string text = model_config_to_json(config).dump();
    const uint64_t json_bytes = text.size(), n = count;
    const float* p = params;  // host memory
    const uint64_t checksum = XXH64(p, n * sizeof(float), 0);
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&json_bytes), 8);
    out.write(text.data(), std::streamsize(text.size()));
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(reinterpret_cast<const char*>(p), std::streamsize(n * sizeof(float)));
    out.write(reinterpret_cast<const char*>(&checksum), 8);
    out.flush();
    NURI_CHECK(out.good(), io, "save model", "write to '" << tmp << "' failed (disk full?)");
  }
  NURI_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io, "save model",
             "cannot rename '" << tmp << "' to '" << path << "'");
}

ModelConfig read_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return read_header(in, path).config;
}

void load_model_weights(const std::string& path, Model& model) {
  std::ifstream in(path, std::ios::binary);
  Header h = read_header(in, path);
  // A tensor-parallel model loads its slices of the full parameters the file holds.
  const std::vector<ParamTensor> full_layout = parameter_layout(model.config());
  const uint64_t full_count = full_layout.back().offset + full_layout.back().numel;
  NURI_CHECK(h.num_params == full_count, io, "load model",
             "'" << path << "' holds " << h.num_params << " parameters but the model has "
                 << full_count);
  std::vector<float> host(h.num_params);
  uint64_t checksum = 0;
  in.read(reinterpret_cast<char*>(host.data()), std::streamsize(h.num_params * 4));
  in.read(reinterpret_cast<char*>(&checksum), 8);
  NURI_CHECK(in.good(), io, "load model", "'" << path << "' is truncated");
  NURI_CHECK(XXH64(host.data(), host.size() * 4, 0) == checksum, io, "load model",
             "'" << path << "' fails its checksum: the file is corrupt");
  if (model.tp_size() > 1) {
    load_full_parameters(model, host.data(), host.size());
  } else {
    std::memcpy(model.params(), host.data(), host.size() * 4);
  }
}

}  // namespace nuri

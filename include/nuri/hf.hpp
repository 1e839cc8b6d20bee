#pragma once
// \file
// Hugging Face interop: model weights in the safetensors format with a transformers config.json.
//
//   export_hf: a nuri model (one-process layout) -> DIR/config.json + DIR/model.safetensors
//              (or model-0000i-of-0000N.safetensors + model.safetensors.index.json), fp32,
//              loadable by transformers as GPT2LMHeadModel (family gpt2) or LlamaForCausalLM
//              (family llama).
//   import_hf: such a directory (fp32, bf16 or fp16 tensors) -> ModelConfig + fp32 parameters.
//
// Name mapping (docs/hf.md has the full table), per block l:
//   gpt2   wte -> transformer.wte.weight, wpe -> transformer.wpe.weight,
//          blocks.l.attn.qkv.weight (3C, C) -> transformer.h.l.attn.c_attn.weight (C, 3C):
//          GPT-2's Conv1D stores (in, out), the transpose of nuri's (out, in), for every linear.
//   llama  wte -> model.embed_tokens.weight, blocks.l.attn.qkv.weight rows [q | k | v] ->
//          model.layers.l.self_attn.{q,k,v}_proj.weight, blocks.l.mlp.fc.weight rows
//          [gate | up] -> mlp.{gate,up}_proj.weight. RoPE is half-split in both: no permutation.
// A tied model has no lm_head.weight in the files.
#include <cstddef>
#include <string>
#include <vector>

#include "nuri/model.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Options of export_hf.
struct HfExportOptions {
  // A shard holds tensors up to this many bytes (a larger tensor gets a shard of its own); one
  // file model.safetensors when everything fits.
  size_t max_shard_bytes = size_t(5) << 30;
  std::string tokenizer_json;  // copied to DIR/tokenizer.json if non-empty
};

// What export_hf wrote, for the caller to report.
struct HfExportSummary {
  std::vector<std::string> files;  // paths: weight files, index, config.json, tokenizer.json
  size_t tensors = 0;              // Hugging Face tensors written
};

// Writes `full_params` (count floats, the one-process layout parameter_layout(cfg)) to out_dir
// (created if missing); every file through a temporary and a rename. Throws Error(config) for a
// config Hugging Face cannot express (gpt2 with n_kv_head != n_head), Error(shape) when count
// does not match cfg, Error(io) naming the file that cannot be written.
HfExportSummary export_hf(const ModelConfig& cfg, const float* full_params, size_t count,
                          const std::string& out_dir, const HfExportOptions& options = {});

// A model read by import_hf: its config and parameters in nuri's one-process layout.
struct HfModel {
  ModelConfig config;          // preset "hf-gpt2" or "hf-llama"
  std::vector<float> params;   // one-process layout, parameter_layout(config)
  std::string tokenizer_json;  // DIR/tokenizer.json if the directory has one, else empty
  // Tensors of the files nuri has no use for (besides the known attention-mask and rotary
  // buffers, and lm_head.weight of a tied model), for the caller to report.
  std::vector<std::string> ignored_tensors;
  size_t tensors_read = 0;       // tensors mapped into params
  std::vector<std::string> files;  // the safetensors files read
};

// Reads a Hugging Face model directory written by export_hf or by transformers' save_pretrained
// (model_type gpt2 or llama, safetensors). Throws Error(io) for a missing, unreadable or
// truncated file, Error(config) for an unsupported model_type or option (e.g. rope_scaling),
// Error(data) for a missing tensor, a wrong shape or dtype, or offsets past the data; every
// message names the file.
HfModel import_hf(const std::string& dir);

}  // namespace nuri
NURI_API_END

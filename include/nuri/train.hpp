#pragma once
// The trainer loop, sampling and the model file.
#include <cstdint>
#include <string>
#include <vector>

#include "nuri/config.hpp"

namespace nuri {

class Model;
class Tokenizer;

struct TrainResult {
  int steps_done = 0;
  double final_train_loss = 0;
  double final_val_loss = 0;
  double unigram_val_loss = 0;  // the unigram baseline on the same validation text
  double tokens_per_second = 0;
  int skipped_steps = 0;
  std::string model_path;    // run_dir/model.bin, if saved
  std::string metrics_path;  // run_dir/metrics.jsonl
};

// Runs a whole training as configured: data, model, AdamW, schedule, evaluation, progress lines,
// metrics JSONL, sample and model file. Throws Error on bad configuration or data, and
// Error(numeric) when the loss stays non-finite (see train.nonfinite).
TrainResult train(const RunConfig& cfg);

struct SampleOptions {
  int max_tokens = 200;
  double temperature = 0.8;  // 0: greedy
  int top_k = 40;            // 0: the whole vocabulary
  uint64_t seed = 1;
};
// Continues `prompt` (ids) with up to max_tokens ids; stops at end-of-text.
std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt,
                            const SampleOptions& opt, int eot_id);

// Single-file model weights: magic "NURIMDL1", the model config (JSON), the flat fp32
// parameters and an xxh64 checksum. (Sharded training checkpoints come with their own issue.)
void save_model(const std::string& path, const Model& model);
// Reads the config of a model file (to build the Model), then the weights into `model`.
ModelConfig read_model_config(const std::string& path);
void load_model_weights(const std::string& path, Model& model);

// Memory the kernel says is available to a new process (MemAvailable), in bytes; 0 if unknown.
double available_memory_bytes();

// Peak fp32 GFLOP/s of this backend's GEMM: the best rate over a few large products, measured
// in about 1.5 s. A busy machine gives a low figure (and MFU above 100%, which nuri warns of).
double measure_peak_gflops(class Backend& backend);

}  // namespace nuri

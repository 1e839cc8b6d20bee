#pragma once
// \file
// Run configuration: a TOML file plus `--set section.key=value` overrides.
//
//   nuri::RunConfig cfg = nuri::load_run_config("run.toml", {"optim.lr=3e-4", "model.n_layer=4"});
//
// Every key is known: an unknown key, a value of the wrong type or out of range is an Error
// (kind config) that names the key, the file and what is allowed. `describe_config_keys()` lists
// every key with its default and meaning (printed by `nuri train --help-config`).
#include <cstdint>
#include <string>
#include <vector>

#include "nuri/model.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Training data comes from exactly one of: text files tokenized in memory at start
// (train_files), or token-shard directories written by `nuri tokenize` (datasets).
struct DataConfig {
  std::vector<std::string> train_files;  // text files (UTF-8); documents separated by blank lines
  std::vector<std::string> datasets;     // shard directories (each with manifest.json)
  std::vector<double> weights;           // one per dataset, relative; empty: by train tokens
  bool verify_shards = false;            // checksum every shard at start (reads all the data)
  std::string tokenizer = "bytes";       // "bytes" (byte-level, vocab 257) or a tokenizer file
  double val_fraction = 0.05;            // train_files: the last fraction of each file's documents
};

// The optimizer (AdamW) and learning-rate schedule: the [optim] section.
struct OptimConfig {
  double lr = 3e-4;       // peak learning rate, reached at the end of warmup
  double min_lr = 3e-5;   // final learning rate of cosine and wsd; must not exceed lr
  int warmup_steps = 20;  // steps of linear warmup
  std::string schedule = "cosine";  // "cosine" | "wsd" (warmup-stable-decay) | "constant"
  double decay_fraction = 0.2;      // wsd: the last fraction of steps decays linearly to min_lr
  double weight_decay = 0.1;        // decoupled; never on norms, biases (1-D parameters)
  double beta1 = 0.9;    // AdamW decay rate of the first moment
  double beta2 = 0.95;   // AdamW decay rate of the second moment
  double eps = 1e-8;     // AdamW epsilon, added to sqrt(second moment)
  double grad_clip = 1.0;  // global L2 norm; 0 disables
};

// The training loop: the [train] section.
struct TrainConfig {
  int steps = 300;       // optimizer steps; the schedule spans them
  int batch_size = 8;    // sequences per micro-batch
  int seq_len = 128;     // tokens per sequence
  int grad_accum = 1;    // micro-batches per optimizer step
  int eval_every = 50;   // 0: only at the end
  int eval_batches = 8;  // validation micro-batches per evaluation
  int log_every = 1;     // steps between progress lines
  uint64_t seed = 1234;  // seeds the weight initialization and the data order
  std::string run_dir = "runs/default";  // where metrics, the config and the model go
  int threads = 0;                   // 0: cores of this node / ranks on this node
  double peak_gflops = 0;            // MFU denominator; 0: measure sgemm at start-up
  std::string nonfinite = "skip";    // "skip" the update or "stop" the run on a NaN/inf loss
  int max_nonfinite_skips = 5;       // consecutive skipped steps before the run stops anyway
  std::string sample_prompt = "";    // sampled at the end (and every sample_every steps)
  int sample_every = 0;              // steps between samples; 0: at the end only
  int sample_tokens = 200;           // tokens generated per sample
  double sample_temperature = 0.8;   // sampling temperature; 0: greedy
  int sample_top_k = 40;             // sample among the k likeliest tokens; 0: all
  bool save = true;  // write run_dir/model.bin at the end
  // Stop after this step, checkpointing there (a planned stop: a time limit, a test); the
  // schedule still spans train.steps and a later run resumes. 0: run to train.steps.
  int stop_at = 0;
  // A nuri model file (model.bin, or one written by `nuri import`) to start from instead of a
  // random initialization: continued pre-training or fine-tuning. Ignored when resuming.
  std::string init_from = "";
};

// Training checkpoints (checkpoint.hpp, docs/checkpoints.md).
struct CheckpointConfig {
  int every = 0;            // save every N steps; 0: only at the end (and at train.stop_at)
  bool at_end = true;       // save when the run ends
  int keep_last = 3;        // keep the newest N checkpoints ...
  int keep_every = 0;       // ... and, permanently, those whose step is a multiple of this (0: none)
  std::string dir = "";     // default: <train.run_dir>/checkpoints
  // "auto": resume from the latest checkpoint in `dir` if there is one; "none": start afresh;
  // or a path (a checkpoint, or a run or checkpoints directory with a latest pointer).
  std::string resume = "auto";
  bool verify = true;       // check every rank file's xxh64 before resuming
  // Write checkpoints in the background from a snapshot (training stalls only for the copy);
  // falls back to a blocking save when the snapshot does not fit in the available memory.
  bool async = true;
};

// How the ranks of an mpirun job share the work (parallel.hpp, comm.hpp). World size = tp x dp.
struct ParallelConfig {
  int tp = 1;                   // tensor-parallel degree (model.hpp: heads, MLP, vocabulary)
  bool sequence_parallel = false;  // with tp > 1: norm regions split over rows
  int dp = 0;                   // data-parallel degree; 0: world size / tp
  bool zero1 = false;           // shard AdamW moments over DP (ZeRO stage 1)
  double bucket_mb = 25;        // gradient bucket size in MiB (fp32); 0: one bucket per layer
  double comm_timeout_s = 300;  // seconds a collective may take before the job is aborted
  std::string dp_comm = "mpi";  // gradient reductions: "mpi", or "nccl" (GPU memory, backend cuda)
};

// A whole run's configuration, as load_run_config reads it: one member per TOML section.
struct RunConfig {
  std::string backend = "cpu";  // "cpu" | "cuda"
  std::string cpu_gemm = "auto";  // CPU GEMM: "auto" | "openblas" | "eigen" | "bf16" (mixed)
  std::string source;           // the file the config came from (for messages)
  ModelConfig model;            // [model]: the architecture (model.hpp)
  DataConfig data;              // [data]: the training text or token shards
  OptimConfig optim;            // [optim]: AdamW and the learning-rate schedule
  TrainConfig train;            // [train]: the training loop
  ParallelConfig parallel;      // [parallel]: tensor and data parallelism
  CheckpointConfig checkpoint;  // [checkpoint]: saving and resuming
};

// Loads `path` (may be empty: defaults only), then applies `overrides` ("section.key=value",
// the value in TOML syntax; a bare word is taken as a string). Throws Error(config) on any
// unknown key or bad value, and Error(shape) if the model shape is inconsistent.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides);

// One line per key: "section.key  default  meaning".
std::string describe_config_keys();

// The whole configuration as TOML (written into the run directory for reproducibility).
std::string to_toml(const RunConfig& cfg);

}  // namespace nuri
NURI_API_END

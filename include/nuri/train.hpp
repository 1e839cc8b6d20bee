#pragma once
// \file
// The trainer loop, sampling and the model file.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/config.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class Communicator;
class Model;
class Tokenizer;

// What train() reports when it returns.
struct TrainResult {
  int steps_done = 0;            // steps done when it returned, resumed ones included
  double final_train_loss = 0;   // loss of the last step run
  double final_val_loss = 0;     // the last validation loss; 0 when there was no validation
  double unigram_val_loss = 0;  // the unigram baseline on the same validation text
  double tokens_per_second = 0;  // training tokens per second of the whole job, over timed steps
  int skipped_steps = 0;         // steps skipped for a non-finite loss, resumed run included
  // Data parallelism (all per timed step, i.e. after the first): the DP degree, the wall time of
  // a step, the time DP collectives were in flight, and the part of it the training thread waited
  // for (not hidden behind backward). compute_s = step_s - exposed_comm_s.
  // Tensor parallelism: the TP degree and the per-step time and bytes in TP collectives (all
  // exposed: compute_s = step_s - exposed_comm_s - tp_comm_s).
  int dp = 1, tp = 1;  // tp: the TP degree
  // step_s: wall seconds per step.
  double step_s = 0, comm_s = 0, exposed_comm_s = 0, compute_s = 0;  // compute_s: the rest
  // tp_comm_s: seconds per step in TP collectives (evaluation's left out).
  double tp_comm_s = 0, tp_comm_bytes = 0;  // tp_comm_bytes: bytes per step in TP collectives
  // \var comm_s
  // comm_s: seconds per step DP collectives were in flight.
  // \var exposed_comm_s
  // exposed_comm_s: of comm_s, the seconds the training thread waited.
  std::string model_path;    // run_dir/model.bin, if saved
  std::string metrics_path;  // run_dir/metrics.jsonl
};

// Runs a whole training as configured: data, model, AdamW, schedule, evaluation, progress lines,
// metrics JSONL, sample and model file. Throws Error on bad configuration or data, and
// Error(numeric) when the loss stays non-finite (see train.nonfinite).
//
// `world`: the ranks of the job (MpiEnvironment::world(), comm.hpp), or null for one process.
// Collective over `world`: every rank calls train() with the same config. The ranks form a
// ProcessGrid (parallel.tp x parallel.dp) and train data-parallel (parallel.hpp): each DP rank
// computes its rows of every global batch of dp x train.batch_size sequences (so a run on d ranks
// equals a single process with batch d x B, up to fp32 reduction order). World rank 0 alone
// prints and writes the run directory; evaluation is sharded over DP and all-reduced. Threads
// per rank: train.threads, else ProcessGrid::threads_per_rank(). A rank that fails during set-up
// makes every rank throw (no rank waits in a collective for it); a failure later ends the job
// through the communicator's timeout unless the caller aborts it (nuri's main() calls abort_job).
TrainResult train(const RunConfig& cfg, std::shared_ptr<Communicator> world = nullptr);

// Makes the backend a training runs on, given the worker threads train() chose for this rank.
using BackendFactory = std::function<std::unique_ptr<Backend>(int threads)>;
// train() on the backend `make_backend_for_rank` returns (called once per rank during set-up)
// instead of make_backend(cfg.backend, ...): a Backend of the caller's own, or the tests'
// emulated cuda backend. cfg.backend is not consulted.
TrainResult train(const RunConfig& cfg, std::shared_ptr<Communicator> world,
                  const BackendFactory& make_backend_for_rank);

// Options of sample().
struct SampleOptions {
  int max_tokens = 200;      // most ids generated
  double temperature = 0.8;  // 0: greedy
  int top_k = 40;            // 0: the whole vocabulary
  uint64_t seed = 1;         // seeds the Rng that draws the tokens
};
// Continues `prompt` (ids) with up to max_tokens ids; stops at end-of-text. Returns only the new
// ids (without the end-of-text); an empty prompt starts from eot_id, as a new document.
std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt,
                            const SampleOptions& opt, int eot_id);

// Single-file model weights: magic "NURIMDL1", the model config (JSON), the flat fp32
// parameters and an xxh64 checksum, always in one process's layout. (Sharded training checkpoints
// come with their own issue.) Written to PATH.tmp and renamed. Throws Error(io).
// A tensor-parallel model holds slices: gather_full_parameters (tensor_parallel.hpp) on every TP
// rank, then save the full parameters with the second form (Error(internal) from the first).
void save_model(const std::string& path, const Model& model);
// The second form: `count` full parameters at `params` (host memory) with their config.
void save_model(const std::string& path, const ModelConfig& config, const float* params, size_t count);
// Reads the config of a model file (to build the Model), then the weights into `model` (its
// slices, for a tensor-parallel model).
ModelConfig read_model_config(const std::string& path);
// The weights of a model file into `model`, whose config must give the file's parameter count.
// Throws Error(io) for a count mismatch, a truncated file or a failed checksum.
void load_model_weights(const std::string& path, Model& model);

// Memory the kernel says is available to a new process (MemAvailable), in bytes; 0 if unknown.
double available_memory_bytes();

// Peak fp32 GFLOP/s of this backend's GEMM: the best rate over a few large products, measured
// in about 1.5 s. A busy machine gives a low figure (and MFU above 100%, which nuri warns of).
double measure_peak_gflops(class Backend& backend);

}  // namespace nuri
NURI_API_END

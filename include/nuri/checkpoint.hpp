#pragma once
// \file
// Training checkpoints: one directory per save, one file per rank holding the slices that rank is
// responsible for, a manifest, an atomic commit, and loading at any (tp, dp) layout. The format
// is documented in docs/checkpoints.md.
//
//   checkpoints/
//     latest                  one line: the name of the newest complete checkpoint (written last)
//     step-00000100/
//       manifest.json         model config, tensors (name, full shape), step, tokens, data-loader
//                             position, seed, layout (tp, dp, zero1), tokenizer hash, optimizer
//                             step, nuri version, and every rank file's size and xxh64
//       rank-00000.bin ...    runs of (tensor, kind, offset in the full tensor, count) + floats
//
// What a rank writes: the parameters and AdamW moments of its share of the flat buffer (its
// ZeRO-1 blocks, or block_range(num_params, dp, dp_rank) without ZeRO-1), cut into runs of full-
// tensor elements through its TP slices (ParamTensor::pieces); a piece replicated over r TP ranks
// is written by the first of them only. So every element of every tensor is written exactly once
// and the files do not depend on how the next run is laid out: a loading rank maps what it needs
// (its own slices and moment blocks) to full-tensor runs and reads them from whichever files hold
// them.
//
// Atomic: files go into checkpoints/.tmp-step-N/, are fsynced, the manifest is written last by
// rank 0, the directory renamed to step-N, and `latest` replaced (write + rename) after that. A
// process killed at any point leaves `latest` naming a complete checkpoint (or none).
// Multi-node: the checkpoints directory must be on a file system every rank sees.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nuri/model.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class AdamW;
class Communicator;

// Where this rank sits; saving and loading are collective over `world`.
struct CheckpointLayout {
  Communicator* world = nullptr;  // null: one process
  // tp_rank: this rank's index in its TP group, in [0, tp_size).
  int tp_rank = 0, tp_size = 1, dp_rank = 0, dp_size = 1;  // dp_size: ranks in a DP group
  // \var tp_size
  // tp_size: ranks in a TP group (the tensor-parallel degree).
  // \var dp_rank
  // dp_rank: this rank's index in its DP group, in [0, dp_size).
  bool zero1 = false;  // the optimizer holds only this rank's ZeRO-1 blocks
};

// The trainer's state besides the model and the optimizer.
struct TrainerState {
  int64_t step = 0;         // optimizer steps done
  int64_t tokens = 0;       // training tokens consumed by the whole job
  std::string loader;       // the data position: LoaderState::serialize(), or "batch-loader ..."
  uint64_t seed = 0;        // train.seed (the only random state: sampling derives from it and step)
  uint64_t tokenizer_hash = 0;  // Tokenizer::hash() of the run's tokenizer; 0: not checked
  // skipped_steps: steps skipped for a non-finite loss, in the whole run.
  int skipped_steps = 0, skips_in_row = 0;  // skips_in_row: consecutive ones up to now
};

// One rank file of a checkpoint, as its manifest lists it.
struct CheckpointFile {
  std::string name;  // "rank-00003.bin"
  uint64_t bytes = 0;  // the file's size
  uint64_t xxh64 = 0;  // xxh64 of the file's bytes
};

// A checkpoint's manifest.json, as read_checkpoint returns it.
struct CheckpointManifest {
  std::string dir;  // the checkpoint directory it was read from
  std::string nuri_version;  // the version of nuri that wrote it
  ModelConfig model;         // the model's configuration
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;  // name, full shape
  TrainerState state;        // the trainer's state at the save
  int optimizer_step = 0;    // AdamW's step count (for bias correction)
  // tp: the tensor-parallel degree of the run that saved it.
  int tp = 1, dp = 1;        // dp: its data-parallel degree
  bool zero1 = false;        // whether that run sharded the moments (ZeRO-1)
  std::vector<CheckpointFile> files;  // every rank file, each with its size and xxh64
};

// Which checkpoints a save keeps: the newest keep_last (>= 1), and every one whose step is a
// multiple of keep_every (0: none) permanently.
struct CheckpointPolicy {
  int keep_last = 3;   // the newest this many are kept (values < 1 count as 1)
  int keep_every = 0;  // steps that are multiples of this are kept for good; 0: none
};

// Saves `model`, `optimizer` and `state` as checkpoints_dir/step-<state.step> (see the top of this
// file) and applies `policy` to the older ones. Collective over layout.world. Returns the
// checkpoint's directory. On any rank's failure (disk full, no permission) every rank throws
// Error(io) naming the rank and file; the partial directory is removed and `latest` and the
// earlier checkpoints are untouched. Parameters and moments must be host memory (CPU backend).
std::string save_checkpoint(const std::string& checkpoints_dir, const Model& model,
                            const AdamW& optimizer, const TrainerState& state,
                            const CheckpointLayout& layout, const CheckpointPolicy& policy = {});

// Saves in the background. save() copies this rank's share of the parameters and moments into a
// snapshot (host memory: 3 x its share of the fp32 state) and returns; a thread writes and commits
// it, with its collectives on `comm`, a communicator of the same ranks as the world that nothing
// else uses (Communicator::split; null for one process), so they cannot interleave with the
// training's. One save at a time: save() first waits for the previous one. Errors of a background
// save are thrown by the next save() or by wait(), on every rank (all ranks agree on failure).
// Every rank must call save() and wait() alike.
class AsyncCheckpointer {
 public:
  // Saves go to checkpoints_dir/step-N under `policy`; `comm` as above. Starts no save.
  AsyncCheckpointer(std::string checkpoints_dir, std::shared_ptr<Communicator> comm, CheckpointPolicy policy = {});
  ~AsyncCheckpointer();  // joins a save in flight (call wait() first to see its errors)
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Snapshots and starts writing; returns the seconds the caller was held (the wait for the
  // previous save plus the copy): the stall a save costs training.
  double save(const Model& model, const AdamW& optimizer, const TrainerState& state, const CheckpointLayout& layout);
  // Allocates (and first-touches) a snapshot buffer of `floats` in the background, so that the
  // first save does not pay for it: on the machines measured, touching 1.5 GB of fresh memory
  // took seconds, the copy into it 0.1 s. Optional.
  void reserve(size_t floats);
  // Waits for the save in flight; returns its directory ("" if none was in flight). Throws its error.
  std::string wait();
  // How long the last completed background write took.
  double last_write_seconds() const;

 private:
  class Impl;
  std::string dir_;
  std::shared_ptr<Communicator> comm_;
  CheckpointPolicy policy_;
  std::unique_ptr<Impl> impl_;
};

// The checkpoint `latest` names in checkpoints_dir, or "" when there is none. Throws Error(io)
// when `latest` names a directory that does not exist.
std::string latest_checkpoint(const std::string& checkpoints_dir);
// A checkpoint directory from `path`: a checkpoint itself (it has manifest.json), or a directory
// with a `latest` pointer, or a run directory whose checkpoints/ has one. Throws Error(io) saying
// what was looked for when none is found.
std::string resolve_checkpoint(const std::string& path);

// Reads dir/manifest.json and checks that every rank file it lists exists with its size (and,
// with verify, its xxh64). Throws Error(io) naming the file: missing, truncated, corrupt
// (checksum), or an unreadable manifest.
CheckpointManifest read_checkpoint(const std::string& dir, bool verify = true);

// Throws Error(config) when `model`'s shape differs from the manifest's, naming the first
// difference (e.g. "d_model is 768 there and 1024 in this run").
void check_checkpoint_model(const CheckpointManifest& manifest, const ModelConfig& model);

// Loads this rank's slices of the parameters and, with an optimizer, its moments (its ZeRO-1
// blocks or all) and step count, at the current layout (any tp and dp; not collective: each rank
// reads what it needs). Throws Error(config) for another model, Error(io) for a rank file that
// is missing, truncated or does not hold an element it should.
void load_checkpoint(const CheckpointManifest& manifest, Model& model, AdamW* optimizer);

// The full parameters (one process's layout, parameter_layout(manifest.model)) of a checkpoint,
// read in this process (for export, evaluation, or a model file). Throws as load_checkpoint.
std::vector<float> read_checkpoint_parameters(const CheckpointManifest& manifest);

}  // namespace nuri
NURI_API_END

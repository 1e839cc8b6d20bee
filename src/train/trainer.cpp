// The training loop: data -> model -> loss -> backward -> gradient sync -> clip -> AdamW, with
// evaluation, progress lines, JSONL metrics, sampling and the model file. Under mpirun the ranks
// train data-parallel (parallel.hpp); world rank 0 alone prints and writes the run directory.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "comm/agree.hpp"
#include "nuri/backend.hpp"
#include "nuri/checkpoint.hpp"
#include "nuri/comm.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/log.hpp"
#include "nuri/model.hpp"
#include "nuri/tensor_parallel.hpp"
#include "nuri/optim.hpp"
#include "nuri/parallel.hpp"
#include "nuri/shards.hpp"
#include "nuri/timer.hpp"
#include "nuri/tokenizer.hpp"
#include "nuri/train.hpp"

namespace nuri {

namespace {

std::string clock_text(double seconds) {
  const long s = long(std::max(0.0, seconds) + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

std::string with_commas(double v) {
  const std::string digits = std::to_string(long(v + 0.5));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string bar(int done, int total, int width = 20) {
  const int filled = total > 0 ? int(double(done) / total * width + 0.5) : width;
  std::string out(size_t(width) + 2, '.');
  out.front() = '[';
  out.back() = ']';
  for (int i = 0; i < filled; ++i) out[size_t(i) + 1] = '#';
  return out;
}

// Mean validation loss over `batches` global batches of dp*B sequences, sharded over DP: this
// rank scores its B rows of each and the per-batch means are averaged over the DP group, so the
// result is that of one process with batch dp*B (up to reduction order).
double evaluate(Model& model, const TokenStream& val, int B, int T, int batches, Communicator* dp) {
  const int dp_size = dp ? dp->size() : 1, dp_rank = dp ? dp->rank() : 0;
  const size_t rows = size_t(B) * T;
  std::vector<int32_t> x(rows * dp_size), y(rows * dp_size);
  double sum = 0;
  for (int i = 0; i < batches; ++i) {
    eval_batch(val, B * dp_size, T, i, x.data(), y.data());
    sum += model.forward_loss(x.data() + rows * dp_rank, y.data() + rows * dp_rank, B, T);
  }
  if (dp_size > 1) dp->all_reduce(&sum, 1, ReduceOp::avg);
  return sum / batches;
}

// The trainer's collective set-up phases (src/comm/agree.hpp).
template <typename Fn>
void agree(Communicator* world, const char* what, Fn&& fn) {
  run_agreed(world, "train", what, std::forward<Fn>(fn));
}

}  // namespace

double available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024.0;
  }
  return 0;  // unknown: no check
}

double measure_peak_gflops(Backend& backend) {
  // The best rate over a few large products in the layout of linear_forward (out = in W^T),
  // each repeated for about 0.4 s: the peak is a maximum, so noise only lowers it.
  struct Shape { int M, N, K; };
  const Shape shapes[] = {{1024, 1024, 1024}, {1024, 2304, 768}, {2048, 1536, 384}};
  double best = 0;
  for (const Shape& s : shapes) {
    float* a = backend.alloc(size_t(s.M) * s.K);
    float* b = backend.alloc(size_t(s.N) * s.K);
    float* c = backend.alloc(size_t(s.M) * s.N);
    Timer total;
    for (int rep = 0; rep < 50 && (rep < 3 || total.seconds() < 0.4); ++rep) {
      backend.synchronize();  // time the product, not its launch (the cuda backend is asynchronous)
      Timer t;
      backend.gemm(false, true, s.M, s.N, s.K, 1.0f, a, s.K, b, s.K, 0.0f, c, s.N);
      backend.synchronize();
      best = std::max(best, 2.0 * s.M * s.N * s.K / t.seconds() / 1e9);
    }
    backend.free(a);
    backend.free(b);
    backend.free(c);
  }
  return best;
}

TrainResult train(const RunConfig& cfg, std::shared_ptr<Communicator> world) {
  return train(cfg, std::move(world), [&cfg](int threads) { return make_backend(cfg.backend, threads, cfg.cpu_gemm); });
}

TrainResult train(const RunConfig& cfg, std::shared_ptr<Communicator> world,
                  const BackendFactory& make_backend_for_rank) {
  const TrainConfig& tc = cfg.train;
  const ParallelConfig& pc = cfg.parallel;
  // The process grid first: its check of tp x dp against the world size comes before anything else.
  std::unique_ptr<ProcessGrid> grid;
  if (world) {
    grid = std::make_unique<ProcessGrid>(world, pc.tp, pc.dp);
  } else {
    const long ranks = long(pc.tp) * std::max(pc.dp, 1);
    NURI_CHECK(ranks == 1, config, "train",
               "parallel.tp = " << pc.tp << " x parallel.dp = " << std::max(pc.dp, 1) << " asks for " << ranks
                                << " ranks, but this training runs in one process; launch it with `mpirun -np "
                                << ranks << " nuri train ...` (a library caller passes the world communicator to "
                                << "nuri::train), or set parallel.tp = 1 and parallel.dp = 0");
  }
  Communicator* world_comm = grid ? &grid->world() : nullptr;
  const std::shared_ptr<Communicator> dp_comm = grid ? grid->dp_ptr() : nullptr;
  const int dp_size = grid ? grid->dp_size() : 1, dp_rank = grid ? grid->dp_rank() : 0;
  const int tp_size = grid ? grid->tp_size() : 1;
  const bool lead = !grid || grid->world_rank() == 0;  // prints and writes the run directory
  if (grid) grid->print();
  const int threads = tc.threads > 0 ? tc.threads : grid ? grid->threads_per_rank() : 0;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<DataSource> sources;
  std::vector<TokenView> val_views;
  std::shared_ptr<const std::vector<int32_t>> text_train;
  std::unique_ptr<BatchLoader> text_loader;
  std::unique_ptr<DataLoader> shard_loader;
  std::vector<TokenView> train_views;
  TokenStream train_stream, val;
  bool have_val = false;
  double unigram = 0, need_mib = 0;
  agree(world_comm, "setting up (config, data, memory)", [&] {
    backend = make_backend_for_rank(threads);
    NURI_CHECK(backend, internal, "train", "the backend factory returned no backend");
    tokenizer = make_tokenizer(cfg.data.tokenizer);
    NURI_CHECK(cfg.model.vocab_size >= tokenizer->vocab_size(), config, "train",
               "model.vocab_size (" << cfg.model.vocab_size << ") is smaller than the "
                                    << tokenizer->name() << " tokenizer's vocabulary ("
                                    << tokenizer->vocab_size() << "); set model.vocab_size = "
                                    << tokenizer->vocab_size());
    NURI_CHECK(tc.seq_len <= cfg.model.max_seq_len, config, "train",
               "train.seq_len (" << tc.seq_len << ") exceeds model.max_seq_len (" << cfg.model.max_seq_len << ")");

    // The run directory first: a path that cannot be written fails before any expensive set-up.
    if (lead) {
      try {
        std::filesystem::create_directories(tc.run_dir);
      } catch (const std::filesystem::filesystem_error& e) {
        NURI_THROW(io, "train", "cannot create train.run_dir '" << tc.run_dir << "': " << e.code().message());
      }
      {
        const std::string path = tc.run_dir + "/config.toml";
        std::ofstream out(path);
        out << "# resolved configuration of this run (nuri train writes it)\n" << to_toml(cfg);
        NURI_CHECK(out.good(), io, "train", "cannot write '" << path << "' (train.run_dir)");
      }
      // The tokenizer travels with the run, so `nuri generate` (and whoever reads the run later)
      // decodes with exactly the tokenizer the model was trained with.
      if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(tokenizer.get()))
        bpe->save_hf_json(tc.run_dir + "/tokenizer.json");
    }

    // Data: text files tokenized in memory, or token-shard directories checked against this run's
    // tokenizer and vocabulary. Both become DataSources of one DataLoader; all checks happen here,
    // before the model is allocated.
    NURI_CHECK(!cfg.data.train_files.empty() || !cfg.data.datasets.empty(), config, "train",
               "no training data: set data.train_files (text files, tokenized at start) or data.datasets "
               "(token-shard directories written by `nuri tokenize`)");
    if (!cfg.data.datasets.empty()) {
      ShardCheck check;
      check.tokenizer = tokenizer.get();
      check.max_vocab = uint64_t(cfg.model.vocab_size);
      check.verify = cfg.data.verify_shards;
      if (check.verify) NURI_INFO("data: verifying the checksums of every shard (data.verify_shards) ...");
      for (size_t i = 0; i < cfg.data.datasets.size(); ++i) {
        const std::string& dir = cfg.data.datasets[i];
        const ShardDataset ds = open_shard_dataset(dir, check);
        const double weight = cfg.data.weights.empty() ? double(std::max<uint64_t>(1, ds.manifest.train.tokens()))
                                                       : cfg.data.weights[i];
        sources.push_back({dir, ds.train_views(), weight});
        for (const TokenView& v : ds.val_views()) val_views.push_back(v);
      }
    }
    // Text files keep BatchLoader's random windows, so their batches are the same as before shards
    // existed (the loss curves of earlier runs and tests stay comparable); shard datasets use the
    // DataLoader (permuted non-overlapping windows, weights, exact resume).
    // Each DP rank serves its rows of every global batch of dp x B samples.
    if (cfg.data.datasets.empty()) {
      TokenDataset text = load_text_dataset(cfg.data.train_files, *tokenizer, cfg.data.val_fraction);
      text_train = std::make_shared<const std::vector<int32_t>>(std::move(text.train));
      train_views.push_back(TokenView::of(text_train, "data.train_files"));
      val_views.push_back(TokenView::of(std::move(text.val), "data.train_files (validation)"));
      text_loader = std::make_unique<BatchLoader>(*text_train, tc.batch_size, tc.seq_len, tc.seed, dp_rank, dp_size);
    } else {
      for (const DataSource& s : sources) train_views.insert(train_views.end(), s.shards.begin(), s.shards.end());
      shard_loader = std::make_unique<DataLoader>(sources, tc.batch_size, tc.seq_len, tc.seed, dp_rank, dp_size,
                                                  cfg.model.vocab_size);
    }
    train_stream = TokenStream(std::move(train_views));
    val = TokenStream(std::move(val_views));
    have_val = val.size() >= size_t(tc.seq_len) + 1;
    // The unigram baseline is only printed and logged: rank 0's job.
    unigram = have_val && lead ? unigram_loss(train_stream, val, tokenizer->vocab_size()) : 0.0;
    if (lead && !have_val && tc.eval_every > 0) {
      NURI_WARN("no validation: the held-out text (" << val.size() << " tokens, "
                << (cfg.data.datasets.empty() ? "data.val_fraction = " + std::to_string(cfg.data.val_fraction)
                                              : std::string("the val shards of data.datasets"))
                << ") is shorter than one sequence of " << tc.seq_len + 1
                << " tokens, so train.eval_every is ignored; raise the validation fraction or add documents");
    }
    if (lead && have_val && val.size() < size_t(tc.batch_size) * dp_size * tc.seq_len * tc.eval_batches + 1) {
      NURI_WARN("the validation text (" << val.size() << " tokens) is shorter than "
                << tc.eval_batches << " evaluation batches of " << tc.batch_size * dp_size << " x " << tc.seq_len
                << "; evaluation wraps around and scores some tokens more than once");
    }
    if (lead && cfg.optim.warmup_steps >= tc.steps) {
      NURI_WARN("optim.warmup_steps (" << cfg.optim.warmup_steps << ") >= train.steps (" << tc.steps
                << "): the learning rate never reaches optim.lr = " << cfg.optim.lr);
    }
    // Tensor parallelism: the heads, MLP and vocabulary must split over tp (throws saying how).
    if (tp_size > 1) {
      parameter_layout(cfg.model, tp_size, 0);
      NURI_CHECK(!pc.sequence_parallel || (tc.batch_size * tc.seq_len) % tp_size == 0, config, "train",
                 "parallel.sequence_parallel splits train.batch_size x train.seq_len = " << tc.batch_size << " x "
                     << tc.seq_len << " rows over parallel.tp = " << tp_size
                     << ", which does not divide them; change the batch size or sequence length, or turn it off");
    } else if (pc.sequence_parallel && lead) {
      NURI_WARN("parallel.sequence_parallel has no effect with parallel.tp = 1");
    }
    // Refuse a run that cannot fit rather than let the kernel's OOM killer end it without a word.
    // ZeRO-1 keeps 1/dp of the AdamW moments on each rank.
    // Tensor parallelism splits the parameter state about tp ways (norms and biases are replicated);
    // activations are counted whole (an upper bound: the TP-split ones shrink too).
    const MemoryEstimate estimate =
        estimate_memory(cfg.model, tc.batch_size, tc.seq_len, memory_facts(*backend, cfg.model));
    const double adam_saved = pc.zero1 && dp_size > 1 ? estimate.adam_bytes * (1.0 - 1.0 / dp_size) : 0.0;
    const double state = estimate.params_bytes + estimate.grads_bytes + estimate.adam_bytes +
                         estimate.weight_copy_bytes - adam_saved;
    need_mib = (estimate.total(cfg.model.recompute) - adam_saved - state * (1.0 - 1.0 / tp_size)) / 1048576.0;
    size_t device_free = 0, device_total = 0;
    if (backend->device_memory(&device_free, &device_total)) {
      // A GPU of its own per rank: its memory is what must hold the run (the cuda backend's bf16
      // copy of this rank's weights included). Refused only when even a lower bound does not fit:
      // under TP the activations are counted whole above, and here as if all were split tp ways
      // (most are), so a TP run the estimate says may fit is not refused.
      const double activations =
          cfg.model.recompute ? estimate.activations_recompute_bytes : estimate.activations_bytes;
      const double at_least_mib = need_mib - activations * (1.0 - 1.0 / tp_size) / 1048576.0;
      NURI_CHECK(at_least_mib * 1048576.0 < double(device_free), backend, "train",
                 "this run needs at least " << std::lround(at_least_mib) << " MiB on GPU " << backend->device()
                                         << " (nuri train --dry-run shows the parts) but only "
                                         << std::lround(double(device_free) / 1048576.0) << " MiB of its "
                                         << std::lround(double(device_total) / 1048576.0)
                                         << " MiB are free; lower train.batch_size, turn on model.recompute, use "
                                            "more tensor-parallel ranks (parallel.tp), or choose a smaller model");
      return;
    }
    // The ranks on this node share its memory.
    const double available = available_memory_bytes();
    const int local_ranks = grid ? grid->local_size() : 1;
    NURI_CHECK(available <= 0 || need_mib * local_ranks * 1048576.0 < available, backend, "train",
               "this run needs about " << std::lround(need_mib)
                                       << " MiB" << (local_ranks > 1 ? " per rank x " + std::to_string(local_ranks) + " ranks on this node" : std::string())
                                       << " (nuri train --dry-run shows the parts) but only "
                                       << std::lround(available / 1048576.0)
                                       << " MiB are available; lower train.batch_size, turn on "
                                       << "model.recompute, or choose a smaller model");
  });  // agree: set-up

  auto next_batch = [&](int32_t* inputs, int32_t* targets) {
    if (shard_loader) {
      shard_loader->next(inputs, targets);
    } else {
      text_loader->next(inputs, targets);
    }
  };
  TensorParallelOptions tp_options;
  if (tp_size > 1) {
    tp_options.ops = make_tensor_parallel_ops(grid->tp_ptr());
    tp_options.sequence_parallel = pc.sequence_parallel;
  }
  Model model(cfg.model, *backend, tp_options);
  model.init_weights(tc.seed);  // the full tensors of one process, sliced under TP
  DataParallelOptions dp_options;
  dp_options.zero1 = pc.zero1;
  dp_options.bucket_mb = pc.bucket_mb;
  if (tp_size > 1) dp_options.tp = grid->tp_ptr();
  if (pc.dp_comm == "nccl") {
    // The gradients and parameters live in GPU memory: reduce them with NCCL over the DP ranks
    // (the small host-side sums stay on MPI). Every rank has the same config, so all take this.
    NURI_CHECK(backend->device() >= 0, config, "train",
               "parallel.dp_comm = \"nccl\" reduces gradients in GPU memory: it needs backend = \"cuda\" (this run "
               "has backend = \"" << backend->name() << "\"); set parallel.dp_comm = \"mpi\"");
    NURI_CHECK(nccl_available(), backend, "train",
               "parallel.dp_comm = \"nccl\" but this build of nuri has no NCCL (nccl.h / libnccl were not found "
               "at build time); set parallel.dp_comm = \"mpi\"");
    if (dp_comm && dp_size > 1) dp_options.grad_comm = make_nccl_communicator(dp_comm, backend->device());
  }
  DataParallel engine(model, *backend, cfg.optim, dp_comm, dp_options);
  engine.broadcast_parameters();  // replicas start identical whatever the initialisation did

  // Where the run starts: a checkpoint to resume (each rank reads its own slices and moments, at
  // whatever layout the checkpoint was saved), a model file to start from, or the random weights.
  const CheckpointConfig& kc = cfg.checkpoint;
  const std::string ckpt_dir = kc.dir.empty() ? tc.run_dir + "/checkpoints" : kc.dir;
  CheckpointLayout ckpt_layout;
  ckpt_layout.world = world_comm;
  ckpt_layout.tp_rank = grid ? grid->tp_rank() : 0;
  ckpt_layout.tp_size = tp_size;
  ckpt_layout.dp_rank = dp_rank;
  ckpt_layout.dp_size = dp_size;
  ckpt_layout.zero1 = engine.zero1();
  TrainerState resumed;
  std::string resumed_from, resumed_layout;
  agree(world_comm, "loading the checkpoint or initial weights", [&] {
    std::string path;
    if (kc.resume == "auto") {
      path = latest_checkpoint(ckpt_dir);
    } else if (kc.resume != "none") {
      path = resolve_checkpoint(kc.resume);
    }
    if (!path.empty()) {
      const CheckpointManifest manifest = read_checkpoint(path, kc.verify);
      NURI_CHECK(manifest.state.tokenizer_hash == 0 || manifest.state.tokenizer_hash == tokenizer->hash(), config,
                 "train", "'" << path << "' was trained with another tokenizer than data.tokenizer = \"" << cfg.data.tokenizer
                              << "\" (hash differs); use the run's tokenizer, or start afresh with --no-resume");
      NURI_CHECK(manifest.state.step < tc.steps, config, "train",
                 "the run in '" << path << "' is complete (step " << manifest.state.step << " of train.steps = "
                     << tc.steps << "); raise train.steps to train on, start afresh with --no-resume, or use it: "
                     << "nuri export --model " << path);
      load_checkpoint(manifest, model, &engine.optimizer());
      resumed = manifest.state;
      resumed_from = path;
      resumed_layout = "tp " + std::to_string(manifest.tp) + " x dp " + std::to_string(manifest.dp) +
                       (manifest.zero1 ? " (ZeRO-1)" : "");
      if (shard_loader) {
        NURI_CHECK(resumed.loader.rfind("nuri-loader", 0) == 0, config, "train",
                   "'" << path << "' was saved by a run reading data.train_files; resume it with the same data settings");
        shard_loader->set_state(LoaderState::deserialize(resumed.loader));
      } else {
        const std::string want = "batch-loader dp " + std::to_string(dp_size) + " batch " + std::to_string(tc.batch_size) + " position ";
        NURI_CHECK(resumed.loader.rfind(want, 0) == 0, config, "train",
                   "'" << path << "' holds the data position '" << resumed.loader << "'; a data.train_files run resumes "
                       << "only with the same parallel.dp and train.batch_size (" << want
                       << "...). Token-shard datasets (data.datasets) resume at any layout");
        text_loader->set_position(std::stoull(resumed.loader.substr(want.size())));
      }
    } else if (!tc.init_from.empty()) {
      const ModelConfig from = read_model_config(tc.init_from);
      CheckpointManifest as_manifest;  // to reuse the shape comparison and its message
      as_manifest.dir = tc.init_from;
      as_manifest.model = from;
      check_checkpoint_model(as_manifest, cfg.model);
      load_model_weights(tc.init_from, model);
    }
  });
  if (world_comm && world_comm->size() > 1) {
    // Every rank found its checkpoint on its own: on a file system that is not shared (or is slow
    // to show a new `latest`), ranks could start from different steps and drift apart silently.
    int64_t lo_hi[2] = {resumed.step, -resumed.step};
    world_comm->all_reduce(lo_hi, 2, ReduceOp::min);
    NURI_CHECK(lo_hi[0] == -lo_hi[1], io, "train",
               "the ranks found different checkpoints to resume from (steps " << lo_hi[0] << " to " << -lo_hi[1]
                   << "; this rank: " << (resumed_from.empty() ? std::string("none") : resumed_from)
                   << "). checkpoint.dir must be one file system every rank sees; or pass --resume PATH");
  }
  const int start_step = int(resumed.step);
  const int end_step = tc.stop_at > 0 ? std::min(tc.stop_at, tc.steps) : tc.steps;
  NURI_CHECK(start_step < end_step || resumed_from.empty(), config, "train",
             "train.stop_at = " << tc.stop_at << " is not after the resumed step " << start_step);

  // Every rank measures its own share of the node; the job's peak is the sum.
  const double peak = (tc.peak_gflops > 0 ? tc.peak_gflops : measure_peak_gflops(*backend)) *
                      (grid ? grid->world_size() : 1);
  const double flops_per_token = cfg.model.train_flops_per_token(tc.seq_len);
  // Global: every DP rank's micro-batches together.
  const int64_t tokens_per_step = int64_t(tc.batch_size) * tc.seq_len * tc.grad_accum * dp_size;

  NURI_INFO("nuri: " << cfg.model.family << " model (" << cfg.model.preset << " base), "
                     << cfg.model.n_layer << " layers, d_model " << cfg.model.d_model << ", "
                     << cfg.model.n_head << " heads (" << cfg.model.n_kv_head << " kv), vocab "
                     << cfg.model.vocab_size << ": " << with_commas(double(cfg.model.num_params()))
                     << " parameters"
                     << (tp_size > 1 ? " (" + with_commas(double(model.num_params())) + " on each TP rank)" : std::string()));
  if (tp_size > 1) {
    NURI_INFO("tensor parallel: " << tp_size << " ranks per model replica; each holds " << cfg.model.n_head / tp_size
                                  << " of " << cfg.model.n_head << " heads, "
                                  << (cfg.model.n_kv_head % tp_size == 0
                                          ? std::to_string(cfg.model.n_kv_head / tp_size) + " kv head(s)"
                                          : "1 kv head replicated over " + std::to_string(tp_size / cfg.model.n_kv_head) + " ranks")
                                  << ", ~1/" << tp_size << " of the MLP and of the vocabulary (vocab-parallel loss)"
                                  << (pc.sequence_parallel ? "; sequence parallel norm regions" : ""));
  }
  NURI_INFO("data: " << with_commas(double(train_stream.size())) << " training and "
                     << with_commas(double(val.size())) << " validation tokens ("
                     << tokenizer->name() << " tokenizer) from "
                     << (cfg.data.datasets.empty() ? std::to_string(cfg.data.train_files.size()) + " text file(s)"
                                                   : std::to_string(cfg.data.datasets.size()) + " shard dataset(s)")
                     << "; " << (have_val ? "unigram baseline " + std::to_string(unigram) + " nats/token"
                                         : std::string("no validation split")));
  if (shard_loader) {
    // What this run will read: each dataset's share of the samples, in epochs of its windows.
    const DataLoader& loader = *shard_loader;
    const double samples = double(tc.steps) * tc.grad_accum * tc.batch_size * dp_size;  // all ranks
    for (size_t i = 0; i < loader.num_sources(); ++i) {
      uint64_t tokens = 0;
      for (const TokenView& v : loader.source(i).shards) tokens += v.size;
      char line[160];
      std::snprintf(line, sizeof line, "weight %.3f, %s tokens, %s windows of %d: this run covers %.3g epochs",
                    loader.probability(i), with_commas(double(tokens)).c_str(),
                    with_commas(double(loader.windows(i))).c_str(), tc.seq_len + 1,
                    samples * loader.probability(i) / double(loader.windows(i)));
      NURI_INFO("data: " << loader.source(i).name << ": " << line);
    }
  }
  NURI_INFO("run: " << tc.steps << " steps x " << with_commas(double(tokens_per_step))
                    << " tokens (batch " << tc.batch_size << " x seq " << tc.seq_len << " x accum "
                    << tc.grad_accum << (dp_size > 1 ? " x dp " + std::to_string(dp_size) : std::string())
                    << "), estimated memory " << std::lround(need_mib) << " MiB"
                    << (dp_size * tp_size > 1 ? " per rank" : ""));
  if (dp_size > 1) {
    const double bucket_mib = double(engine.buckets().front().count) * 4 / 1048576.0;
    char line[200];
    std::snprintf(line, sizeof line,
                  "data parallel: %d ranks, %zu gradient buckets (%.2f MiB first, parallel.bucket_mb = %g) "
                  "reduced during backward; %s",
                  dp_size, engine.buckets().size(), bucket_mib, pc.bucket_mb,
                  pc.zero1 ? "ZeRO-1: AdamW moments sharded (reduce-scatter + all-gather)"
                           : "all-reduce, replicated AdamW");
    NURI_INFO(line);
  }
  NURI_INFO("backend: " << backend->describe());
  if (!resumed_from.empty()) {
    NURI_INFO("resumed from " << resumed_from << ": step " << start_step << ", " << with_commas(double(resumed.tokens))
                              << " tokens seen, saved at " << resumed_layout << "; continuing at tp " << tp_size << " x dp "
                              << dp_size << (engine.zero1() ? " (ZeRO-1)" : ""));
  } else if (!tc.init_from.empty()) {
    NURI_INFO("starting from the weights in " << tc.init_from);
  }
  if (kc.every > 0 || kc.at_end || tc.stop_at > 0)
    NURI_INFO("checkpoints: " << ckpt_dir
                              << (kc.every > 0 ? " every " + std::to_string(kc.every) + " steps," : std::string())
                              << " keeping the last " << kc.keep_last
                              << (kc.keep_every > 0 ? " and every " + std::to_string(kc.keep_every) + "th" : std::string()));
  NURI_INFO("MFU below is against " << std::lround(peak) << " GFLOP/s ("
                                    << (tc.peak_gflops > 0 ? "train.peak_gflops" : "the measured peak of the GEMM in use")
                                    << "), at " << std::lround(flops_per_token / 1e6)
                                    << " MFLOP per token");

  TrainResult result;
  result.metrics_path = tc.run_dir + "/metrics.jsonl";
  result.dp = dp_size;
  std::ofstream metrics;  // rank 0's
  agree(world_comm, "opening the metrics file", [&] {
    if (!lead) return;
    // A resumed run keeps the records of the steps it does not redo.
    std::string kept;
    if (start_step > 0) {
      std::ifstream old(result.metrics_path);
      for (std::string line; std::getline(old, line);) {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= start_step)
          kept += line + "\n";
      }
    }
    metrics.open(result.metrics_path, std::ios::trunc);
    NURI_CHECK(metrics.good(), io, "train", "cannot write '" << result.metrics_path << "'");
    metrics << kept;
  });
  result.skipped_steps = resumed.skipped_steps;
  result.unigram_val_loss = unigram;

  std::vector<int32_t> x(size_t(tc.batch_size) * tc.seq_len), y(x.size());
  Timer run_clock;
  double timed_seconds = 0;  // steps after the first (which includes warm-up)
  int timed_steps = 0;
  int skips_in_row = resumed.skips_in_row;
  int64_t tokens_done = resumed.tokens;
  int last_saved = start_step;  // a step that already has a checkpoint
  bool warned_mfu = false;
  double tp_eval_s = 0, tp_eval_bytes = 0;  // TP collectives of evaluation (left out of the step split)
  // Under TP sampling is collective (each rank holds a slice of the vocabulary), so every rank
  // samples with the same seed and gets the same text; rank 0 prints it.
  auto do_sample = [&](int step) {
    if (tc.sample_tokens <= 0 || (!lead && tp_size == 1)) return std::string();
    SampleOptions so;
    so.max_tokens = tc.sample_tokens;
    so.temperature = tc.sample_temperature;
    so.top_k = tc.sample_top_k;
    so.seed = tc.seed + uint64_t(step);
    NURI_INFO("sampling " << tc.sample_tokens << " tokens from the prompt \"" << tc.sample_prompt << "\" ...");
    const std::vector<int32_t> prompt = tokenizer->encode(tc.sample_prompt);
    const std::string text = sanitize_utf8(tc.sample_prompt + tokenizer->decode(sample(model, prompt, so, tokenizer->eot_id())));
    NURI_INFO("sample at step " << step << ":\n" << text << "\n");
    return lead ? text : std::string();
  };

  // Background saves need a snapshot of this rank's share of the state (3 x fp32) in memory, and a
  // communicator of their own (created on every rank alike).
  const double snapshot_bytes = 3.0 * 4.0 * double(model.num_params()) / std::max(1, dp_size);
  const double available = available_memory_bytes();
  bool async_ckpt = kc.async && (available <= 0 || snapshot_bytes * (grid ? grid->local_size() : 1) < 0.5 * available);
  if (world_comm) {  // every rank must take the same decision
    int32_t a = async_ckpt ? 1 : 0;
    world_comm->all_reduce(&a, 1, ReduceOp::min);
    async_ckpt = a == 1;
  }
  if (kc.async && !async_ckpt && lead)
    NURI_WARN("checkpoint.async: a snapshot needs " << std::lround(snapshot_bytes / 1048576.0)
              << " MiB per rank, more than half the available memory; checkpoints are written blocking");
  std::unique_ptr<AsyncCheckpointer> async;
  if (async_ckpt)
    async = std::make_unique<AsyncCheckpointer>(ckpt_dir, grid ? grid->world().split(0, grid->world_rank(), "checkpoint")
                                                               : nullptr,
                                                CheckpointPolicy{kc.keep_last, kc.keep_every});
  if (async) {  // this rank's share of the state, 3 floats per parameter (an upper bound)
    const size_t share = engine.zero1() ? engine.optimizer().moment_floats()
                                        : block_range(model.num_params(), dp_size, dp_rank).count;
    async->reserve(3 * share);
  }
  int pending_step = -1;  // the step of the background save in flight
  double pending_stall = 0;
  // Reports a finished background save (and rethrows its error).
  auto finish_async = [&] {
    if (!async || pending_step < 0) return;
    const std::string dir = async->wait();
    char line[96];
    std::snprintf(line, sizeof line, " (written in the background in %.2f s; training stalled %.3f s)",
                  async->last_write_seconds(), pending_stall);
    NURI_INFO("checkpoint: " << dir << line);
    if (lead)
      metrics << nlohmann::json{{"type", "checkpoint"}, {"step", pending_step}, {"dir", dir},
                                {"stall_s", pending_stall}, {"write_s", async->last_write_seconds()}}.dump()
              << "\n";
    pending_step = -1;
  };
  auto save_ckpt = [&](int steps_done) {
    TrainerState st;
    st.step = steps_done;
    st.tokens = tokens_done;
    st.loader = shard_loader ? shard_loader->state().serialize()
                             : "batch-loader dp " + std::to_string(dp_size) + " batch " + std::to_string(tc.batch_size) +
                                   " position " + std::to_string(text_loader->position());
    st.seed = tc.seed;
    st.tokenizer_hash = tokenizer->hash();
    st.skipped_steps = result.skipped_steps;
    st.skips_in_row = skips_in_row;
    last_saved = steps_done;
    if (async) {
      finish_async();
      pending_stall = async->save(model, engine.optimizer(), st, ckpt_layout);
      pending_step = steps_done;
      return;
    }
    Timer t;
    const std::string dir = save_checkpoint(ckpt_dir, model, engine.optimizer(), st, ckpt_layout,
                                            {kc.keep_last, kc.keep_every});
    char line[64];
    std::snprintf(line, sizeof line, " (%.2f s, blocking)", t.seconds());
    NURI_INFO("checkpoint: " << dir << line);
    if (lead)
      metrics << nlohmann::json{{"type", "checkpoint"}, {"step", steps_done}, {"dir", dir},
                                {"stall_s", t.seconds()}, {"write_s", t.seconds()}}.dump()
              << "\n";
  };

  for (int step = start_step; step < end_step; ++step) {
    Timer step_clock;
    const double lr = learning_rate(cfg.optim, step, tc.steps);
    engine.zero_grads();
    double local_loss = 0;
    {
      // The micro-batches read the same weights: the cuda backend casts them to bf16 once per step.
      const FrozenWeights frozen(*backend, model.params(), model.num_params());
      for (int micro = 0; micro < tc.grad_accum; ++micro) {
        next_batch(x.data(), y.data());
        // The last micro-batch's backward starts the gradient reductions, bucket by bucket.
        local_loss += engine.forward_backward(x.data(), y.data(), tc.batch_size, tc.seq_len,
                                              1.0f / float(tc.grad_accum), micro + 1 == tc.grad_accum);
      }
    }
    // The DP mean loss and the norm of the DP-averaged gradient: the same on every rank, so
    // every rank takes the same decision below.
    const DataParallel::Reduced reduced = engine.reduce(local_loss / tc.grad_accum);
    const double loss = reduced.loss;
    const double norm = reduced.grad_norm;
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite) {
      engine.step(lr, norm);
      skips_in_row = 0;
    } else {
      ++result.skipped_steps;
      ++skips_in_row;
      const std::string what = std::isfinite(loss) ? "the gradient norm is " + std::to_string(norm)
                                                   : "the loss is " + std::to_string(loss);
      if (tc.nonfinite == "stop") {
        NURI_THROW(numeric, "train", "step " << step + 1 << ": " << what
                                             << "; stopping (train.nonfinite = \"stop\"). Lower optim.lr, "
                                             << "check the data, or set train.nonfinite = \"skip\"");
      }
      if (skips_in_row > tc.max_nonfinite_skips) {
        NURI_THROW(numeric, "train", "step " << step + 1 << ": " << what << " for " << skips_in_row
                                             << " steps in a row (train.max_nonfinite_skips = "
                                             << tc.max_nonfinite_skips << "); stopping. Lower optim.lr or check the data");
      }
      if (lead)  // every rank skips alike (the loss and norm were reduced); one warning is enough
        NURI_WARN("step " << step + 1 << ": " << what << "; update skipped (train.nonfinite = \"skip\", "
                        << skips_in_row << " of at most " << tc.max_nonfinite_skips << " in a row)");
    }
    const double dt = step_clock.seconds();
    tokens_done += tokens_per_step;
    if (step > start_step || end_step - start_step == 1) {
      timed_seconds += dt;
      ++timed_steps;
    }
    if (step == start_step && end_step - start_step > 1) {  // the first step warms up
      engine.reset_stats();
      if (tp_options.ops) tp_options.ops->reset_stats();
    }
    const double tok_s = double(tokens_per_step) / dt;
    const double mfu = flops_per_token * tok_s / (peak * 1e9);
    if (mfu > 1.0 && !warned_mfu && lead) {
      warned_mfu = true;
      NURI_WARN("MFU above 100%: the sgemm peak measured at start-up (" << std::lround(peak)
                << " GFLOP/s) was too low, likely because the machine was busy; set "
                << "train.peak_gflops to this machine's peak for meaningful MFU figures");
    }
    const double per_step = timed_steps ? timed_seconds / timed_steps : dt;
    const double elapsed = run_clock.seconds();
    result.final_train_loss = loss;
    result.steps_done = step + 1;

    if ((step + 1) % tc.log_every == 0 || step == start_step || step + 1 == end_step) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %*d/%d %s loss %.4f | lr %.2e | gnorm %.3f | %s tok/s | MFU %.1f%% | %s elapsed, ETA %s",
                    int(std::to_string(tc.steps).size()), step + 1, tc.steps,
                    bar(step + 1, tc.steps).c_str(), loss, lr, norm, with_commas(tok_s).c_str(),
                    100 * mfu, clock_text(elapsed).c_str(),
                    clock_text(per_step * (tc.steps - step - 1)).c_str());
      NURI_INFO(line);
    }
    nlohmann::json rec = {{"type", "train"}, {"step", step + 1}, {"loss", finite ? loss : -1.0},
                          {"lr", lr}, {"grad_norm", std::isfinite(norm) ? norm : -1.0},
                          {"tokens_per_s", tok_s}, {"mfu", mfu}, {"elapsed_s", elapsed},
                          {"tokens", tokens_done}, {"skipped", !finite}};
    if (lead) metrics << rec.dump() << "\n";

    const bool last = step + 1 == tc.steps;
    if (have_val && ((tc.eval_every > 0 && (step + 1) % tc.eval_every == 0) || last)) {
      const TensorParallelOps::Stats tp_before = tp_options.ops ? tp_options.ops->stats() : TensorParallelOps::Stats{};
      const double val_loss = evaluate(model, val, tc.batch_size, tc.seq_len, tc.eval_batches, dp_comm.get());
      if (tp_options.ops && (step > start_step || end_step - start_step == 1)) {  // evaluation's TP traffic is not the step's
        const TensorParallelOps::Stats tp_after = tp_options.ops->stats();
        tp_eval_s += tp_after.seconds - tp_before.seconds;
        tp_eval_bytes += tp_after.bytes - tp_before.bytes;
      }
      result.final_val_loss = val_loss;
      NURI_INFO("step " << step + 1 << ": validation loss " << val_loss << " (unigram baseline " << unigram << ")");
      if (lead)
        metrics << nlohmann::json{{"type", "eval"}, {"step", step + 1}, {"val_loss", val_loss},
                                  {"unigram_val_loss", unigram}}.dump()
                << "\n";
    }
    if (lead) metrics.flush();
    if (tc.sample_every > 0 && (step + 1) % tc.sample_every == 0 && !last) do_sample(step + 1);
    if (kc.every > 0 && (step + 1) % kc.every == 0) save_ckpt(step + 1);
  }
  // The end of this run (or a planned stop) gets a checkpoint, unless that step has one already.
  if ((kc.at_end || end_step < tc.steps) && last_saved != end_step && end_step > start_step) save_ckpt(end_step);
  finish_async();
  result.tokens_per_second = timed_seconds > 0 ? double(tokens_per_step) * timed_steps / timed_seconds : 0;
  const DataParallelStats& ds = engine.stats();
  result.step_s = timed_steps > 0 ? timed_seconds / timed_steps : 0;
  if (ds.steps > 0) {
    result.comm_s = ds.comm_s / ds.steps;
    result.exposed_comm_s = ds.exposed_s / ds.steps;
  }
  if (tp_options.ops && timed_steps > 0) {
    // TP collectives block the step: all of their time is exposed. Evaluation's are left out.
    const TensorParallelOps::Stats ts = tp_options.ops->stats();
    result.tp_comm_s = (ts.seconds - tp_eval_s) / timed_steps;
    result.tp_comm_bytes = (ts.bytes - tp_eval_bytes) / timed_steps;
  }
  result.compute_s = result.step_s - result.exposed_comm_s - result.tp_comm_s;
  result.tp = tp_size;
  if (tp_size > 1) {
    char line[240];
    std::snprintf(line, sizeof line,
                  "tensor parallel: per step %.1f ms in TP collectives (%.2f MB per rank, all exposed)",
                  1e3 * result.tp_comm_s, result.tp_comm_bytes / 1e6);
    NURI_INFO(line);
  }
  if (dp_size > 1) {
    char line[320];
    std::snprintf(line, sizeof line,
                  "data parallel: per step %.1f ms = %.1f ms compute + %.1f ms exposed communication; "
                  "collectives in flight %.1f ms (%.0f%% hidden behind backward); %.1f of %zu buckets "
                  "started during backward",
                  1e3 * result.step_s, 1e3 * result.compute_s, 1e3 * result.exposed_comm_s, 1e3 * result.comm_s,
                  result.comm_s > 0 ? 100.0 * std::max(0.0, 1.0 - result.exposed_comm_s / result.comm_s) : 0.0,
                  ds.steps ? double(ds.buckets_started_in_backward) / ds.steps : 0.0, engine.buckets().size());
    NURI_INFO(line);
  }
  if (lead && dp_size * tp_size > 1) {
    metrics << nlohmann::json{{"type", "parallel"}, {"world", grid ? grid->world_size() : 1}, {"tp", tp_size},
                              {"sequence_parallel", tp_size > 1 && pc.sequence_parallel},
                              {"tp_comm_s", result.tp_comm_s}, {"tp_comm_bytes", result.tp_comm_bytes},
                              {"dp", dp_size}, {"zero1", engine.zero1()}, {"buckets", engine.buckets().size()},
                              {"bucket_mb", pc.bucket_mb}, {"timed_steps", timed_steps},
                              {"step_s", result.step_s}, {"compute_s", result.compute_s},
                              {"comm_s", result.comm_s}, {"exposed_comm_s", result.exposed_comm_s},
                              {"tokens_per_s", result.tokens_per_second},
                              {"buckets_started", ds.buckets_started},
                              {"buckets_started_in_backward", ds.buckets_started_in_backward},
                              {"buckets_done_in_backward", ds.buckets_done_in_backward}}.dump()
            << "\n";
    metrics.flush();
  }

  const std::string text = do_sample(tc.steps);
  if (!text.empty()) {
    std::ofstream(tc.run_dir + "/sample.txt") << text << "\n";
  }
  if (tc.save) {
    result.model_path = tc.run_dir + "/model.bin";
    NURI_INFO("saving the model to " << result.model_path);
    if (tp_size > 1) {
      const std::vector<float> full = gather_full_parameters(model);  // collective over TP
      if (lead) save_model(result.model_path, cfg.model, full.data(), full.size());
    } else if (lead) {
      save_model(result.model_path, model);
    }
  }
  NURI_INFO("done: " << result.steps_done << " steps in " << clock_text(run_clock.seconds()) << ", "
                     << with_commas(result.tokens_per_second) << " tokens/s; final train loss "
                     << result.final_train_loss
                     << (have_val ? ", validation loss " + std::to_string(result.final_val_loss) : std::string()));
  NURI_INFO("metrics: " << result.metrics_path << "   config: " << tc.run_dir << "/config.toml"
                        << (tc.save ? "   model: " + result.model_path : std::string()));
  return result;
}

}  // namespace nuri

// nuri train: run a training from a TOML config with --set overrides; --dry-run only plans.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "nuri/comm.hpp"
#include "nuri/config.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace nuri::cli {

namespace {

struct TrainOptions {
  std::string config;
  std::vector<std::string> overrides;
  bool dry_run = false;
  bool help_config = false;
  std::string resume;
  bool no_resume = false;
};

std::string gib(double bytes) {
  char buf[32];
  if (bytes >= 1024.0 * 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024));
  }
  return buf;
}

void dry_run(const RunConfig& cfg) {
  const ModelConfig& m = cfg.model;
  const TrainConfig& t = cfg.train;
  // No backend is made here (there may be no GPU): the cuda backend's facts as it would answer them,
  // its bf16 attention at head dims 64 and 128 (which activation_dtype = "auto" follows) and its
  // bf16 weight copy (docs/cuda.md, Memory); the CPU backend's are the defaults.
  const int D = m.head_dim();
  BackendMemoryFacts facts;
  if (cfg.backend == "cuda") facts = {D == 64 || D == 128, 2};
  const MemoryEstimate e = estimate_memory(m, t.batch_size, t.seq_len, facts);
  std::printf("model        %s (%s family): %d layers, d_model %d, %d heads (%d kv), d_ff %d, vocab %d, "
              "max_seq_len %d, %s embeddings\n",
              m.preset.c_str(), m.family.c_str(), m.n_layer, m.d_model, m.n_head, m.n_kv_head,
              m.d_ff, m.vocab_size, m.max_seq_len, m.tied_embeddings ? "tied" : "untied");
  std::printf("parameters   %lld (%.3f B)\n", (long long)m.num_params(), double(m.num_params()) / 1e9);
  std::printf("FLOPs/token  %.3g (training, seq_len %d)\n", m.train_flops_per_token(t.seq_len), t.seq_len);
  std::printf("memory estimate, one device (fp32 parameters and optimizer state), micro-batch %d x %d:\n", t.batch_size, t.seq_len);
  std::printf("  parameters          %s\n", gib(e.params_bytes).c_str());
  std::printf("  gradients           %s\n", gib(e.grads_bytes).c_str());
  std::printf("  AdamW moments       %s\n", gib(e.adam_bytes).c_str());
  std::printf("  activations         %s (with model.recompute: %s)%s\n", gib(e.activations_bytes).c_str(),
              gib(e.activations_recompute_bytes).c_str(),
              m.bf16_activations(facts.bf16_matmul_inputs) ? "  [activations in bf16]" : "");
  if (e.weight_copy_bytes > 0)
    std::printf("  bf16 weight copy    %s (backend = \"%s\": its matrix products read it)\n",
                gib(e.weight_copy_bytes).c_str(), cfg.backend.c_str());
  std::printf("  total               %s (with model.recompute: %s)%s\n", gib(e.total(false)).c_str(),
              gib(e.total(true)).c_str(), m.recompute ? "  [recompute is on]" : "");
  const ParallelConfig& p = cfg.parallel;
  if (p.tp > 1) {
    // The split each TP rank would hold (or why the model cannot be split so).
    try {
      const std::vector<ParamTensor> layout = parameter_layout(m, p.tp, 0);
      const size_t local = layout.back().offset + layout.back().numel;
      std::printf("tensor parallel tp %d%s: %lld parameters on each rank (%.1f%% of the model; norms and "
                  "biases are replicated)\n",
                  p.tp, p.sequence_parallel ? " + sequence parallel" : "", (long long)local,
                  100.0 * double(local) / double(m.num_params()));
    } catch (const Error& err) {
      std::printf("tensor parallel tp %d: cannot split this model: %s\n", p.tp, err.message().c_str());
    }
  }
}

}  // namespace

void add_train_command(CLI::App& app, const MpiEnvironment* mpi) {
  auto opt = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a TOML config");
  cmd->add_option("-c,--config", opt->config, "TOML config file (see examples/configs/)");
  cmd->add_option("-s,--set", opt->overrides,
                  "Override a key: section.key=value, TOML value syntax (repeatable)")
      ->take_all();
  cmd->add_flag("--dry-run", opt->dry_run,
                "Print the parameter count and memory estimate, then exit without training");
  cmd->add_flag("--help-config", opt->help_config, "List every config key with its default");
  cmd->add_option("--resume", opt->resume,
                  "Resume from this checkpoint (or run / checkpoints directory); by default a run resumes from the "
                  "latest checkpoint in its checkpoint.dir, if there is one");
  cmd->add_flag("--no-resume", opt->no_resume, "Start afresh even if the run directory has checkpoints");
  cmd->footer(
      "Writes run_dir/config.toml, metrics.jsonl, sample.txt, model.bin and checkpoints/ (checkpoint.* keys).\n"
      "Under mpirun the ranks train data- and tensor-parallel (parallel.* keys); rank 0 prints and writes.");
  cmd->callback([opt, mpi] {
    const bool lead = !mpi || mpi->world_rank() == 0;
    if (opt->help_config) {
      if (lead) std::printf("Config keys (section.key  default  meaning):\n%s", describe_config_keys().c_str());
      return;
    }
    RunConfig cfg = load_run_config(opt->config, opt->overrides);
    NURI_CHECK(!(opt->no_resume && !opt->resume.empty()), config, "train", "--resume and --no-resume contradict each other");
    if (!opt->resume.empty()) cfg.checkpoint.resume = opt->resume;
    if (opt->no_resume) cfg.checkpoint.resume = "none";
    if (opt->dry_run) {
      if (lead) dry_run(cfg);
      return;
    }
    if (!mpi) {
      train(cfg);  // one process, no MPI
      return;
    }
    CommOptions comm;
    comm.timeout_s = cfg.parallel.comm_timeout_s;  // 0: $NURI_COMM_TIMEOUT, else 300 s
    train(cfg, mpi->world(comm));
  });
}

}  // namespace nuri::cli

// nuri export / nuri import: a nuri model file or checkpoint to, and a model file from, a Hugging Face model directory
// (safetensors + config.json; see include/nuri/hf.hpp and docs/hf.md).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "nuri/backend.hpp"
#include "nuri/checkpoint.hpp"
#include "nuri/error.hpp"
#include "nuri/hf.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace nuri::cli {

namespace {

namespace fs = std::filesystem;

struct ExportOptions {
  std::string model_path;
  std::string out_dir;
  std::string tokenizer;  // empty: tokenizer.json beside the model file, if there is one
  double max_shard_mb = 5 * 1024.0;
};

struct ImportOptions {
  std::string hf_dir;
  std::string out_path;
};

double file_mb(const std::string& path) {
  std::error_code ec;
  const auto bytes = fs::file_size(path, ec);
  return ec ? 0.0 : double(bytes) / (1024.0 * 1024.0);
}

void print_config(const ModelConfig& c) {
  std::printf("  %s: %d layers, d_model %d, %d heads (%d kv), d_ff %d, vocab %d, max_seq_len %d, %s\n",
              c.family.c_str(), c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.d_ff, c.vocab_size,
              c.max_seq_len, c.tied_embeddings ? "tied embeddings" : "untied LM head");
}

void run_export(const ExportOptions& opt) {
  // A model file, or a training checkpoint (a step directory, or a run / checkpoints directory
  // with a latest pointer): its full parameters are assembled from the rank files, any layout.
  ModelConfig cfg;
  std::vector<float> params;
  fs::path tokenizer_dir = fs::path(opt.model_path).parent_path();
  if (fs::is_directory(opt.model_path)) {
    const CheckpointManifest m = read_checkpoint(resolve_checkpoint(opt.model_path), /*verify=*/true);
    cfg = m.model;
    params = read_checkpoint_parameters(m);
    // run_dir/checkpoints/step-N: the run's tokenizer.json is two levels up.
    tokenizer_dir = fs::path(m.dir).parent_path().parent_path();
    std::printf("checkpoint '%s': step %lld, saved at tp %d x dp %d\n", m.dir.c_str(), (long long)m.state.step, m.tp,
                m.dp);
  } else {
    cfg = read_model_config(opt.model_path);
    std::unique_ptr<Backend> backend = make_backend("cpu", 1);
    Model model(cfg, *backend);
    load_model_weights(opt.model_path, model);
    params.assign(model.params(), model.params() + model.num_params());
  }
  HfExportOptions hf;
  hf.max_shard_bytes = size_t(opt.max_shard_mb * 1024.0 * 1024.0);
  hf.tokenizer_json = opt.tokenizer;
  if (hf.tokenizer_json.empty()) {
    const fs::path beside = tokenizer_dir / "tokenizer.json";
    if (fs::is_regular_file(beside)) hf.tokenizer_json = beside.string();
  }
  const HfExportSummary summary = export_hf(cfg, params.data(), params.size(), opt.out_dir, hf);
  std::printf("exported '%s' (%zu parameters, %zu tensors) to '%s':\n", opt.model_path.c_str(),
              params.size(), summary.tensors, opt.out_dir.c_str());
  print_config(cfg);
  for (const std::string& f : summary.files) std::printf("  %-60s %10.3f MB\n", f.c_str(), file_mb(f));
  if (hf.tokenizer_json.empty())
    std::printf("  no tokenizer.json beside the model and no --tokenizer: none exported\n");
}

void run_import(const ImportOptions& opt) {
  const HfModel m = import_hf(opt.hf_dir);
  const fs::path parent = fs::path(opt.out_path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  NURI_CHECK(!ec, io, "import hf", "cannot create the directory '" << parent.string() << "': " << ec.message());
  save_model(opt.out_path, m.config, m.params.data(), m.params.size());
  std::printf("imported '%s' (%zu parameters, %zu tensors) to '%s':\n", opt.hf_dir.c_str(), m.params.size(),
              m.tensors_read, opt.out_path.c_str());
  print_config(m.config);
  for (const std::string& f : m.files) std::printf("  read %-55s %10.3f MB\n", f.c_str(), file_mb(f));
  for (const std::string& name : m.ignored_tensors) std::printf("  ignored tensor '%s' (nuri has no use for it)\n", name.c_str());
  if (!m.tokenizer_json.empty()) {
    const fs::path to = parent / "tokenizer.json";
    if (!fs::exists(to) || !fs::equivalent(m.tokenizer_json, to, ec)) {
      fs::copy_file(m.tokenizer_json, to, fs::copy_options::overwrite_existing, ec);
      NURI_CHECK(!ec, io, "import hf",
                 "cannot copy '" << m.tokenizer_json << "' to '" << to.string() << "': " << ec.message());
    }
    std::printf("  tokenizer: '%s' -> '%s'\n", m.tokenizer_json.c_str(), to.c_str());
  }
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto opt = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export", "Write a nuri model file as a Hugging Face model directory (safetensors + config.json)");
  cmd->add_option("-m,--model", opt->model_path,
                  "A model file (run_dir/model.bin) or a checkpoint: a step directory, or a run or checkpoints "
                  "directory (its latest)")
      ->required();
  cmd->add_option("-o,--out", opt->out_dir, "Output directory (created if missing)")->required();
  cmd->add_option("--tokenizer", opt->tokenizer,
                  "tokenizer.json to copy into the directory (default: tokenizer.json beside the model)");
  cmd->add_option("--max-shard-mb", opt->max_shard_mb,
                  "Largest safetensors file in MB; a bigger model is sharded with an index")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([opt] { run_export(*opt); });
}

void add_import_command(CLI::App& app) {
  auto opt = std::make_shared<ImportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "import", "Read a Hugging Face GPT-2 or Llama directory (safetensors) into a nuri model file");
  cmd->add_option("--hf", opt->hf_dir, "Hugging Face model directory (config.json + *.safetensors)")
      ->required();
  cmd->add_option("-o,--out", opt->out_path, "nuri model file to write (e.g. model.bin)")->required();
  cmd->callback([opt] { run_import(*opt); });
}

}  // namespace nuri::cli

// The whole trainer (nuri::train: data, gradient accumulation under one weight freeze per step,
// evaluation, checkpoints, resume, sampling, the model file) through the emulated cuda backend,
// against the same run on the CPU backend. The emulated streams run queued work only when the host
// waits (emu/runtime.hpp), so a read of backend memory the trainer makes without a wait (a
// checkpoint, the sample's logits, the model file) shows as wrong numbers or a failed resume.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_backend.hpp"
#include "nuri/backend.hpp"
#include "nuri/config.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace {

namespace fs = std::filesystem;

// A model small enough to emulate: one layer, one head of 64 (the bf16 tensor-core attention).
// `fresh`: start from an empty run directory (else resume from the one there).
nuri::RunConfig emu_run(const std::string& name, std::vector<std::string> extra = {}, bool fresh = true) {
  const fs::path dir = fs::temp_directory_path() / ("nuri_emu_" + name + "_" + std::to_string(getpid()));
  std::vector<std::string> sets = {
      "model.preset=gpt2-tiny", "model.n_layer=1", "model.d_model=64", "model.n_head=1", "model.n_kv_head=1",
      "model.d_ff=128", "model.vocab_size=257", "model.max_seq_len=16", "train.batch_size=2", "train.seq_len=16",
      "train.grad_accum=2", "train.steps=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=1",
      "train.peak_gflops=1", "train.sample_tokens=4", "train.sample_prompt=\"The \"", "train.threads=1",
      "optim.lr=3e-3", "optim.warmup_steps=1", "checkpoint.every=2", "checkpoint.async=false",
      "train.run_dir=\"" + dir.string() + "\"",
      "data.train_files=[\"" + std::string(NURI_CORPUS_DIR) + "/en_moby_dick.txt\"]"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  if (fresh) fs::remove_all(dir);
  return nuri::load_run_config("", sets);
}

// step -> loss of the "train" records, and step -> val_loss of the "eval" records.
void read_metrics(const std::string& path, std::map<int, double>& train, std::map<int, double>& eval) {
  std::ifstream in(path);
  REQUIRE(in.good());
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j["type"] == "train") train[j["step"].get<int>()] = j["loss"].get<double>();
    if (j["type"] == "eval") eval[j["step"].get<int>()] = j["val_loss"].get<double>();
  }
}

}  // namespace

TEST_CASE("nuri::train through the emulated cuda backend follows the CPU run, stopped and resumed", "[backend][train]") {
  const nuri::RunConfig cpu_cfg = emu_run("cpu");
  const nuri::TrainResult cpu = nuri::train(cpu_cfg);
  auto emulated = [](int) { return nuri::cuda::make_cuda_backend(); };
  // Stopped after the step-2 checkpoint, then resumed from it by a second call, as after a crash.
  const nuri::TrainResult first = nuri::train(emu_run("gpu", {"train.stop_at=2"}), nullptr, emulated);
  CHECK(first.steps_done == 2);
  const fs::path step2 = fs::path(first.metrics_path).parent_path() / "checkpoints" / "step-00000002";
  REQUIRE(fs::exists(step2 / "manifest.json"));
  const nuri::TrainResult gpu =
      nuri::train(emu_run("gpu", {"checkpoint.resume=\"" + step2.string() + "\""}, /*fresh=*/false), nullptr, emulated);
  CHECK(gpu.steps_done == 4);

  std::map<int, double> cpu_train, cpu_eval, gpu_train, gpu_eval;
  read_metrics(cpu.metrics_path, cpu_train, cpu_eval);
  read_metrics(gpu.metrics_path, gpu_train, gpu_eval);
  REQUIRE(cpu_train.size() == 4);
  REQUIRE(gpu_train.size() == 4);  // steps 1-2 kept from the first call, 3-4 from the resumed one
  for (const auto& [step, loss] : cpu_train) {
    INFO("step " << step << ": cpu " << loss << ", emulated cuda " << gpu_train[step]);
    CHECK(std::abs(gpu_train[step] - loss) <= 1e-2 * loss);  // bf16 matrix products
  }
  REQUIRE(cpu_eval.size() == 2);
  REQUIRE(gpu_eval.size() == 2);
  for (const auto& [step, loss] : cpu_eval) {
    INFO("eval at step " << step << ": cpu " << loss << ", emulated cuda " << gpu_eval[step]);
    CHECK(std::abs(gpu_eval[step] - loss) <= 1e-2 * loss);
  }
  CHECK(std::abs(gpu.final_val_loss - cpu.final_val_loss) <= 1e-2 * cpu.final_val_loss);
  // The model files hold the trained weights (written after the last update was waited for):
  // their updates from the common initialisation agree as a whole.
  const nuri::ModelConfig mc = nuri::read_model_config(cpu.model_path);
  auto host = nuri::make_backend("cpu", 1);
  nuri::Model init(mc, *host), a(mc, *host), b(mc, *host);
  init.init_weights(cpu_cfg.train.seed);
  nuri::load_model_weights(cpu.model_path, a);
  nuri::load_model_weights(gpu.model_path, b);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.num_params(); ++i) {
    const double u = double(a.params()[i]) - init.params()[i], v = double(b.params()[i]) - init.params()[i];
    diff += (u - v) * (u - v);
    norm += u * u;
  }
  INFO("|emulated update - cpu update| / |cpu update| = " << std::sqrt(diff / norm));
  CHECK(norm > 0);
  CHECK(std::sqrt(diff) <= 0.1 * std::sqrt(norm));
  fs::remove_all(fs::path(cpu.metrics_path).parent_path());
  fs::remove_all(fs::path(gpu.metrics_path).parent_path());
}

TEST_CASE("nuri::train refuses a run that cannot fit in the GPU's memory, before allocating it", "[backend][train]") {
  // The emulated device reports 16 GiB free; about 10 billion parameters need far more (with
  // their gradients, AdamW moments and bf16 copy). The check names the GPU and what to change.
  auto emulated = [](int) { return nuri::cuda::make_cuda_backend(); };
  const nuri::RunConfig huge = emu_run("huge", {"model.n_layer=48", "model.d_model=4096", "model.n_head=32",
                                                "model.n_kv_head=32", "model.d_ff=16384"});
  try {
    nuri::train(huge, nullptr, emulated);
    FAIL("a 10-billion-parameter run on a 16 GiB device was not refused");
  } catch (const nuri::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == nuri::ErrorKind::backend);
    CHECK_THAT(e.what(), Catch::Contains("on GPU 0") && Catch::Contains("MiB are free") &&
                             Catch::Contains("model.recompute"));
  }
  fs::remove_all(fs::path(huge.train.run_dir));
}

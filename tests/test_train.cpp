// End to end: a tiny model trained on the bundled text beats the unigram model by far; a run
// whose loss turns NaN/inf is skipped or stopped with a message that says which; sampling and
// the metrics file work.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "nuri/backend.hpp"
#include "nuri/config.hpp"
#include "nuri/error.hpp"
#include "nuri/train.hpp"

namespace {
const std::string corpus = NURI_CORPUS_DIR;

nuri::RunConfig tiny_run(const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {
      "model.preset=gpt2-tiny", "model.n_layer=2", "model.d_model=128", "model.n_head=4",
      "model.n_kv_head=4", "model.d_ff=512", "model.vocab_size=257", "model.max_seq_len=128",
      "train.batch_size=16", "train.seq_len=128", "train.steps=400", "train.eval_every=100",
      "train.eval_batches=8", "train.log_every=50", "train.peak_gflops=200", "train.sample_tokens=60",
      "train.sample_prompt=\"The \"", "train.threads=2", "optim.lr=3e-3", "optim.min_lr=3e-4",
      "optim.warmup_steps=20", "train.run_dir=\"" + (std::filesystem::temp_directory_path() / ("nuri_" + name + "_" + std::to_string(getpid()))).string() + "\"",
      "data.train_files=[\"" + corpus + "/en_moby_dick.txt\"]"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return nuri::load_run_config("", sets);
}
}  // namespace

TEST_CASE("training a tiny model for 400 steps brings validation loss far below the unigram model") {
  nuri::TrainResult r = nuri::train(tiny_run("converge"));
  INFO("val " << r.final_val_loss << " unigram " << r.unigram_val_loss);
  CHECK(r.steps_done == 400);
  CHECK(r.unigram_val_loss > 2.5);  // bytes of English: about 3.1 nats
  // Far below the unigram model: at least 0.7 nats lower, i.e. perplexity more than halved.
  CHECK(r.final_val_loss < r.unigram_val_loss - 0.7);
  CHECK(r.final_val_loss < 0.8 * r.unigram_val_loss);
  CHECK(std::filesystem::exists(r.model_path));
  std::ifstream metrics(r.metrics_path);
  int lines = 0, evals = 0, checkpoints = 0;
  for (std::string line; std::getline(metrics, line); ++lines) {
    evals += line.find("\"eval\"") != std::string::npos;
    checkpoints += line.find("\"checkpoint\"") != std::string::npos;
  }
  CHECK(lines == 400 + 4 + 1);
  CHECK(evals == 4);
  CHECK(checkpoints == 1);  // checkpoint.at_end
  CHECK(std::filesystem::exists(std::filesystem::path(r.metrics_path).parent_path() / "checkpoints" / "step-00000400" /
                                "manifest.json"));
}

TEST_CASE("a non-finite loss stops the run when train.nonfinite = stop") {
  // A learning rate of 1e10 drives the weights to overflow within a few steps.
  nuri::RunConfig cfg = tiny_run("nan_stop", {"optim.lr=1e10", "optim.min_lr=1e10", "optim.warmup_steps=0",
                                              "optim.grad_clip=0", "train.steps=40", "train.nonfinite=\"stop\""});
  try {
    nuri::train(cfg);
    FAIL("training with lr = 1e10 did not stop");
  } catch (const nuri::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == nuri::ErrorKind::numeric);
    CHECK(std::string(e.what()).find("stopping (train.nonfinite = \"stop\")") != std::string::npos);
    CHECK((std::string(e.what()).find("nan") != std::string::npos ||
           std::string(e.what()).find("inf") != std::string::npos));
  }
}

TEST_CASE("non-finite steps are skipped, then the run stops after max_nonfinite_skips in a row") {
  nuri::RunConfig cfg = tiny_run("nan_skip", {"optim.lr=1e10", "optim.min_lr=1e10", "optim.warmup_steps=0",
                                              "optim.grad_clip=0", "train.steps=40", "train.nonfinite=\"skip\"",
                                              "train.max_nonfinite_skips=3"});
  try {
    nuri::train(cfg);
    FAIL("training with lr = 1e10 did not stop");
  } catch (const nuri::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == nuri::ErrorKind::numeric);
    CHECK(std::string(e.what()).find("for 4 steps in a row (train.max_nonfinite_skips = 3)") != std::string::npos);
  }
}

TEST_CASE("sampling continues a prompt and is reproducible for a seed") {
  nuri::RunConfig cfg = tiny_run("sample", {"train.steps=20", "train.eval_every=0"});
  nuri::TrainResult r = nuri::train(cfg);
  auto be_cfg = nuri::read_model_config(r.model_path);
  CHECK(be_cfg.d_model == 128);
  std::ifstream s(cfg.train.run_dir + "/sample.txt");
  std::string text((std::istreambuf_iterator<char>(s)), std::istreambuf_iterator<char>());
  CHECK(text.rfind("The ", 0) == 0);
  CHECK(text.size() > 4);
}

TEST_CASE("bf16 GEMM training follows the fp32 loss curve", "[.][bf16]") {
  // Mixed precision (cpu_gemm = "bf16": products of bf16-rounded inputs, fp32 accumulation, fp32
  // master weights) must train like fp32: the same run, step by step, within bf16 noise.
  try {
    nuri::make_backend("cpu", 1, "bf16");
  } catch (const nuri::Error& e) {
    std::printf("SKIPPED: %s\n", e.what());
    return;
  }
  auto run = [](const std::string& gemm) {
    nuri::RunConfig cfg = tiny_run("bf16_" + gemm, {"train.steps=120", "train.eval_every=0", "train.sample_tokens=0",
                                                    "cpu_gemm=\"" + gemm + "\""});
    nuri::TrainResult r = nuri::train(cfg);
    std::vector<double> losses;
    std::ifstream metrics(r.metrics_path);
    for (std::string line; std::getline(metrics, line);) {
      const auto at = line.find("\"loss\":");
      if (line.find("\"train\"") != std::string::npos && at != std::string::npos)
        losses.push_back(std::stod(line.substr(at + 7)));
    }
    return std::make_pair(r, losses);
  };
  const auto [fp32, fp32_losses] = run("eigen");
  const auto [bf16, bf16_losses] = run("bf16");
  REQUIRE(fp32_losses.size() == 120);
  REQUIRE(bf16_losses.size() == 120);
  // Compare the curves averaged over windows of 10 steps: single steps differ by the data noise
  // that a slightly different trajectory sees, not by a difference in how well it learns.
  double worst = 0;
  for (size_t w = 0; w + 10 <= fp32_losses.size(); w += 10) {
    double a = 0, b = 0;
    for (size_t i = w; i < w + 10; ++i) a += fp32_losses[i], b += bf16_losses[i];
    worst = std::max(worst, std::abs(b - a) / a);
  }
  INFO("fp32 val " << fp32.final_val_loss << ", bf16 val " << bf16.final_val_loss
                   << ", worst 10-step window " << worst);
  CHECK(worst < 0.02);
  CHECK(std::abs(bf16.final_val_loss - fp32.final_val_loss) < 0.03);
  CHECK(bf16_losses.back() < 0.8 * bf16_losses.front());  // it did train
  CHECK(bf16_losses != fp32_losses);                        // and it did run in bf16
}

// Compares two training runs (run directories of `nuri train`): every step's train loss, the
// validation losses and every final parameter. Used by dp_parity.sh to show that data-parallel
// layouts (dp, ZeRO-1, gradient accumulation) train exactly like one process.
//   dp_compare REF_DIR RUN_DIR [--loss-rtol 1e-5] [--param-atol 1e-5] [--expect-overlap] [--skip-val]
//              [--expect-layout TP DP]
// Prints the largest differences; exits 1 when one is over its tolerance (or, with
// --expect-overlap, when RUN_DIR's metrics show no bucket reduction started during backward).
// --expect-layout: RUN_DIR's "parallel" metrics record must say it ran at this (tp, dp).
// --skip-val: the runs evaluate on different batches (evaluation uses dp x batch_size rows, which
// gradient accumulation does not change), so only the training is compared.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/train.hpp"

namespace {

struct Run {
  std::vector<double> train_loss, val_loss;
  nlohmann::json parallel;  // the "parallel" record, if any
  std::vector<float> params;
};

Run read_run(const std::string& dir, nuri::Backend& backend) {
  Run r;
  std::ifstream metrics(dir + "/metrics.jsonl");
  NURI_CHECK(metrics.good(), io, "dp_compare", "cannot read " << dir << "/metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j["type"] == "train") r.train_loss.push_back(j["loss"].get<double>());
    if (j["type"] == "eval") r.val_loss.push_back(j["val_loss"].get<double>());
    if (j["type"] == "parallel") r.parallel = j;
  }
  const std::string model_path = dir + "/model.bin";
  nuri::Model model(nuri::read_model_config(model_path), backend);
  nuri::load_model_weights(model_path, model);
  r.params.assign(model.params(), model.params() + model.num_params());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: dp_compare REF_DIR RUN_DIR [--loss-rtol X] [--param-atol X] [--expect-overlap] "
                         "[--skip-val] [--expect-layout TP DP]\n");
    return 2;
  }
  double loss_rtol = 1e-5, param_atol = 1e-5;
  bool expect_overlap = false, skip_val = false;
  int expect_tp = 0, expect_dp = 0;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--loss-rtol" && i + 1 < argc) loss_rtol = std::atof(argv[++i]);
    else if (a == "--param-atol" && i + 1 < argc) param_atol = std::atof(argv[++i]);
    else if (a == "--expect-overlap") expect_overlap = true;
    else if (a == "--skip-val") skip_val = true;
    else if (a == "--expect-layout" && i + 2 < argc) expect_tp = std::atoi(argv[++i]), expect_dp = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "dp_compare: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto backend = nuri::make_backend("cpu", 1);
    const Run ref = read_run(argv[1], *backend), run = read_run(argv[2], *backend);
    bool ok = true;
    auto fail = [&](const std::string& what) {
      std::printf("FAIL %s\n", what.c_str());
      ok = false;
    };
    if (ref.train_loss.size() != run.train_loss.size() || ref.train_loss.empty())
      fail("train loss counts differ: " + std::to_string(ref.train_loss.size()) + " vs " +
           std::to_string(run.train_loss.size()));
    if (ref.val_loss.size() != run.val_loss.size()) fail("validation counts differ");
    if (ref.params.size() != run.params.size()) fail("parameter counts differ");
    if (!ok) return 1;

    double loss_rel = 0, val_rel = 0, param_abs = 0;
    size_t worst_step = 0, worst_param = 0;
    for (size_t i = 0; i < ref.train_loss.size(); ++i) {
      const double d = std::abs(run.train_loss[i] - ref.train_loss[i]) / std::abs(ref.train_loss[i]);
      if (!(d <= loss_rel)) loss_rel = d, worst_step = i;
    }
    for (size_t i = 0; i < ref.val_loss.size(); ++i)
      val_rel = std::max(val_rel, std::abs(run.val_loss[i] - ref.val_loss[i]) / std::abs(ref.val_loss[i]));
    for (size_t i = 0; i < ref.params.size(); ++i) {
      const double d = std::abs(double(run.params[i]) - double(ref.params[i]));
      if (!(d <= param_abs)) param_abs = d, worst_param = i;
    }
    std::printf("%s vs %s: %zu steps, max rel. loss diff %.3g (step %zu), max rel. val-loss diff %.3g, "
                "%zu params, max abs. param diff %.3g (index %zu)%s\n",
                argv[2], argv[1], ref.train_loss.size(), loss_rel, worst_step + 1, val_rel, ref.params.size(),
                param_abs, worst_param, skip_val ? " [validation not compared]" : "");
    if (!(loss_rel <= loss_rtol)) fail("train loss differs by more than " + std::to_string(loss_rtol) + " relative");
    if (!skip_val && !(val_rel <= loss_rtol)) fail("validation loss differs by more than " + std::to_string(loss_rtol) + " relative");
    if (!(param_abs <= param_atol)) fail("a parameter differs by more than " + std::to_string(param_atol));
    if (expect_overlap) {
      if (run.parallel.is_null()) {
        fail(std::string(argv[2]) + " has no \"parallel\" metrics record (not a data-parallel run?)");
      } else {
        const auto started = run.parallel["buckets_started_in_backward"].get<uint64_t>();
        std::printf("  overlap: %llu of %llu bucket reductions started while backward still ran (%llu done before it "
                    "returned), over %d timed steps\n",
                    (unsigned long long)started, (unsigned long long)run.parallel["buckets_started"].get<uint64_t>(),
                    (unsigned long long)run.parallel["buckets_done_in_backward"].get<uint64_t>(),
                    run.parallel["timed_steps"].get<int>());
        if (started == 0) fail("no bucket reduction started before backward finished");
      }
    }
    if (expect_tp > 0) {  // the run really trained at this (tp, dp): a setting ignored cannot pass
      const int tp = run.parallel.is_null() ? 1 : run.parallel["tp"].get<int>();
      const int dp = run.parallel.is_null() ? 1 : run.parallel["dp"].get<int>();
      if (tp != expect_tp || dp != expect_dp)
        fail(std::string(argv[2]) + " ran at (tp, dp) = (" + std::to_string(tp) + ", " + std::to_string(dp) +
             "), not (" + std::to_string(expect_tp) + ", " + std::to_string(expect_dp) + ")");
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dp_compare: %s\n", e.what());
    return 1;
  }
}

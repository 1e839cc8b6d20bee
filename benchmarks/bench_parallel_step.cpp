// One data- and tensor-parallel training step (forward + backward with the TP collectives +
// bucketed DP gradient reduction + AdamW) under mpirun: the step time split into compute,
// communication in flight and exposed (non-overlapped) communication, and the global tokens/s.
// benchmarks/scaling.sh runs it for weak and strong scaling over 1, 2 and 4 ranks, DP and TP.
//   mpirun -np 2 bench_parallel_step --preset gpt2-tiny --batch 8 --seq 128 --steps 8 [--threads 1]
//                                    [--tp 1] [--sp] [--heads H] [--zero1] [--bucket-mb 25] [--warmup 2]
// --batch is per DP rank (the ranks of one TP group share it); world = tp x dp. Tokens are random
// (a throughput figure, not a training run); each DP rank draws its own. TP collectives block the
// step, so all of their time is exposed; DP reductions overlap the backward. Rank 0 prints a
// summary and one machine-readable line:
//   NURI ranks=.. tp=.. dp=.. threads=.. batch=.. global_batch=.. step_s=.. compute_s=.. comm_s=..
//        exposed_s=.. tp_comm_s=.. tokens_per_s=..
// comm_s: DP and TP collectives in flight; exposed_s: the part the step waited for (all of TP's);
// compute_s = step_s - exposed_s. Medians over the timed steps of the step time as rank 0 sees it
// (the collectives make every rank's step the same length).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/parallel.hpp"
#include "nuri/rng.hpp"
#include "nuri/tensor_parallel.hpp"
#include "nuri/timer.hpp"

namespace {
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

int main(int argc, char** argv) {
  nuri::MpiEnvironment mpi(&argc, &argv);
  try {
    std::string preset = "gpt2-tiny";
    int B = 8, T = 128, steps = 8, warmup = 2, threads = 1, vocab = 0, tp = 1, heads = 0;
    bool zero1 = false, sp = false;
    double bucket_mb = 25;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> const char* {
        NURI_CHECK(i + 1 < argc, config, "bench_parallel_step", a << " needs a value");
        return argv[++i];
      };
      if (a == "--preset") preset = next();
      else if (a == "--batch") B = std::atoi(next());
      else if (a == "--seq") T = std::atoi(next());
      else if (a == "--steps") steps = std::atoi(next());
      else if (a == "--warmup") warmup = std::atoi(next());
      else if (a == "--threads") threads = std::atoi(next());
      else if (a == "--vocab") vocab = std::atoi(next());
      else if (a == "--bucket-mb") bucket_mb = std::atof(next());
      else if (a == "--zero1") zero1 = true;
      else if (a == "--tp") tp = std::atoi(next());
      else if (a == "--sp") sp = true;
      else if (a == "--heads") heads = std::atoi(next());
      else NURI_THROW(config, "bench_parallel_step", "unknown argument " << a);
    }
    NURI_CHECK(B >= 1 && T >= 1 && steps >= 1 && warmup >= 0, config, "bench_parallel_step",
               "--batch, --seq and --steps must be >= 1");
    nuri::ProcessGrid grid(mpi.world(), tp);
    auto backend = nuri::make_backend("cpu", threads > 0 ? threads : grid.threads_per_rank());
    nuri::ModelConfig cfg = nuri::model_preset(preset);
    if (vocab > 0) cfg.vocab_size = vocab;
    if (heads > 0) cfg.n_head = cfg.n_kv_head = heads;  // (a head count TP can divide)
    cfg.max_seq_len = std::max(cfg.max_seq_len, T);
    nuri::TensorParallelOptions tpo;
    if (tp > 1) tpo = {nuri::make_tensor_parallel_ops(grid.tp_ptr()), sp};
    nuri::Model model(cfg, *backend, tpo);
    model.init_weights(1);
    nuri::OptimConfig ocfg;
    nuri::DataParallelOptions dpo;
    dpo.zero1 = zero1;
    dpo.bucket_mb = bucket_mb;
    if (tp > 1) dpo.tp = grid.tp_ptr();
    nuri::DataParallel dp(model, *backend, ocfg, grid.dp_ptr(), dpo);
    dp.broadcast_parameters();

    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    nuri::Rng rng(3, uint64_t(grid.dp_rank()));  // the same batch on the ranks of a TP group
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = int32_t(rng.below(cfg.vocab_size));
      y[i] = int32_t(rng.below(cfg.vocab_size));
    }
    std::vector<double> step_s, compute_s, comm_s, exposed_s, tp_s;
    for (int s = 0; s < warmup + steps; ++s) {
      const nuri::DataParallelStats before = dp.stats();
      if (tpo.ops) tpo.ops->reset_stats();
      nuri::Timer t;
      dp.zero_grads();
      const float loss = dp.forward_backward(x.data(), y.data(), B, T, 1.0f, true);
      const nuri::DataParallel::Reduced r = dp.reduce(loss);
      dp.step(1e-4, r.grad_norm);
      const double dt = t.seconds();
      if (s < warmup) continue;
      const nuri::DataParallelStats& after = dp.stats();
      const double tp_comm = tpo.ops ? tpo.ops->stats().seconds : 0.0;
      const double exposed = after.exposed_s - before.exposed_s + tp_comm;
      step_s.push_back(dt);
      exposed_s.push_back(exposed);
      tp_s.push_back(tp_comm);
      compute_s.push_back(dt - exposed);
      comm_s.push_back(after.comm_s - before.comm_s + tp_comm);
    }
    const int ranks = grid.world_size(), dps = grid.dp_size();
    const double step = median(step_s);
    const double tokens_per_s = double(B) * T * dps / step;
    if (grid.world_rank() == 0) {
      std::printf("%s, %d rank(s) = tp %d x dp %d%s, %d thread(s) each, batch %d x %d per DP rank (global %d), %s, "
                  "%zu bucket(s): median step %.3f s = compute %.3f s + exposed comm %.4f s (TP %.4f s); comm in "
                  "flight %.4f s; %.0f tokens/s\n",
                  preset.c_str(), ranks, tp, dps, sp && tp > 1 ? " (sequence parallel)" : "", backend->threads(), B, T,
                  B * dps, zero1 ? "ZeRO-1" : "all-reduce", dp.buckets().size(), step, median(compute_s),
                  median(exposed_s), median(tp_s), median(comm_s), tokens_per_s);
      std::printf("NURI ranks=%d tp=%d dp=%d threads=%d batch=%d global_batch=%d seq=%d step_s=%.5f compute_s=%.5f "
                  "comm_s=%.5f exposed_s=%.5f tp_comm_s=%.5f tokens_per_s=%.1f\n",
                  ranks, tp, dps, backend->threads(), B, B * dps, T, step, median(compute_s), median(comm_s),
                  median(exposed_s), median(tp_s), tokens_per_s);
    }
  } catch (const std::exception& e) {
    nuri::abort_job(e);
  }
  return 0;
}

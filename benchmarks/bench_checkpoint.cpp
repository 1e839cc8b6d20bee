// Checkpoint cost for one process: the bytes of a gpt2-124m training state (parameters and
// AdamW moments, fp32), a blocking save, a background save (the stall it causes training: the
// snapshot copy; and how long the write runs behind it), verifying and loading it back, and how
// much a background write slows computation running beside it (sgemm GFLOP/s during the write
// against idle). benchmarks/checkpoint.sh runs it with PyTorch's torch.save / torch.load of the
// same tensors as the peer.
//   bench_checkpoint [--preset gpt2-124m] [--dir /tmp/nuri-bench-ckpt] [--repeats 4] [--threads 0]
// Prints a summary and one machine-readable line:
//   NURI bytes=.. save_s=.. save_gbs=.. stall_s=.. first_stall_s=.. write_s=.. verify_s=.. load_s=..
//        gemm_idle=.. gemm_during=..
// (medians over the repeats after two untimed warm-up saves; each save is fsynced, so the figures
// include the disk; the stall of
// the first background save, which also allocates the snapshot buffer, is reported apart).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/checkpoint.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/timer.hpp"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// GFLOP/s of repeated 1024^3 products for about `seconds`.
double gemm_rate(nuri::Backend& be, double seconds) {
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  nuri::Timer t;
  int reps = 0;
  while (reps < 2 || t.seconds() < seconds) {
    be.gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    ++reps;
  }
  return 2.0 * n * n * double(n) * reps / t.seconds() / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string preset = "gpt2-124m", dir = "/tmp/nuri-bench-ckpt";
    int repeats = 4, threads = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        NURI_CHECK(i + 1 < argc, config, "bench_checkpoint", a << " needs a value");
        return argv[++i];
      };
      if (a == "--preset") preset = next();
      else if (a == "--dir") dir = next();
      else if (a == "--repeats") repeats = std::atoi(next().c_str());
      else if (a == "--threads") threads = std::atoi(next().c_str());
      else NURI_THROW(config, "bench_checkpoint", "unknown argument " << a);
    }
    auto backend = nuri::make_backend("cpu", threads);
    const nuri::ModelConfig cfg = nuri::model_preset(preset);
    nuri::Model model(cfg, *backend);
    model.init_weights(1);
    nuri::AdamW optimizer(nuri::OptimConfig{}, model, *backend);
    // Moments with values (a fresh optimizer's are zero, which a file system might store sparsely).
    for (size_t i = 0; i < optimizer.moment_floats(); ++i) {
      optimizer.exp_avg()[i] = 1e-3f * float(i % 997);
      optimizer.exp_avg_sq()[i] = 1e-6f * float(i % 991);
    }
    const double bytes = 3.0 * 4.0 * double(model.num_params());
    nuri::TrainerState state;
    state.loader = "bench";
    std::filesystem::remove_all(dir);

    std::vector<double> save_s, stall_s, write_s, verify_s, load_s, during;
    double first_stall = 0;
    const double idle = gemm_rate(*backend, 1.0);
    nuri::AsyncCheckpointer async(dir, nullptr, {2, 0});  // as the trainer: one for the run,
    async.reserve(size_t(3) * model.num_params());        // its buffer made ready in the background
    // Warm-up, untimed: in a VM the first gigabytes of page cache cost seconds to fault in, which
    // says more about the VM than the writer (benchmarks/checkpoint.sh runs the peer after a
    // warm-up too). Two saves, so that later ones reuse pages that old checkpoints freed.
    for (int64_t s : {-2, -1}) {
      state.step = 1000000 + s;
      nuri::save_checkpoint(dir, model, optimizer, state, {}, {1, 0});
    }
    for (int r = 0; r < repeats; ++r) {
      state.step = 2 * r + 1;
      nuri::Timer t;
      nuri::save_checkpoint(dir, model, optimizer, state, {}, {2, 0});
      save_s.push_back(t.seconds());

      state.step = 2 * r + 2;
      const double stall = async.save(model, optimizer, state, {});
      if (r == 0) first_stall = stall;  // the first save also first-touches the snapshot buffer
      else stall_s.push_back(stall);
      // Computation beside the background write: GEMMs until the write has finished.
      nuri::Timer w;
      during.push_back(gemm_rate(*backend, 0.5));
      const std::string written = async.wait();
      write_s.push_back(async.last_write_seconds());

      t.reset();
      const nuri::CheckpointManifest m = nuri::read_checkpoint(written, /*verify=*/true);
      verify_s.push_back(t.seconds());
      t.reset();
      nuri::load_checkpoint(m, model, &optimizer);
      load_s.push_back(t.seconds());
    }
    const double save = median(save_s);
    if (stall_s.empty()) stall_s.push_back(first_stall);
    std::printf("%s: %.0f MB of state (parameters + AdamW moments), %d threads, %d repeats, into %s\n", preset.c_str(),
                bytes / 1e6, backend->threads(), repeats, dir.c_str());
    std::printf("  blocking save %.2f s (%.2f GB/s, fsynced); background save: training stalls %.3f s (the snapshot "
                "copy; %.3f s the first time, which also allocates it), the write runs %.2f s behind it\n",
                save, bytes / save / 1e9, median(stall_s), first_stall, median(write_s));
    std::printf("  resume: verify checksums %.2f s, load %.2f s; sgemm beside a background write %.0f GFLOP/s, idle %.0f "
                "(%.0f%%)\n",
                median(verify_s), median(load_s), median(during), idle, 100.0 * median(during) / idle);
    std::printf("NURI bytes=%.0f save_s=%.4f save_gbs=%.3f stall_s=%.4f first_stall_s=%.4f write_s=%.4f verify_s=%.4f "
                "load_s=%.4f gemm_idle=%.1f gemm_during=%.1f\n",
                bytes, save, bytes / save / 1e9, median(stall_s), first_stall, median(write_s), median(verify_s),
                median(load_s), idle, median(during));
    std::filesystem::remove_all(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: %s\n", e.what());
    return 1;
  }
  return 0;
}

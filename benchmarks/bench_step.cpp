// One training step (forward + backward + AdamW) of a preset: tokens/s and MFU.
//   cpu (default): MFU against the measured peak of the GEMM in use (fp32, or bf16 with
//     NURI_CPU_GEMM=bf16), and the peak RSS against the analytic estimate of `nuri train --dry-run`.
//   --backend cuda: MFU against the GPU's dense bf16 tensor-core peak from its data sheet (H100 SXM
//     989 TFLOP/s, H100 PCIe 756, H200 989, A100 312; --peak-tflops for any other).
// FLOPs per token are ModelConfig::train_flops_per_token, 6 N + 12 L T d: PaLM's count, which
// llm.c and nanoGPT use too, so MFU compares with theirs. It counts attention over the full T x T
// scores; only the causal half is computed, so against the FLOPs actually needed the MFU reads
// higher (by about 7% for gpt2-124m at T = 1024 and 5% for llama-1b at T = 2048).
//   bench_step --preset gpt2-tiny --batch 8 --seq 256 --steps 10 [--vocab V] [--recompute]
//              [--backend cpu|cuda] [--peak-tflops P] [--activation-dtype auto|fp32|bf16]
// It also prints the model's activation memory (Model::activation_bytes, and whether the blocks'
// activations are bf16), and on a GPU the device memory in use after the steps.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/rng.hpp"
#include "nuri/timer.hpp"
#include "nuri/train.hpp"

int main(int argc, char** argv) {
  std::string preset = "gpt2-tiny";
  int B = 8, T = 256, steps = 10, threads = 0, vocab = 0;
  bool recompute = false;
  std::string backend_name = "cpu", dtype = "auto";
  double peak_tflops = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? argv[++i] : (std::fprintf(stderr, "%s needs a value\n", a.c_str()), std::exit(2), argv[0]); };
    if (a == "--preset") preset = next();
    else if (a == "--batch") B = std::atoi(next());
    else if (a == "--seq") T = std::atoi(next());
    else if (a == "--steps") steps = std::atoi(next());
    else if (a == "--threads") threads = std::atoi(next());
    else if (a == "--vocab") vocab = std::atoi(next());
    else if (a == "--recompute") recompute = true;
    else if (a == "--backend") backend_name = next();
    else if (a == "--peak-tflops") peak_tflops = std::atof(next());
    else if (a == "--activation-dtype") dtype = next();
    else { std::fprintf(stderr, "unknown argument %s\n", a.c_str()); return 2; }
  }
  try {
    std::unique_ptr<nuri::Backend> backend;
    try {
      backend = nuri::make_backend(backend_name, threads);
    } catch (const nuri::Error& e) {
      if (backend_name != "cuda" || e.kind() != nuri::ErrorKind::backend) throw;
      std::printf("SKIPPED: %s\n", e.message().c_str());  // no GPU here: nothing to measure
      return 0;
    }
    nuri::ModelConfig cfg = nuri::model_preset(preset);
    if (vocab > 0) cfg.vocab_size = vocab;
    cfg.recompute = recompute;
    cfg.activation_dtype = dtype;
    const bool gpu = backend_name == "cuda";
    if (gpu && peak_tflops <= 0) {  // the data-sheet dense bf16 peak of the GPU in describe()
      const std::string d = backend->describe();
      const auto has = [&](const char* s) { return d.find(s) != std::string::npos; };
      peak_tflops = has("H100") && has("PCIe") ? 756 : has("H100") || has("H200") || has("GH200") ? 989
                  : has("A100") ? 312 : 0;
      if (peak_tflops <= 0) {
        std::fprintf(stderr, "bench_step: unknown GPU (%s); give its dense bf16 peak with --peak-tflops\n", d.c_str());
        return 2;
      }
    }
    std::printf("backend: %s\n", backend->describe().c_str());
    const double peak = gpu ? peak_tflops * 1e3 : nuri::measure_peak_gflops(*backend);
    nuri::Model model(cfg, *backend);
    model.init_weights(1);
    nuri::OptimConfig ocfg;
    nuri::AdamW opt(ocfg, model, *backend);
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    nuri::Rng rng(3);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = int32_t(rng.below(cfg.vocab_size));
      y[i] = int32_t(rng.below(cfg.vocab_size));
    }
    std::vector<double> times;
    for (int s = 0; s < steps + 1; ++s) {
      nuri::Timer t;
      model.zero_grads();
      model.forward_backward(x.data(), y.data(), B, T);
      opt.step(1e-4, opt.grad_norm());
      if (s > 0) times.push_back(t.seconds());  // the first step warms up
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    const double tok_s = double(B) * T / median;
    const double flops = cfg.train_flops_per_token(T) * tok_s;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double rss = double(ru.ru_maxrss) * 1024.0;
    const double est =
        nuri::estimate_memory(cfg, B, T, nuri::memory_facts(*backend, cfg)).total(recompute);
    std::printf("activations: %.0f MiB (held in %s)\n", double(model.activation_bytes()) / 1048576,
                model.bf16_activations() ? "bf16" : "fp32");
    if (gpu) {
      size_t free_b = 0, total_b = 0;
      if (backend->device_memory(&free_b, &total_b))  // the caching allocators' pools included
        std::printf("device memory in use: %.0f MiB of %.0f MiB (estimate %.0f MiB, its bf16 weight copy "
                    "included)\n",
                    double(total_b - free_b) / 1048576, double(total_b) / 1048576, est / 1048576);
      std::printf("%s B=%d T=%d cuda%s: median step %.4f s, %.0f tokens/s, %.1f TFLOP/s, MFU %.1f%% of the "
                  "%.0f TFLOP/s bf16 peak\n",
                  preset.c_str(), B, T, recompute ? " recompute" : "", median, tok_s, flops / 1e12,
                  100 * flops / 1e9 / peak, peak / 1e3);
      std::printf("NURI tokens_per_s=%.1f mfu=%.4f peak_gflops=%.1f\n", tok_s, flops / 1e9 / peak, peak);
      return 0;
    }
    std::printf("%s B=%d T=%d threads=%d%s: median step %.3f s, %.0f tokens/s, %.1f GFLOP/s, "
                "MFU %.1f%% of the measured GEMM peak %.1f GFLOP/s; peak RSS %.0f MiB vs estimate %.0f MiB (%.2fx)\n",
                preset.c_str(), B, T, backend->threads(), recompute ? " recompute" : "", median, tok_s,
                flops / 1e9, 100 * flops / 1e9 / peak, peak, rss / 1048576, est / 1048576, rss / est);
    std::printf("NURI tokens_per_s=%.1f mfu=%.4f peak_gflops=%.1f rss_ratio=%.3f\n", tok_s,
                flops / 1e9 / peak, peak, rss / est);
  } catch (const nuri::Error& e) {
    std::fprintf(stderr, "bench_step: %s\n", e.what());
    return 1;
  }
  return 0;
}

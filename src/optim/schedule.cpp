// Learning-rate schedules: linear warmup, then cosine, warmup-stable-decay (WSD) or constant.
#include <algorithm>
#include <cmath>

#include "nuri/error.hpp"
#include "nuri/optim.hpp"

namespace nuri {

double learning_rate(const OptimConfig& cfg, int step, int total_steps) {
  const int warmup = std::max(0, cfg.warmup_steps);
  if (step < warmup) return cfg.lr * double(step + 1) / double(warmup);
  if (cfg.schedule == "constant") return cfg.lr;
  const int decay_total = std::max(1, total_steps - warmup);
  const double progress = std::clamp(double(step - warmup) / double(std::max(1, decay_total - 1)), 0.0, 1.0);
  if (cfg.schedule == "cosine") {
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + std::cos(M_PI * progress));
  }
  if (cfg.schedule == "wsd") {
    // Stable at lr, then linear decay to min_lr over the last decay_fraction of all steps.
    const int decay_steps = std::max(1, int(std::lround(cfg.decay_fraction * total_steps)));
    const int decay_start = total_steps - decay_steps;
    if (step < decay_start) return cfg.lr;
    const double t = std::clamp(double(step - decay_start + 1) / double(decay_steps), 0.0, 1.0);
    return cfg.lr + (cfg.min_lr - cfg.lr) * t;
  }
  NURI_THROW(config, "optim.schedule",
             "unknown schedule '" << cfg.schedule << "'; choose cosine, wsd or constant");
}

}  // namespace nuri

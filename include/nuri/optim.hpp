#pragma once
// AdamW over a model's flat parameter buffer, learning-rate schedules and global-norm clipping.
#include <string>

#include "nuri/config.hpp"

namespace nuri {

class Backend;
class Model;

// Learning rate at `step` (0-based) of `total_steps`:
//   warmup: linear from lr/warmup to lr over warmup_steps;
//   cosine: then cosine from lr to min_lr at the last step;
//   wsd:    then constant lr, and linear decay to min_lr over the last decay_fraction of steps;
//   constant: lr after warmup.
double learning_rate(const OptimConfig& cfg, int step, int total_steps);

class AdamW {
 public:
  // Allocates the moments (2 x num_params floats) on `backend`. The model must outlive this.
  AdamW(const OptimConfig& cfg, Model& model, Backend& backend);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Global L2 norm of the model's gradients.
  double grad_norm() const;
  // One update with learning rate `lr`, clipping the gradients to cfg.grad_clip by global norm
  // (computed here, or passed in as `norm` to avoid a second pass). Increments step().
  void step(double lr, double norm);
  int step_count() const { return step_; }
  float* exp_avg() { return m_; }
  float* exp_avg_sq() { return v_; }
  void set_step_count(int s) { step_ = s; }

 private:
  OptimConfig cfg_;
  Model& model_;
  Backend& backend_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  int step_ = 0;
};

}  // namespace nuri

#pragma once
// \file
// AdamW over a model's flat parameter buffer, learning-rate schedules and global-norm clipping.
#include <cstddef>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/config.hpp"
#include "nuri/model.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class Backend;

// Learning rate at `step` (0-based) of `total_steps`:
//   warmup: linear from lr/warmup to lr over warmup_steps;
//   cosine: then cosine from lr to min_lr at the last step;
//   wsd:    then constant lr, and linear decay to min_lr over the last decay_fraction of steps;
//   constant: lr after warmup.
double learning_rate(const OptimConfig& cfg, int step, int total_steps);

// AdamW over a Trainable's flat buffers (all of them, or the ZeRO-1 ranges a rank owns), with
// decoupled weight decay on the tensors marked weight_decay and global-norm clipping. One thread.
class AdamW {
 public:
  // Allocates the moments (2 x num_params floats) on `backend`. The model must outlive this.
  AdamW(const OptimConfig& cfg, Trainable& model, Backend& backend);
  // Sharded (ZeRO-1): updates only the `owned` ranges of the flat buffer, and keeps moments for
  // them alone (2 x the sum of their counts floats, in the order given). The ranges must lie inside
  // the buffer and not overlap (Error(internal) otherwise); an empty list owns nothing.
  AdamW(const OptimConfig& cfg, Trainable& model, Backend& backend, std::vector<ParamRange> owned);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Global L2 norm of the model's gradients (of the owned ranges when sharded).
  double grad_norm() const;
  // Sum of squares of the owned gradients (the whole buffer when not sharded), for a norm that
  // a data-parallel engine completes by summing over ranks.
  double grad_sum_squares() const;
  // One update with learning rate `lr`, clipping the gradients to cfg.grad_clip by global norm
  // (computed here, or passed in as `norm` to avoid a second pass). Increments step().
  void step(double lr, double norm);
  int step_count() const { return step_; }  // updates done (the bias correction uses it)
  float* exp_avg() { return m_; }      // moment_floats() floats, owned ranges in order
  float* exp_avg_sq() { return v_; }   // second moments, laid out as exp_avg()
  const float* exp_avg() const { return m_; }     // first moments
  const float* exp_avg_sq() const { return v_; }  // second moments
  size_t moment_floats() const { return moment_floats_; }  // floats in each moment buffer
  const std::vector<ParamRange>& owned() const { return owned_; }  // the ranges it updates
  void set_step_count(int s) { step_ = s; }  // for a resumed optimizer (checkpoint.hpp)

 private:
  OptimConfig cfg_;
  Trainable& model_;
  Backend& backend_;
  std::vector<ParamRange> owned_;
  // One segment per tensor, or per part of a tensor inside an owned range; all of them go to
  // the backend in one fused call.
  std::vector<AdamwSegment> segments_;
  size_t moment_floats_ = 0;
  float* m_ = nullptr;
  float* v_ = nullptr;
  int step_ = 0;
};

}  // namespace nuri
NURI_API_END

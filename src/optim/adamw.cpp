// AdamW over the model's flat parameter buffer (or owned ranges of it, for ZeRO-1): one fused
// backend call over every parameter tensor (or piece of a tensor inside an owned range), with
// weight decay only where the tensor asks for it (matrices and embeddings, not norms or biases).
#include <algorithm>
#include <cmath>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"

namespace nuri {

AdamW::AdamW(const OptimConfig& cfg, Trainable& model, Backend& backend)
    : AdamW(cfg, model, backend, {ParamRange{0, model.num_params()}}) {}

AdamW::AdamW(const OptimConfig& cfg, Trainable& model, Backend& backend, std::vector<ParamRange> owned)
    : cfg_(cfg), model_(model), backend_(backend), owned_(std::move(owned)) {
  NURI_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, config, "AdamW",
             "optim.beta1 and optim.beta2 must be in [0, 1), got " << cfg.beta1 << " and " << cfg.beta2);
  NURI_CHECK(cfg.eps > 0, config, "AdamW", "optim.eps must be > 0, got " << cfg.eps);
  std::vector<ParamRange> sorted = owned_;
  std::sort(sorted.begin(), sorted.end(), [](const ParamRange& a, const ParamRange& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    NURI_CHECK(sorted[i].offset + sorted[i].count <= model.num_params(), internal, "AdamW",
               "owned range [" << sorted[i].offset << ", " << sorted[i].offset + sorted[i].count
                               << ") lies outside the " << model.num_params() << " parameters");
    NURI_CHECK(i == 0 || sorted[i - 1].offset + sorted[i - 1].count <= sorted[i].offset, internal, "AdamW",
               "owned ranges overlap at offset " << sorted[i].offset);
  }
  // Segments: each owned range cut at tensor boundaries (tensors are sorted by offset and tile the
  // buffer). Unsharded, this is exactly one segment per tensor.
  for (const ParamRange& r : owned_) {
    const size_t end = r.offset + r.count;
    for (const ParamTensor& t : model.tensors()) {
      const size_t lo = std::max(r.offset, t.offset), hi = std::min(end, t.offset + t.numel);
      if (lo >= hi) continue;
      segments_.push_back({lo, moment_floats_ + (lo - r.offset), hi - lo, t.weight_decay});
    }
    moment_floats_ += r.count;
  }
  m_ = backend_.alloc(std::max<size_t>(moment_floats_, 1));
  v_ = backend_.alloc(std::max<size_t>(moment_floats_, 1));
}

AdamW::~AdamW() {
  backend_.free(m_);
  backend_.free(v_);
}

double AdamW::grad_sum_squares() const {
  double sum = 0;
  for (const ParamRange& r : owned_) sum += backend_.sum_squares(model_.grads() + r.offset, r.count);
  return sum;
}

double AdamW::grad_norm() const { return std::sqrt(grad_sum_squares()); }

void AdamW::step(double lr, double norm) {
  ++step_;
  float grad_scale = 1.0f;
  if (cfg_.grad_clip > 0 && norm > cfg_.grad_clip) grad_scale = float(cfg_.grad_clip / norm);
  backend_.adamw_update_segments(model_.params(), model_.grads(), m_, v_, segments_, float(lr),
                                 float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps),
                                 float(cfg_.weight_decay), step_, grad_scale);
  backend_.synchronize();  // the parameters are updated in memory when this returns
}

}  // namespace nuri

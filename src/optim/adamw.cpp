// AdamW over the model's flat parameter buffer: one backend call per parameter tensor, with
// weight decay only where the tensor asks for it (matrices and embeddings, not norms or biases).
#include <cmath>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"

namespace nuri {

AdamW::AdamW(const OptimConfig& cfg, Model& model, Backend& backend)
    : cfg_(cfg), model_(model), backend_(backend) {
  NURI_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, config, "AdamW",
             "optim.beta1 and optim.beta2 must be in [0, 1), got " << cfg.beta1 << " and " << cfg.beta2);
  NURI_CHECK(cfg.eps > 0, config, "AdamW", "optim.eps must be > 0, got " << cfg.eps);
  m_ = backend_.alloc(model.num_params());
  v_ = backend_.alloc(model.num_params());
}

AdamW::~AdamW() {
  backend_.free(m_);
  backend_.free(v_);
}

double AdamW::grad_norm() const {
  return std::sqrt(backend_.sum_squares(model_.grads(), model_.num_params()));
}

void AdamW::step(double lr, double norm) {
  ++step_;
  float grad_scale = 1.0f;
  if (cfg_.grad_clip > 0 && norm > cfg_.grad_clip) grad_scale = float(cfg_.grad_clip / norm);
  for (const ParamTensor& t : model_.tensors()) {
    backend_.adamw_update(model_.params() + t.offset, model_.grads() + t.offset, m_ + t.offset,
                          v_ + t.offset, t.numel, float(lr), float(cfg_.beta1), float(cfg_.beta2),
                          float(cfg_.eps), t.weight_decay ? float(cfg_.weight_decay) : 0.0f, step_,
                          grad_scale);
  }
}

}  // namespace nuri

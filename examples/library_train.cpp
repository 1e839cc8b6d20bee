// Using nuri as a library: build a model from parts, write your own training loop.
//
// This program trains a small llama-style model to continue a repeating Korean/English text,
// with nuri's Backend, Model, AdamW and schedule, but its own loop and its own data. It prints
// the loss at the start and the end and exits non-zero if the loss did not fall.
//
//   ./library_train [steps]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nuri/nuri.hpp"

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 50;
  try {
    // 1. A backend: where tensors live and ops run.
    std::unique_ptr<nuri::Backend> backend = nuri::make_backend("cpu");

    // 2. A model: start from a preset and shrink it.
    nuri::ModelConfig cfg = nuri::model_preset("llama-tiny");
    cfg.n_layer = 2;
    cfg.d_model = 64;
    cfg.n_head = 4;
    cfg.n_kv_head = 2;
    cfg.d_ff = 128;
    cfg.vocab_size = 257;  // byte-level tokens
    cfg.max_seq_len = 64;
    nuri::Model model(cfg, *backend);
    model.init_weights(/*seed=*/7);

    // 3. Data of our own: a byte-tokenized text, cut into (B, T) windows by hand.
    auto tokenizer = nuri::make_tokenizer("bytes");
    std::string text;
    for (int i = 0; i < 40; ++i) text += "누리는 언어 모델을 훈련합니다. nuri trains language models. ";
    const std::vector<int32_t> ids = tokenizer->encode(text);
    const int B = 4, T = 48;
    std::vector<int32_t> x(B * T), y(B * T);

    // 4. An optimizer and a schedule.
    nuri::OptimConfig ocfg;
    ocfg.lr = 3e-3;
    ocfg.min_lr = 3e-4;
    ocfg.warmup_steps = 5;
    nuri::AdamW opt(ocfg, model, *backend);

    float first = 0, last = 0;
    for (int step = 0; step < steps; ++step) {
      for (int b = 0; b < B; ++b) {
        const size_t start = size_t((step * 37 + b * 101) % int(ids.size() - T - 1));
        for (int t = 0; t < T; ++t) {
          x[b * T + t] = ids[start + t];
          y[b * T + t] = ids[start + t + 1];
        }
      }
      model.zero_grads();
      const float loss = model.forward_backward(x.data(), y.data(), B, T);
      opt.step(nuri::learning_rate(ocfg, step, steps), opt.grad_norm());
      if (step == 0) first = loss;
      last = loss;
    }
    std::printf("loss went from %.4f to %.4f in %d steps\n", first, last, steps);
    return last < first ? 0 : 1;
  } catch (const nuri::Error& e) {
    std::fprintf(stderr, "library_train: %s\n", e.what());
    return 1;
  }
}

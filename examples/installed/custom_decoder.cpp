// A decoder of your own, trained with nuri's engine. The model here is not one of nuri's: its MLP
// is a squared-ReLU MLP (y = W2 relu(W1 x)^2, as in Primer), written in this file on top of nuri's
// Backend ops (norms, attention, RoPE, linear layers, the fused LM-head loss). Implementing
// nuri::Trainable (model.hpp) is all it takes for nuri's AdamW and DataParallel (bucketed
// gradient all-reduce during backward, ZeRO-1) to train it, under mpirun or alone.
//
//   mpirun -np 2 ./custom_decoder --steps 40 --text corpus.txt     (or without mpirun)
//
// Before training it checks its own backward against central differences on a few parameters,
// and it exits non-zero if that check fails or the loss does not fall.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nuri/nuri.hpp"

namespace {

// Shapes: B sequences of T tokens, N = B*T rows; C model width, H heads of D = C/H, F MLP width,
// V vocabulary. Parameters (one flat buffer, tensors in this order):
//   wte (V,C) [also the LM head]; per block: ln1 (C), qkv (3C,C), proj (C,C), ln2 (C), up (F,C),
//   down (C,F); ln_f (C).
class ReluSquaredDecoder final : public nuri::Trainable {
 public:
  ReluSquaredDecoder(nuri::Backend& be, int V, int C, int H, int F, int L, int max_T)
      : be_(be), V_(V), C_(C), H_(H), D_(C / H), F_(F), L_(L), max_T_(max_T) {
    auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
      nuri::ParamTensor t;
      t.name = name;
      t.shape = t.full_shape = shape;
      t.numel = 1;
      for (int64_t d : shape) t.numel *= size_t(d);
      t.offset = num_params_;
      t.weight_decay = decay;
      t.pieces = {{0, 0, shape[0], 1}};  // not split: one piece, one holder
      num_params_ += t.numel;
      tensors_.push_back(t);
      return t.offset;
    };
    wte_ = add("wte", {V, C}, true);
    for (int l = 0; l < L; ++l) {
      const std::string p = "blocks." + std::to_string(l) + ".";
      Block b;
      b.ln1 = add(p + "ln1", {C}, false);
      b.qkv = add(p + "qkv", {3 * C, C}, true);
      b.proj = add(p + "proj", {C, C}, true);
      b.ln2 = add(p + "ln2", {C}, false);
      b.up = add(p + "up", {F, C}, true);
      b.down = add(p + "down", {C, F}, true);
      blocks_.push_back(b);
    }
    lnf_ = add("ln_f", {C}, false);
    params_ = be_.alloc(num_params_);
    grads_ = be_.alloc(num_params_);
    // Backward finishes: the final norm, then each block from the last, then the embedding.
    order_.push_back({lnf_, num_params_ - lnf_});
    for (int l = L - 1; l >= 0; --l) {
      const size_t end = l + 1 < L ? blocks_[size_t(l) + 1].ln1 : lnf_;
      order_.push_back({blocks_[size_t(l)].ln1, end - blocks_[size_t(l)].ln1});
    }
    order_.push_back({0, blocks_[0].ln1});
  }
  ~ReluSquaredDecoder() override {
    be_.free(params_);
    be_.free(grads_);
  }

  void init(uint64_t seed) {
    std::vector<float> host(num_params_);
    nuri::Rng rng(seed);
    for (const nuri::ParamTensor& t : tensors_)
      for (size_t i = 0; i < t.numel; ++i)
        host[t.offset + i] = t.shape.size() == 1 ? 1.0f : float(0.02 * rng.normal());
    be_.copy(params_, host.data(), num_params_);
  }

  float* params() override { return params_; }
  const float* params() const override { return params_; }
  float* grads() override { return grads_; }
  const float* grads() const override { return grads_; }
  size_t num_params() const override { return num_params_; }
  const std::vector<nuri::ParamTensor>& tensors() const override { return tensors_; }
  void zero_grads() override { be_.zero(grads_, num_params_); }
  void set_grad_ready_hook(nuri::GradReadyHook hook) override { hook_ = std::move(hook); }
  const std::vector<nuri::ParamRange>& grad_ready_order() const override { return order_; }

  float forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T, float scale) override {
    const double loss = run(tokens, targets, B, T, scale, /*backward=*/true);
    return float(loss);
  }
  float loss(const int32_t* tokens, const int32_t* targets, int B, int T) {
    return float(run(tokens, targets, B, T, 1.0f, /*backward=*/false));
  }

 private:
  struct Block {
    size_t ln1, qkv, proj, ln2, up, down;
  };
  struct Acts {  // one block's saved activations
    std::vector<float> ln1, rstd1, qkv, att, lse, mid, ln2, rstd2, up, act;
  };

  // The mean loss over valid targets; with backward, grads += scale * its gradient.
  double run(const int32_t* tokens, const int32_t* targets, int B, int T, float scale, bool backward) {
    NURI_CHECK(T <= max_T_, shape, "ReluSquaredDecoder", "T = " << T << " exceeds " << max_T_);
    const int N = B * T, C = C_, F = F_;
    const size_t NC = size_t(N) * C;
    std::vector<std::vector<float>> res(size_t(L_) + 1, std::vector<float>(NC));
    std::vector<Acts> acts(static_cast<size_t>(L_));
    be_.embedding_forward(res[0].data(), tokens, params_ + wte_, nullptr, N, T, C);
    for (int l = 0; l < L_; ++l) {
      const Block& b = blocks_[size_t(l)];
      Acts& a = acts[size_t(l)];
      a.ln1.resize(NC), a.rstd1.resize(size_t(N)), a.qkv.resize(3 * NC), a.att.resize(NC);
      a.lse.resize(size_t(B) * H_ * T), a.mid.resize(NC), a.ln2.resize(NC), a.rstd2.resize(size_t(N));
      a.up.resize(size_t(N) * F), a.act.resize(size_t(N) * F);
      be_.rmsnorm_forward(a.ln1.data(), a.rstd1.data(), res[size_t(l)].data(), params_ + b.ln1, N, C, 1e-5f);
      be_.linear_forward(a.qkv.data(), a.ln1.data(), params_ + b.qkv, nullptr, N, C, 3 * C, false);
      be_.rope(a.qkv.data(), B, T, 2 * H_, D_, 3 * C, 10000.0f, false);  // q and k heads
      be_.attention_forward(a.att.data(), a.lse.data(), a.qkv.data(), B, T, H_, H_, D_);
      a.mid = res[size_t(l)];
      be_.linear_forward(a.mid.data(), a.att.data(), params_ + b.proj, nullptr, N, C, C, true);
      be_.rmsnorm_forward(a.ln2.data(), a.rstd2.data(), a.mid.data(), params_ + b.ln2, N, C, 1e-5f);
      be_.linear_forward(a.up.data(), a.ln2.data(), params_ + b.up, nullptr, N, C, F, false);
      for (size_t i = 0; i < a.up.size(); ++i) {  // the custom part: relu(x)^2
        const float r = a.up[i] > 0 ? a.up[i] : 0.0f;
        a.act[i] = r * r;
      }
      res[size_t(l) + 1] = a.mid;
      be_.linear_forward(res[size_t(l) + 1].data(), a.act.data(), params_ + b.down, nullptr, N, F, C, true);
    }
    std::vector<float> lnf(NC), rstdf(static_cast<size_t>(N));
    be_.rmsnorm_forward(lnf.data(), rstdf.data(), res[size_t(L_)].data(), params_ + lnf_, N, C, 1e-5f);
    int64_t valid = 0;
    for (int i = 0; i < N; ++i) valid += targets[i] >= 0;
    if (valid == 0) return 0.0;
    std::vector<float> dln(NC), dres(NC, 0.0f);
    const double sum = be_.lm_head_cross_entropy(backward ? dln.data() : nullptr, backward ? grads_ + wte_ : nullptr,
                                                 lnf.data(), params_ + wte_, targets, N, C, V_,
                                                 scale / float(valid));
    if (!backward) return sum / double(valid);

    size_t next = 0;
    auto ready = [&] {
      if (hook_) hook_(order_[next].offset, order_[next].count);
      ++next;
    };
    be_.rmsnorm_backward(dres.data(), grads_ + lnf_, dln.data(), res[size_t(L_)].data(), params_ + lnf_,
                         rstdf.data(), N, C);
    ready();
    std::vector<float> dact(size_t(N) * F), dup(size_t(N) * F), datt(NC), dqkv(3 * NC);
    for (int l = L_ - 1; l >= 0; --l) {
      const Block& b = blocks_[size_t(l)];
      Acts& a = acts[size_t(l)];
      be_.linear_backward(dact.data(), grads_ + b.down, nullptr, dres.data(), a.act.data(), params_ + b.down, N, F, C);
      for (size_t i = 0; i < dup.size(); ++i) dup[i] = a.up[i] > 0 ? 2.0f * a.up[i] * dact[i] : 0.0f;
      be_.linear_backward(dln.data(), grads_ + b.up, nullptr, dup.data(), a.ln2.data(), params_ + b.up, N, C, F);
      be_.rmsnorm_backward(dres.data(), grads_ + b.ln2, dln.data(), a.mid.data(), params_ + b.ln2, a.rstd2.data(), N, C);
      be_.linear_backward(datt.data(), grads_ + b.proj, nullptr, dres.data(), a.att.data(), params_ + b.proj, N, C, C);
      be_.attention_backward(dqkv.data(), datt.data(), a.qkv.data(), a.att.data(), a.lse.data(), B, T, H_, H_, D_);
      be_.rope(dqkv.data(), B, T, 2 * H_, D_, 3 * C, 10000.0f, true);
      be_.linear_backward(dln.data(), grads_ + b.qkv, nullptr, dqkv.data(), a.ln1.data(), params_ + b.qkv, N, C, 3 * C);
      be_.rmsnorm_backward(dres.data(), grads_ + b.ln1, dln.data(), res[size_t(l)].data(), params_ + b.ln1,
                           a.rstd1.data(), N, C);
      ready();
    }
    be_.embedding_backward(grads_ + wte_, nullptr, dres.data(), tokens, N, T, C);
    ready();
    return sum / double(valid);
  }

  nuri::Backend& be_;
  int V_, C_, H_, D_, F_, L_, max_T_;
  size_t num_params_ = 0, wte_ = 0, lnf_ = 0;
  std::vector<Block> blocks_;
  std::vector<nuri::ParamTensor> tensors_;
  std::vector<nuri::ParamRange> order_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  nuri::GradReadyHook hook_;
};

}  // namespace

int main(int argc, char** argv) {
  nuri::MpiEnvironment mpi(&argc, &argv);
  try {
    int steps = 40;
    std::string text_file;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string a = argv[i];
      if (a == "--steps") steps = std::atoi(argv[i + 1]);
      else if (a == "--text") text_file = argv[i + 1];
      else NURI_THROW(config, "custom_decoder", "unknown argument " << a << " (--steps, --text)");
    }
    NURI_CHECK(!text_file.empty(), config, "custom_decoder", "--text FILE is required");
    nuri::ProcessGrid grid(mpi.world(), /*tp=*/1);
    const bool lead = grid.world_rank() == 0;
    auto backend = nuri::make_backend("cpu", grid.threads_per_rank());
    const int B = 4, T = 32;
    ReluSquaredDecoder model(*backend, /*V=*/257, /*C=*/64, /*H=*/4, /*F=*/192, /*L=*/2, /*max_T=*/T);
    model.init(5);

    auto tokenizer = nuri::make_tokenizer("bytes");
    const nuri::TokenDataset data = nuri::load_text_dataset({text_file}, *tokenizer, 0.0);
    nuri::BatchLoader loader(data.train, B, T, /*seed=*/3, grid.dp_rank(), grid.dp_size());
    std::vector<int32_t> x(size_t(B) * T), y(x.size());
    loader.next(x.data(), y.data());

    // The custom backward against central differences (double-checking the code above).
    int bad = 0;
    {
      model.zero_grads();
      model.forward_backward(x.data(), y.data(), B, T, 1.0f);
      std::vector<float> g(model.grads(), model.grads() + model.num_params());
      nuri::Rng pick(9);
      for (int k = 0; k < 12; ++k) {
        const nuri::ParamTensor& t = model.tensors()[size_t(pick.below(model.tensors().size()))];
        const size_t i = t.offset + size_t(pick.below(t.numel));
        float& p = model.params()[i];
        const float keep = p, h = 1e-2f;
        p = keep + h;
        const double lp = model.loss(x.data(), y.data(), B, T);
        p = keep - h;
        const double lm = model.loss(x.data(), y.data(), B, T);
        p = keep;
        const double fd = (lp - lm) / (2 * h);
        const bool ok = std::abs(fd - g[i]) <= 2e-3 + 0.05 * std::abs(fd);
        bad += !ok;
        if (lead && !ok) std::printf("gradient check: %s[%zu]: backward %.6g, central difference %.6g\n",
                                     t.name.c_str(), i - t.offset, g[i], fd);
      }
      if (lead) std::printf("gradient check: %d of 12 parameters off\n", bad);
    }

    // nuri's engine: bucketed all-reduce during backward over the DP ranks, ZeRO-1, AdamW.
    nuri::OptimConfig ocfg;
    ocfg.lr = 3e-3;
    ocfg.min_lr = 3e-4;
    ocfg.warmup_steps = 3;
    nuri::DataParallelOptions dpo;
    dpo.zero1 = true;
    dpo.bucket_mb = 0.1;  // small buckets: several reductions start during backward
    nuri::DataParallel engine(model, *backend, ocfg, grid.dp_ptr(), dpo);
    engine.broadcast_parameters();
    double first = 0, last = 0;
    for (int step = 0; step < steps; ++step) {
      engine.zero_grads();
      if (step > 0) loader.next(x.data(), y.data());
      const float local = engine.forward_backward(x.data(), y.data(), B, T, 1.0f, true);
      const nuri::DataParallel::Reduced r = engine.reduce(local);
      engine.step(nuri::learning_rate(ocfg, step, steps), r.grad_norm);
      if (step == 0) first = r.loss;
      last = r.loss;
      if (lead && (step % 10 == 0 || step + 1 == steps)) std::printf("step %3d  loss %.4f\n", step + 1, r.loss);
    }
    if (lead)
      std::printf("relu^2 decoder (%zu parameters) on %d rank(s): loss %.4f -> %.4f; %zu gradient buckets\n",
                  model.num_params(), grid.world_size(), first, last, engine.buckets().size());
    return bad == 0 && last < first - 0.5 ? 0 : 1;
  } catch (const std::exception& e) {
    nuri::abort_job(e);
  }
}

// Part of test_gpu (ctest `gpu`): the cuda backend on a real GPU — its ops against the CPU backend
// on model-sized shapes, then end-to-end bf16 training (gpt2 and llama, GQA, 20 AdamW steps)
// whose loss curve must follow the CPU fp32 run. Called from test_gpu.cpp's main once a device is
// known to exist. Prints one line per check; returns the number of failures.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/rng.hpp"

namespace nuri::gpu_test {

namespace {

using Vec = std::vector<float>;

// Normal values rounded to bf16 (so the GPU's cast to bf16 is exact).
Vec bf16_randn(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  Vec v(n);
  for (float& x : v) x = bf16_widen(bf16_round(float(scale * rng.normal())));
  return v;
}

struct Buf {
  Backend& be;
  float* p;
  size_t n;
  Buf(Backend& b, const Vec& v) : be(b), p(b.alloc(v.size())), n(v.size()) {
    if (n) be.copy(p, v.data(), n);  // managed memory: a plain copy from the host works
  }
  Buf(Backend& b, size_t count) : be(b), p(b.alloc(count)), n(count) {}
  ~Buf() { be.free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Vec get() const {  // the backend's ops are asynchronous: wait before the host reads
    be.synchronize();
    return Vec(p, p + n);
  }
};

int failures = 0;

// max |got - want| / max |want| (products summed in a different order: scale-relative).
void compare(const std::string& what, const Vec& got, const Vec& want, double tol) {
  double worst = 0, scale = 1e-6;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / scale);
  const bool ok = got.size() == want.size() && worst <= tol;
  std::printf("%-4s %-52s max diff / max |want| %.3g (tolerance %.0e)\n", ok ? "ok" : "FAIL", what.c_str(), worst,
              tol);
  failures += !ok;
}

void ops(Backend& gpu, Backend& cpu) {
  {  // a gpt2-124m QKV projection, forward and backward
    const int N = 512, IC = 768, OC = 2304;
    const Vec x = bf16_randn(size_t(N) * IC, 1), w = bf16_randn(size_t(OC) * IC, 2, 0.02), b = bf16_randn(OC, 3);
    const Vec dy = bf16_randn(size_t(N) * OC, 4);
    Buf gx(gpu, x), gw(gpu, w), gb(gpu, b), gout(gpu, size_t(N) * OC), gdy(gpu, dy), gdx(gpu, size_t(N) * IC),
        gdw(gpu, size_t(OC) * IC), gdb(gpu, size_t(OC));
    Vec out(size_t(N) * OC), dx(size_t(N) * IC), dw(size_t(OC) * IC), db(static_cast<size_t>(OC));
    cpu.linear_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC, false);
    gpu.linear_forward(gout.p, gx.p, gw.p, gb.p, N, IC, OC, false);
    compare("linear_forward 512x768 -> 2304 (+bias)", gout.get(), out, 1e-4);
    cpu.linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, IC, OC);
    gpu.linear_backward(gdx.p, gdw.p, gdb.p, gdy.p, gx.p, gw.p, N, IC, OC);
    compare("linear_backward dinp", gdx.get(), dx, 1e-4);
    compare("linear_backward dweight", gdw.get(), dw, 1e-4);
    compare("linear_backward dbias", gdb.get(), db, 1e-5);
  }
  {  // bf16 activations: the gpt2-124m MLP's first layer (bias and GELU fused, bf16 out), and qkv
    const int N = 512, IC = 768, OC = 3072;
    const Vec x = bf16_randn(size_t(N) * IC, 11), w = bf16_randn(size_t(OC) * IC, 12, 0.02), b = bf16_randn(OC, 13);
    std::vector<bf16_t> hx(x.size()), pre(size_t(N) * OC), out(size_t(N) * OC), y(size_t(N) * OC);
    for (size_t i = 0; i < x.size(); ++i) hx[i] = bf16_round(x[i]);
    // bf16 device buffers: two values per float of an alloc() buffer.
    Buf gx32(gpu, x), gx(gpu, (x.size() + 1) / 2), gw(gpu, w), gb(gpu, b), gpre(gpu, pre.size() / 2),
        gout(gpu, out.size() / 2), gy(gpu, y.size() / 2);
    gpu.to_bf16(reinterpret_cast<bf16_t*>(gx.p), gx32.p, x.size());
    auto widened = [&](const Buf& g, size_t n) {
      const Vec raw = g.get();
      Vec v(n);
      for (size_t i = 0; i < n; ++i) v[i] = bf16_widen(reinterpret_cast<const bf16_t*>(raw.data())[i]);
      return v;
    };
    auto widen_host = [](const std::vector<bf16_t>& h) {
      Vec v(h.size());
      for (size_t i = 0; i < h.size(); ++i) v[i] = bf16_widen(h[i]);
      return v;
    };
    cpu.linear_gelu_forward(pre.data(), out.data(), hx.data(), w.data(), b.data(), N, IC, OC);
    gpu.linear_gelu_forward(reinterpret_cast<bf16_t*>(gpre.p), reinterpret_cast<bf16_t*>(gout.p),
                            reinterpret_cast<const bf16_t*>(gx.p), gw.p, gb.p, N, IC, OC);
    compare("linear_gelu_forward bf16 -> bf16 pre", widened(gpre, pre.size()), widen_host(pre), 1e-2);
    compare("linear_gelu_forward bf16 -> bf16 out", widened(gout, out.size()), widen_host(out), 1e-2);
    cpu.linear_forward(y.data(), hx.data(), w.data(), b.data(), N, IC, OC);
    gpu.linear_forward(reinterpret_cast<bf16_t*>(gy.p), reinterpret_cast<const bf16_t*>(gx.p), gw.p, gb.p, N, IC,
                       OC);
    compare("linear_forward bf16 -> bf16 (+bias)", widened(gy, y.size()), widen_host(y), 1e-2);
  }
  {  // the gpt2 LM head with cross-entropy
    const int N = 64, C = 768, V = 50257;
    const Vec x = bf16_randn(size_t(N) * C, 5), w = bf16_randn(size_t(V) * C, 6, 0.02);
    std::vector<int32_t> t(N);
    for (int n = 0; n < N; ++n) t[n] = (n * 7919) % V;
    t[3] = -1;
    Buf gx(gpu, x), gw(gpu, w), gdx(gpu, size_t(N) * C), gdw(gpu, size_t(V) * C);
    Vec dx(size_t(N) * C), dw(size_t(V) * C);
    const double want = cpu.lm_head_cross_entropy(dx.data(), dw.data(), x.data(), w.data(), t.data(), N, C, V, 1.0f);
    const double got = gpu.lm_head_cross_entropy(gdx.p, gdw.p, gx.p, gw.p, t.data(), N, C, V, 1.0f);
    compare("lm_head_cross_entropy loss (V = 50257)", Vec{float(got)}, Vec{float(want)}, 1e-4);
    compare("lm_head_cross_entropy dx", gdx.get(), dx, 1e-2);
    compare("lm_head_cross_entropy dweight", gdw.get(), dw, 1e-2);
  }
  for (int D : {64, 128}) {  // attention through the backend (bf16 tensor cores)
    const int B = 2, T = 300, H = 4, KV = 2;
    const size_t rows = size_t(B) * T, width = size_t(H + 2 * KV) * D;
    const Vec qkv = bf16_randn(rows * width, 7 + D), dy = bf16_randn(rows * H * D, 8 + D);
    Buf gq(gpu, qkv), gout(gpu, rows * H * D), glse(gpu, size_t(B) * H * T), gdy(gpu, dy), gdq(gpu, rows * width);
    Vec out(rows * H * D), lse(size_t(B) * H * T), dq(rows * width);
    cpu.attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, KV, D);
    gpu.attention_forward(gout.p, glse.p, gq.p, B, T, H, KV, D);
    compare("attention_forward D=" + std::to_string(D) + " GQA", gout.get(), out, 2e-2);
    compare("attention_forward lse D=" + std::to_string(D), glse.get(), lse, 1e-3);
    cpu.attention_backward(dq.data(), dy.data(), qkv.data(), out.data(), lse.data(), B, T, H, KV, D);
    gpu.attention_backward(gdq.p, gdy.p, gq.p, gout.p, glse.p, B, T, H, KV, D);
    compare("attention_backward D=" + std::to_string(D) + " GQA", gdq.get(), dq, 3e-2);
  }
}

std::vector<double> train(Backend& be, const ModelConfig& cfg, const Vec& init, int steps) {
  Model m(cfg, be);
  std::memcpy(m.params(), init.data(), init.size() * sizeof(float));
  const int B = 4, T = 128;
  Rng rng(5);
  std::vector<int32_t> x, y;
  for (int i = 0; i < B * T; ++i) {  // a learnable pattern: the next token is a function of this one
    x.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
    y.push_back(int32_t((x.back() * 7 + 3) % cfg.vocab_size));
  }
  OptimConfig o;
  AdamW opt(o, m, be);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    m.zero_grads();
    losses.push_back(m.forward_backward(x.data(), y.data(), B, T));
    opt.step(1e-3, opt.grad_norm());
  }
  return losses;
}

void training(Backend& gpu, Backend& cpu) {
  for (const std::string family : {"gpt2", "llama"}) {
    ModelConfig cfg = model_preset(family == "gpt2" ? "gpt2-tiny" : "llama-tiny");
    cfg.n_layer = 2;
    cfg.d_model = 256;
    cfg.n_head = 4;  // D = 64
    cfg.n_kv_head = family == "gpt2" ? 4 : 2;
    cfg.d_ff = family == "gpt2" ? 1024 : 704;
    cfg.vocab_size = 512;
    cfg.max_seq_len = 128;
    Vec init;
    {
      Model m(cfg, cpu);
      m.init_weights(1);  // (zero weights have zero gradients: nothing would learn)
      init.assign(m.params(), m.params() + m.num_params());
    }
    const int steps = 20;
    const std::vector<double> want = train(cpu, cfg, init, steps), got = train(gpu, cfg, init, steps);
    double worst = 0;
    for (int s = 0; s < steps; ++s) worst = std::max(worst, std::fabs(got[s] - want[s]) / want[s]);
    // Both must learn the pattern: the CPU run too, so the comparison is not between two flat lines.
    const bool learned = got.back() < got.front() - 0.5 && want.back() < want.front() - 0.5;
    const bool ok = worst <= 2e-2 && learned;
    std::printf("%-4s %-52s loss %.4f -> %.4f (cpu fp32 %.4f -> %.4f), max rel. diff %.3g (tolerance 2e-02)\n",
                ok ? "ok" : "FAIL", ("bf16 training, " + family + ", 20 steps").c_str(), got.front(), got.back(),
                want.front(), want.back(), worst);
    failures += !ok;
  }
}

}  // namespace

int backend_checks(Backend& gpu, Backend& cpu) {
  std::printf("backend: %s\n", gpu.describe().c_str());
  ops(gpu, cpu);
  training(gpu, cpu);
  return failures;
}

}  // namespace nuri::gpu_test

// The whole model: finite-difference gradients for each family (every parameter tensor checked
// along a random direction), recompute == no recompute, gradient accumulation, parameter counts
// of the presets against published figures, AdamW's decay mask, and the model file.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/rng.hpp"
#include "nuri/train.hpp"

namespace {

nuri::ModelConfig tiny(const std::string& family) {
  nuri::ModelConfig c = nuri::model_preset(family == "gpt2" ? "gpt2-tiny" : "llama-tiny");
  c.n_layer = 2;
  c.d_model = 24;
  c.n_head = 4;
  c.n_kv_head = family == "gpt2" ? 4 : 2;
  c.d_ff = family == "gpt2" ? 40 : 28;
  c.vocab_size = 37;
  c.max_seq_len = 16;
  c.tied_embeddings = family == "gpt2";
  return c;
}

// Weights of a larger scale than GPT-2's init (so every gradient is well above fp32 noise) and
// norms/biases away from 1/0.
void randomize(nuri::Model& m, uint64_t seed) {
  nuri::Rng rng(seed);
  for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] = float(0.15 * rng.normal());
  for (const auto& t : m.tensors()) {
    if (t.shape.size() == 1 && t.name.find("ln") != std::string::npos && t.name.ends_with("weight")) {
      for (size_t k = 0; k < t.numel; ++k) m.params()[t.offset + k] += 1.0f;
    }
  }
}

struct Batch {
  int B = 2, T = 11;
  std::vector<int32_t> x, y;
  explicit Batch(int V, uint64_t seed, int B_ = 2, int T_ = 11) : B(B_), T(T_) {
    nuri::Rng rng(seed);
    for (int i = 0; i < B * T; ++i) {
      x.push_back(int32_t(rng.below(V)));
      y.push_back(int32_t(rng.below(V)));
    }
    y[3] = -1;  // an ignored target
  }
};

// For each parameter tensor: the directional derivative of the loss along a random unit
// direction inside that tensor, by central differences (double-step Richardson extrapolation
// to cancel the O(eps^2) term), against the analytic gradient's projection.
void check_model_gradients(nuri::ModelConfig cfg) {
  auto be = nuri::make_backend("cpu", 2);
  nuri::Model m(cfg, *be);
  randomize(m, 11);
  Batch batch(cfg.vocab_size, 5);
  m.zero_grads();
  const float loss = m.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T);
  CHECK(loss == Approx(m.forward_loss(batch.x.data(), batch.y.data(), batch.B, batch.T)).epsilon(1e-6));
  std::vector<float> grads(m.grads(), m.grads() + m.num_params());
  std::vector<float> base(m.params(), m.params() + m.num_params());
  nuri::Rng rng(99);
  for (const auto& t : m.tensors()) {
    std::vector<double> dir(t.numel);
    double norm = 0;
    for (auto& v : dir) {
      v = rng.normal();
      norm += v * v;
    }
    for (auto& v : dir) v /= std::sqrt(norm);
    auto loss_at = [&](double eps) {
      for (size_t k = 0; k < t.numel; ++k) m.params()[t.offset + k] = float(base[t.offset + k] + eps * dir[k]);
      const double l = m.forward_loss(batch.x.data(), batch.y.data(), batch.B, batch.T);
      std::memcpy(m.params() + t.offset, base.data() + t.offset, t.numel * sizeof(float));
      return l;
    };
    const double h = 1e-2;
    const double d1 = (loss_at(h) - loss_at(-h)) / (2 * h);
    const double d2 = (loss_at(2 * h) - loss_at(-2 * h)) / (4 * h);
    const double numeric = (4 * d1 - d2) / 3;
    double analytic = 0;
    for (size_t k = 0; k < t.numel; ++k) analytic += double(grads[t.offset + k]) * dir[k];
    INFO(cfg.family << " " << t.name << ": analytic " << analytic << ", numeric " << numeric);
    if (std::getenv("NURI_TEST_VERBOSE")) std::printf("%-32s analytic %+.6e numeric %+.6e\n", t.name.c_str(), analytic, numeric);
    CHECK(std::abs(analytic - numeric) <= 2e-3 * std::abs(numeric) + 2e-5);
    CHECK(std::abs(analytic) > 1e-4);  // the check means something only for a real gradient
  }
}

// Gives b a's weights (randomized from seed) and runs one zeroed micro-batch through both;
// returns their losses.
std::pair<float, float> same_step(nuri::Model& a, nuri::Model& b, const Batch& batch, uint64_t seed) {
  randomize(a, seed);
  std::memcpy(b.params(), a.params(), a.num_params() * sizeof(float));
  a.zero_grads();
  b.zero_grads();
  return {a.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T),
          b.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T)};
}

}  // namespace

TEST_CASE("gradients of a whole gpt2 model match finite differences") {
  check_model_gradients(tiny("gpt2"));
}

TEST_CASE("gradients of a whole llama model (GQA, RoPE, untied) match finite differences") {
  check_model_gradients(tiny("llama"));
}

TEST_CASE("recompute gives the same loss and gradients") {
  for (std::string family : {"gpt2", "llama"}) {
    nuri::ModelConfig cfg = tiny(family);
    auto be = nuri::make_backend("cpu", 2);
    nuri::Model a(cfg, *be);
    cfg.recompute = true;
    nuri::Model b(cfg, *be);
    const auto [la, lb] = same_step(a, b, Batch(cfg.vocab_size, 8), 3);
    CHECK(la == lb);
    size_t differ = 0;
    for (size_t i = 0; i < a.num_params(); ++i) differ += a.grads()[i] != b.grads()[i];
    CHECK(differ == 0);
  }
}

TEST_CASE("bf16 activations: loss and gradients within bf16 rounding, recompute identical, half the memory") {
  // The large activations are rounded to bf16 as each op writes them, so the loss and each
  // gradient move by about bf16's relative precision.
  for (std::string family : {"gpt2", "llama"}) {
    nuri::ModelConfig cfg = tiny(family);
    cfg.n_layer = 8;
    auto be = nuri::make_backend("cpu", 2);
    nuri::Model a(cfg, *be);  // "auto" on the CPU backend: fp32
    cfg.activation_dtype = "bf16";
    nuri::Model b(cfg, *be);
    CHECK_FALSE(a.bf16_activations());
    CHECK(b.bf16_activations());
    const Batch batch(cfg.vocab_size, 9);
    const auto [la, lb] = same_step(a, b, batch, 4);
    INFO(family << ": loss fp32 " << la << ", bf16 " << lb);
    CHECK(std::abs(la - lb) <= 2e-3 * std::abs(la));
    CHECK(la != lb);  // the forward did read rounded activations
    size_t differ = 0;
    for (const auto& t : a.tensors()) {
      double scale = 0, worst = 0;
      for (size_t k = t.offset; k < t.offset + t.numel; ++k) {
        scale = std::max(scale, double(std::abs(a.grads()[k])));
        worst = std::max(worst, double(std::abs(a.grads()[k] - b.grads()[k])));
        differ += a.grads()[k] != b.grads()[k];
      }
      INFO(family << " " << t.name << ": largest difference " << worst << " of " << scale);
      CHECK(worst <= 2e-2 * scale);
    }
    CHECK(differ > 0);
    // Evaluation after training reuses the arena and gives the same loss.
    CHECK(b.forward_loss(batch.x.data(), batch.y.data(), batch.B, batch.T) == lb);
    // Recompute runs the same bf16 forward again: the same loss and gradients, bit for bit.
    nuri::ModelConfig rc = cfg;
    rc.recompute = true;
    nuri::Model r(rc, *be);
    const auto [lb2, lr] = same_step(b, r, batch, 4);
    CHECK(lb2 == lb);
    CHECK(lr == lb);
    CHECK(std::memcmp(r.grads(), b.grads(), b.num_params() * sizeof(float)) == 0);
    // The blocks' large tensors at half the bytes: with 8 layers the whole arena (residuals, head
    // and gradient scratch included) shrinks by about a third.
    INFO("activation bytes: fp32 " << a.activation_bytes() << ", bf16 " << b.activation_bytes());
    CHECK(b.activation_bytes() < 0.7 * a.activation_bytes());
    // The estimate follows the same accounting.
    nuri::ModelConfig fp = cfg;
    fp.activation_dtype = "fp32";
    CHECK(nuri::estimate_memory(cfg, batch.B, batch.T).activations_bytes <
          0.7 * nuri::estimate_memory(fp, batch.B, batch.T).activations_bytes);
    // ... to the byte: bf16 saves in the arena what it saves in the estimate, up to the arena's
    // 64-byte alignment of each of the six large tensors per layer.
    const double est_saving = nuri::estimate_memory(fp, batch.B, batch.T).activations_bytes -
                              nuri::estimate_memory(cfg, batch.B, batch.T).activations_bytes;
    const double arena_saving = double(a.activation_bytes()) - double(b.activation_bytes());
    INFO("saving: estimate " << est_saving << ", arena " << arena_saving);
    CHECK(std::abs(arena_saving - est_saving) <= 64.0 * 6 * cfg.n_layer);
    // The CPU backend converts no weights: no copy is counted.
    const nuri::BackendMemoryFacts facts = nuri::memory_facts(*be, cfg);
    CHECK_FALSE(facts.bf16_matmul_inputs);
    CHECK(facts.frozen_weight_bytes == 0);
    CHECK(nuri::estimate_memory(cfg, batch.B, batch.T, facts).weight_copy_bytes == 0.0);
  }
  nuri::ModelConfig bad = tiny("gpt2");
  bad.activation_dtype = "fp16";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("model.activation_dtype"));
}

TEST_CASE("two half micro-batches accumulate to the gradient of the whole batch") {
  nuri::ModelConfig cfg = tiny("llama");
  auto be = nuri::make_backend("cpu", 2);
  nuri::Model m(cfg, *be);
  randomize(m, 4);
  Batch whole(cfg.vocab_size, 21, 4, 8);
  whole.y[3] = 0;  // all targets valid: the mean of halves equals the mean of the whole
  m.zero_grads();
  const float l_whole = m.forward_backward(whole.x.data(), whole.y.data(), 4, 8);
  std::vector<float> g_whole(m.grads(), m.grads() + m.num_params());
  m.zero_grads();
  const size_t half = 2 * 8;
  const float l1 = m.forward_backward(whole.x.data(), whole.y.data(), 2, 8, 0.5f);
  const float l2 = m.forward_backward(whole.x.data() + half, whole.y.data() + half, 2, 8, 0.5f);
  CHECK((l1 + l2) / 2 == Approx(l_whole).epsilon(1e-5));
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < m.num_params(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(m.grads()[i] - g_whole[i])));
    max_abs = std::max(max_abs, double(std::abs(g_whole[i])));
  }
  CHECK(max_diff <= 1e-5 * max_abs);
}

TEST_CASE("preset parameter counts match the published models") {
  // GPT-2 (with the position table), Llama 3.2 1B (tied), Llama 3 8B and 70B.
  CHECK(nuri::model_preset("gpt2-124m").num_params() == 124439808);
  CHECK(nuri::model_preset("gpt2-350m").num_params() == 354823168);
  CHECK(nuri::model_preset("gpt2-774m").num_params() == 774030080);
  CHECK(nuri::model_preset("gpt2-1.5b").num_params() == 1557611200);
  CHECK(nuri::model_preset("llama-1b").num_params() == 1235814400);
  CHECK(nuri::model_preset("llama-8b").num_params() == 8030261248);
  CHECK(nuri::model_preset("llama-70b").num_params() == 70553706496);
  // The allocated layout agrees with the formula.
  auto be = nuri::make_backend("cpu", 1);
  for (std::string name : {"gpt2-tiny", "llama-tiny"}) {
    nuri::Model m(nuri::model_preset(name), *be);
    CHECK(int64_t(m.num_params()) == m.config().num_params());
  }
}

TEST_CASE("AdamW decays matrices but not norms or biases") {
  nuri::ModelConfig cfg = tiny("gpt2");
  auto be = nuri::make_backend("cpu", 1);
  nuri::Model m(cfg, *be);
  randomize(m, 5);
  std::vector<float> before(m.params(), m.params() + m.num_params());
  m.zero_grads();  // zero gradients: only weight decay moves parameters
  nuri::OptimConfig o;
  o.weight_decay = 0.5;
  nuri::AdamW opt(o, m, *be);
  opt.step(0.1, 0.0);
  for (const auto& t : m.tensors()) {
    const float b = before[t.offset], a = m.params()[t.offset];
    INFO(t.name);
    if (t.weight_decay) {
      CHECK(a == Approx(b * (1 - 0.1 * 0.5)).epsilon(1e-6));
    } else {
      CHECK(a == b);
    }
  }
}

TEST_CASE("model file: round trip, truncation and corruption are errors naming the file") {
  nuri::ModelConfig cfg = tiny("llama");
  auto be = nuri::make_backend("cpu", 1);
  nuri::Model m(cfg, *be);
  randomize(m, 6);
  const std::string path = (std::filesystem::temp_directory_path() / "nuri_test_model.bin").string();
  nuri::save_model(path, m);
  nuri::ModelConfig read = nuri::read_model_config(path);
  CHECK(read.family == "llama");
  CHECK(read.n_kv_head == 2);
  nuri::Model m2(read, *be);
  nuri::load_model_weights(path, m2);
  CHECK(std::memcmp(m.params(), m2.params(), m.num_params() * sizeof(float)) == 0);

  // Flip one byte in the weights: the checksum catches it.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-100, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-100, std::ios::end);
    c ^= 0x10;
    f.write(&c, 1);
  }
  CHECK_THROWS_WITH(nuri::load_model_weights(path, m2), Catch::Contains("checksum") && Catch::Contains(path));
  // Truncate it.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  CHECK_THROWS_WITH(nuri::load_model_weights(path, m2), Catch::Contains("truncated") && Catch::Contains(path));
  std::ofstream(path) << "hello";
  CHECK_THROWS_WITH(nuri::read_model_config(path), Catch::Contains("not a nuri model file"));
}

TEST_CASE("model input errors: token outside the vocabulary, sequence too long") {
  nuri::ModelConfig cfg = tiny("gpt2");
  auto be = nuri::make_backend("cpu", 1);
  nuri::Model m(cfg, *be);
  std::vector<int32_t> x(8, 1), y(8, 1);
  x[5] = cfg.vocab_size;
  CHECK_THROWS_WITH(m.forward_loss(x.data(), y.data(), 1, 8), Catch::Contains("outside the vocabulary"));
  std::vector<int32_t> long_x(40, 1), long_y(40, 1);
  CHECK_THROWS_WITH(m.forward_loss(long_x.data(), long_y.data(), 1, 40), Catch::Contains("max_seq_len"));
}

TEST_CASE("gradient clipping scales the update by clip / global norm") {
  nuri::ModelConfig cfg = tiny("llama");
  auto be = nuri::make_backend("cpu", 1);
  nuri::Model a(cfg, *be), b(cfg, *be);
  randomize(a, 9);
  std::memcpy(b.params(), a.params(), a.num_params() * sizeof(float));
  Batch batch(cfg.vocab_size, 12);
  a.zero_grads();
  a.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T);
  std::memcpy(b.grads(), a.grads(), a.num_params() * sizeof(float));
  // Adam's update is nearly scale-free; a large eps makes it depend on the gradient's scale, so
  // a missing or wrong clip factor shows.
  nuri::OptimConfig clip, manual;
  clip.grad_clip = 0.05;
  clip.eps = manual.eps = 1e-3;
  manual.grad_clip = 0;
  nuri::AdamW oa(clip, a, *be), ob(manual, b, *be);
  const double norm = oa.grad_norm();
  double sq = 0;
  for (size_t i = 0; i < a.num_params(); ++i) sq += double(a.grads()[i]) * a.grads()[i];
  CHECK(norm == Approx(std::sqrt(sq)).epsilon(1e-6));
  REQUIRE(norm > 0.05);  // so clipping is active
  for (size_t i = 0; i < b.num_params(); ++i) b.grads()[i] = float(b.grads()[i] * (0.05 / norm));
  std::vector<float> start(a.params(), a.params() + a.num_params());
  oa.step(1e-2, oa.grad_norm());
  ob.step(1e-2, ob.grad_norm());
  double max_diff = 0, max_move = 0;
  for (size_t i = 0; i < a.num_params(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(a.params()[i] - b.params()[i])));
    max_move = std::max(max_move, double(std::abs(a.params()[i] - start[i])));
  }
  CHECK(max_diff < 1e-7);
  // The unclipped update differs by far more than that tolerance.
  nuri::Model c(cfg, *be);
  std::memcpy(c.params(), start.data(), c.num_params() * sizeof(float));
  std::memcpy(c.grads(), a.grads(), c.num_params() * sizeof(float));
  nuri::AdamW oc(manual, c, *be);
  oc.step(1e-2, oc.grad_norm());
  double unclipped_diff = 0;
  for (size_t i = 0; i < a.num_params(); ++i)
    unclipped_diff = std::max(unclipped_diff, double(std::abs(a.params()[i] - c.params()[i])));
  CHECK(unclipped_diff > 100 * 1e-7);
}

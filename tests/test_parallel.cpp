// The single-process pieces of data parallelism (src/parallel, no MPI): the model's grad-ready
// hook reports contiguous ranges in backward order whose gradients are already final, AdamW over
// owned ranges (ZeRO-1 shards) equals AdamW over the whole buffer, and a DataParallel engine with
// no communicator is exactly the plain model + AdamW step. The multi-rank equality is
// tests/dp_parity.sh (under mpirun).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "nuri/backend.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/parallel.hpp"
#include "nuri/rng.hpp"

namespace {

nuri::ModelConfig tiny(const std::string& family, bool tied) {
  nuri::ModelConfig c = nuri::model_preset(family == "gpt2" ? "gpt2-tiny" : "llama-tiny");
  c.n_layer = 3;
  c.d_model = 24;
  c.n_head = 4;
  c.n_kv_head = family == "gpt2" ? 4 : 2;
  c.d_ff = 40;
  c.vocab_size = 37;
  c.max_seq_len = 16;
  c.tied_embeddings = tied;
  return c;
}

struct Batch {
  int B = 2, T = 9;
  std::vector<int32_t> x, y;
  Batch(int V, uint64_t seed) {
    nuri::Rng rng(seed);
    for (int i = 0; i < B * T; ++i) {
      x.push_back(int32_t(rng.below(V)));
      y.push_back(int32_t(rng.below(V)));
    }
  }
};

}  // namespace

TEST_CASE("the grad-ready hook reports contiguous ranges in backward order, each already final") {
  auto backend = nuri::make_backend("cpu", 1);
  for (const std::string family : {"gpt2", "llama"}) {
    for (bool tied : {true, false}) {
      for (bool recompute : {false, true}) {
        nuri::ModelConfig cfg = tiny(family, tied);
        cfg.recompute = recompute;
        nuri::Model model(cfg, *backend);
        model.init_weights(7);
        const auto& order = model.grad_ready_order();
        INFO(family << (tied ? " tied" : " untied") << (recompute ? " recompute" : ""));
        REQUIRE(order.size() == size_t(cfg.n_layer) + 2);
        // Descending, contiguous, covering [0, num_params).
        REQUIRE(order.front().offset + order.front().count == model.num_params());
        REQUIRE(order.back().offset == 0);
        for (size_t i = 1; i < order.size(); ++i) CHECK(order[i].offset + order[i].count == order[i - 1].offset);

        // A snapshot of each range when it is reported equals the gradient after backward.
        std::vector<float> snapshot(model.num_params(), -1.0f);
        std::vector<nuri::ParamRange> seen;
        model.set_grad_ready_hook([&](size_t offset, size_t count) {
          seen.push_back({offset, count});
          std::memcpy(snapshot.data() + offset, model.grads() + offset, count * sizeof(float));
        });
        const Batch batch(cfg.vocab_size, 3);
        model.zero_grads();
        model.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T);
        REQUIRE(seen.size() == order.size());
        for (size_t i = 0; i < order.size(); ++i) {
          CHECK(seen[i].offset == order[i].offset);
          CHECK(seen[i].count == order[i].count);
        }
        CHECK(std::memcmp(snapshot.data(), model.grads(), model.num_params() * sizeof(float)) == 0);

        // No valid target: every range is still reported.
        seen.clear();
        std::vector<int32_t> ignored(batch.y.size(), -1);
        model.forward_backward(batch.x.data(), ignored.data(), batch.B, batch.T);
        CHECK(seen.size() == order.size());
        model.set_grad_ready_hook({});
      }
    }
  }
}

TEST_CASE("AdamW over owned ranges (ZeRO-1 shards) updates exactly like AdamW over the whole buffer") {
  auto backend = nuri::make_backend("cpu", 1);
  const nuri::ModelConfig cfg = tiny("gpt2", true);
  nuri::Model full(cfg, *backend), sharded(cfg, *backend);
  full.init_weights(5);
  sharded.init_weights(5);
  nuri::OptimConfig ocfg;
  ocfg.weight_decay = 0.1;
  nuri::AdamW whole(ocfg, full, *backend);
  // Shards that cut through tensors, in descending order like the DP buckets: 3 ranks' blocks of
  // two buckets, all owned by this one optimizer, so together they cover the buffer.
  const size_t n = full.num_params(), split = n / 3 + 5;
  std::vector<nuri::ParamRange> owned;
  for (const nuri::ParamRange bucket : {nuri::ParamRange{split, n - split}, nuri::ParamRange{0, split}})
    for (int r = 0; r < 3; ++r) {
      const nuri::BlockRange b = nuri::block_range(bucket.count, 3, r);
      owned.push_back({bucket.offset + b.offset, b.count});
    }
  nuri::AdamW pieces(ocfg, sharded, *backend, owned);
  CHECK(pieces.moment_floats() == n);
  nuri::Rng rng(9);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < n; ++i) full.grads()[i] = sharded.grads()[i] = float(rng.normal());
    CHECK(pieces.grad_sum_squares() == Approx(whole.grad_sum_squares()).epsilon(1e-12));
    whole.step(1e-2, 2.0);
    pieces.step(1e-2, 2.0);
  }
  // Not bit-identical: the backend's vector body and scalar tail (which the compiler may contract
  // to FMAs) round differently, and the shards move where the tails fall.
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, double(std::abs(full.params()[i] - sharded.params()[i])));
  CHECK(worst < 1e-7);
  CHECK_THROWS_AS(nuri::AdamW(ocfg, sharded, *backend, {{0, 10}, {5, 10}}), nuri::Error);
}

TEST_CASE("DataParallel without a communicator is exactly the plain model and AdamW step") {
  auto backend = nuri::make_backend("cpu", 1);
  const nuri::ModelConfig cfg = tiny("llama", false);
  nuri::Model a(cfg, *backend), b(cfg, *backend);
  a.init_weights(11);
  b.init_weights(11);
  nuri::OptimConfig ocfg;
  nuri::AdamW plain(ocfg, a, *backend);
  nuri::DataParallelOptions opt;
  opt.zero1 = true;  // ignored for a group of one
  opt.bucket_mb = 0;
  nuri::DataParallel dp(b, *backend, ocfg, nullptr, opt);
  CHECK(dp.dp_size() == 1);
  CHECK_FALSE(dp.zero1());
  CHECK(dp.buckets().size() == b.grad_ready_order().size());  // bucket_mb 0: one per layer
  for (int step = 0; step < 3; ++step) {
    const Batch batch(cfg.vocab_size, 100 + step);
    a.zero_grads();
    float la = 0;
    for (int k = 0; k < 2; ++k) la += a.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T, 0.5f);
    plain.step(1e-2, plain.grad_norm());
    dp.zero_grads();
    float lb = 0;
    for (int k = 0; k < 2; ++k) lb += dp.forward_backward(batch.x.data(), batch.y.data(), batch.B, batch.T, 0.5f, k == 1);
    const auto r = dp.reduce(lb / 2);
    CHECK(r.loss == double(la / 2));
    dp.step(1e-2, r.grad_norm);
  }
  CHECK(std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)) == 0);
  CHECK(dp.stats().buckets_started == 0);
  nuri::DataParallelOptions bad;
  bad.bucket_mb = -1;
  CHECK_THROWS_AS(nuri::DataParallel(b, *backend, ocfg, nullptr, bad), nuri::Error);
}

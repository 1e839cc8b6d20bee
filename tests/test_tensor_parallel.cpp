// Tensor parallelism under mpirun (ctest runs it at 1, 2 and 4 ranks): the conjugate primitives
// on their own, then ColumnParallelLinear, RowParallelLinear and the Megatron MLP pair
// column -> (GELU | identity) -> row against the unsplit layers computed on every rank from the
// same seed; then the tensor-parallel Model (gpt2 and llama, with and without sequence
// parallelism) against the one-process Model on every rank: parameters, logits, loss, gradients. Every TP size that divides the world is tried (at 4 ranks: TP 1, 2 and 4, the TP
// groups of 2 inside a 2 x 2 grid). Awkward sizes: uneven blocks (13 and 10 over 4 ranks) and
// empty shards (3 features over 4 ranks).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "mpi_test_main.hpp"
#include "nuri/backend.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"
#include "nuri/parallel.hpp"
#include "nuri/rng.hpp"
#include "nuri/tensor_parallel.hpp"

namespace {

constexpr double kTol = 1e-5;

std::shared_ptr<nuri::Communicator> world() {
  nuri::CommOptions o;
  o.timeout_s = 60;
  o.check_args = 1;  // every rank must issue the same collectives: checked on each one
  return nuri::testing::mpi_env()->world(o);
}

std::vector<int> tp_sizes(int world_size) {
  std::vector<int> out;
  for (int tp = 1; tp <= world_size; ++tp)
    if (world_size % tp == 0) out.push_back(tp);
  return out;
}

// The same values on every rank for the same seed: uniform in [-1, 1).
std::vector<float> random(uint64_t seed, size_t n) {
  nuri::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(2 * rng.uniform() - 1);
  return v;
}

// Largest |a - b| / max(1, |b|); a and b of the same size.
double max_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - b[i]) / std::max(1.0, std::abs(double(b[i]))));
  return worst;
}

std::vector<float> column_weight_shard(const std::vector<float>& w, int in, int out, int tp, int r) {
  std::vector<float> s(nuri::block_range(size_t(out), tp, r).count * size_t(in));
  nuri::slice_column_parallel_weight(s.data(), w.data(), in, out, tp, r);
  return s;
}
std::vector<float> column_bias_shard(const std::vector<float>& b, int out, int tp, int r) {
  std::vector<float> s(nuri::block_range(size_t(out), tp, r).count);
  nuri::slice_column_parallel_bias(s.data(), b.data(), out, tp, r);
  return s;
}
std::vector<float> last_dim_shard(const std::vector<float>& x, int rows, int cols, int tp, int r) {
  std::vector<float> s(size_t(rows) * nuri::block_range(size_t(cols), tp, r).count);
  nuri::slice_last_dim(s.data(), x.data(), rows, cols, tp, r);
  return s;
}
std::vector<float> copy_of(const float* p, size_t n) { return std::vector<float>(p, p + n); }

// The unsplit linear layer: Y = X W^T + b and its backward, with the reference backend.
struct FullLinear {
  int in, out;
  std::vector<float> w, b, dw, db;
  FullLinear(int in_, int out_, uint64_t seed)
      : in(in_), out(out_), w(random(seed, size_t(out_) * size_t(in_))), b(random(seed + 1, size_t(out_))),
        dw(w.size()), db(b.size()) {}
  std::vector<float> forward(nuri::Backend& be, const std::vector<float>& x, int N) {
    std::vector<float> y(size_t(N) * size_t(out));
    be.linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out, false);
    return y;
  }
  std::vector<float> backward(nuri::Backend& be, const std::vector<float>& dy,
                              const std::vector<float>& x, int N) {
    std::vector<float> dx(size_t(N) * size_t(in));
    be.linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
    return dx;
  }
};

struct Shape {
  int in, out, N;
};
const std::vector<Shape> kShapes = {{13, 10, 7}, {10, 13, 7}, {5, 3, 4}, {3, 5, 1}, {1, 1, 2}};

}  // namespace

TEST_CASE("copy_to_tp_region: identity forward, all-reduce sum backward", "[tp]") {
  auto w = world();
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    nuri::Communicator& c = grid.tp();
    INFO("tp " << tp << " tp_rank " << c.rank());
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1001)}) {
      std::vector<float> x = random(100 + uint64_t(c.rank()), n);
      const std::vector<float> before = x;
      const float* y = nuri::copy_to_tp_region_forward(c, x.data(), n);
      CHECK(y == x.data());  // the identity, not a copy
      CHECK(x == before);

      std::vector<float> g = random(200 + uint64_t(c.rank()), n), expect(n, 0.0f);
      for (int r = 0; r < c.size(); ++r) {
        const std::vector<float> gr = random(200 + uint64_t(r), n);
        for (size_t i = 0; i < n; ++i) expect[i] += gr[i];
      }
      nuri::copy_to_tp_region_backward(c, g.data(), n);
      CHECK(max_error(g, expect) <= kTol);
    }
  }
}

TEST_CASE("reduce_from_tp_region: all-reduce sum forward, identity backward", "[tp]") {
  auto w = world();
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    nuri::Communicator& c = grid.tp();
    INFO("tp " << tp << " tp_rank " << c.rank());
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1001)}) {
      std::vector<float> x = random(300 + uint64_t(c.rank()), n), expect(n, 0.0f);
      for (int r = 0; r < c.size(); ++r) {
        const std::vector<float> xr = random(300 + uint64_t(r), n);
        for (size_t i = 0; i < n; ++i) expect[i] += xr[i];
      }
      nuri::reduce_from_tp_region_forward(c, x.data(), n);
      CHECK(max_error(x, expect) <= kTol);

      std::vector<float> g = random(400, n);
      const std::vector<float> before = g;
      const float* dg = nuri::reduce_from_tp_region_backward(c, g.data(), n);
      CHECK(dg == g.data());
      CHECK(g == before);
    }
  }
}

TEST_CASE("primitives and shard helpers reject bad arguments", "[tp]") {
  auto w = world();
  nuri::Communicator& c = *w;
  CHECK_THROWS_AS(nuri::copy_to_tp_region_forward(c, nullptr, 3), nuri::Error);
  CHECK_THROWS_AS(nuri::copy_to_tp_region_backward(c, nullptr, 3), nuri::Error);
  CHECK_THROWS_AS(nuri::reduce_from_tp_region_forward(c, nullptr, 3), nuri::Error);
  CHECK_THROWS_AS(nuri::reduce_from_tp_region_backward(c, nullptr, 3), nuri::Error);
  std::vector<float> full(20), shard(20);
  CHECK_THROWS_AS(nuri::slice_column_parallel_weight(shard.data(), full.data(), 4, 5, 2, 2),
                  nuri::Error);
  CHECK_THROWS_AS(nuri::slice_row_parallel_weight(shard.data(), full.data(), 4, 5, 0, 0),
                  nuri::Error);
  CHECK_THROWS_AS(nuri::slice_last_dim(shard.data(), full.data(), 4, 0, 1, 0), nuri::Error);
  auto be = nuri::make_backend("cpu", 1);
  CHECK_THROWS_AS(nuri::ColumnParallelLinear(*be, c, 0, 4), nuri::Error);
  CHECK_THROWS_AS(nuri::RowParallelLinear(*be, c, 4, 0), nuri::Error);
  // Shard helpers: rows of W for column, columns of W for row (W (3,4) = 0..11).
  std::vector<float> wfull(12);
  for (size_t i = 0; i < 12; ++i) wfull[i] = float(i);
  std::vector<float> s(8);
  nuri::slice_column_parallel_weight(s.data(), wfull.data(), 4, 3, 2, 1);  // row 2
  CHECK(std::vector<float>(s.begin(), s.begin() + 4) == std::vector<float>{8, 9, 10, 11});
  nuri::slice_row_parallel_weight(s.data(), wfull.data(), 4, 3, 2, 1);  // columns 2, 3
  CHECK(std::vector<float>(s.begin(), s.begin() + 6) == std::vector<float>{2, 3, 6, 7, 10, 11});
}

TEST_CASE("ColumnParallelLinear equals the unsplit linear", "[tp]") {
  auto be = nuri::make_backend("cpu", 1);
  auto w = world();
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    nuri::Communicator& c = grid.tp();
    const int r = c.rank();
    for (const Shape& s : kShapes) {
      INFO("tp " << tp << " tp_rank " << r << " in " << s.in << " out " << s.out << " N " << s.N);
      FullLinear full(s.in, s.out, 7);
      const std::vector<float> x = random(11, size_t(s.N) * size_t(s.in));
      const std::vector<float> dy = random(12, size_t(s.N) * size_t(s.out));
      const std::vector<float> y = full.forward(*be, x, s.N);
      const std::vector<float> dx = full.backward(*be, dy, x, s.N);

      nuri::ColumnParallelLinear layer(*be, c, s.in, s.out);
      layer.load_full(full.w.data(), full.b.data());
      const size_t out_r = size_t(layer.local_out_features());
      CHECK(layer.out_range().count == nuri::block_range(size_t(s.out), tp, r).count);
      std::vector<float> y_r(size_t(s.N) * out_r), dx_tp(x.size(), 123.0f);
      layer.forward(y_r.data(), x.data(), s.N);
      CHECK(max_error(y_r, last_dim_shard(y, s.N, s.out, tp, r)) <= kTol);

      const std::vector<float> dy_r = last_dim_shard(dy, s.N, s.out, tp, r);
      layer.backward(dx_tp.data(), dy_r.data(), x.data(), s.N);
      CHECK(max_error(dx_tp, dx) <= kTol);
      CHECK(max_error(copy_of(layer.dweight(), out_r * size_t(s.in)),
                      column_weight_shard(full.dw, s.in, s.out, tp, r)) <= kTol);
      CHECK(max_error(copy_of(layer.dbias(), out_r), column_bias_shard(full.db, s.out, tp, r)) <=
            kTol);

      // Gradients accumulate; zero_grads clears them.
      layer.backward(nullptr, dy_r.data(), x.data(), s.N);
      std::vector<float> twice = column_weight_shard(full.dw, s.in, s.out, tp, r);
      for (float& v : twice) v *= 2;
      CHECK(max_error(copy_of(layer.dweight(), out_r * size_t(s.in)), twice) <= kTol);
      layer.zero_grads();
      CHECK(max_error(copy_of(layer.dweight(), out_r * size_t(s.in)),
                      std::vector<float>(out_r * size_t(s.in), 0.0f)) == 0);
    }
  }
}

TEST_CASE("RowParallelLinear equals the unsplit linear", "[tp]") {
  auto be = nuri::make_backend("cpu", 1);
  auto w = world();
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    nuri::Communicator& c = grid.tp();
    const int r = c.rank();
    for (const Shape& s : kShapes) {
      INFO("tp " << tp << " tp_rank " << r << " in " << s.in << " out " << s.out << " N " << s.N);
      FullLinear full(s.in, s.out, 21);
      const std::vector<float> x = random(22, size_t(s.N) * size_t(s.in));
      const std::vector<float> dy = random(23, size_t(s.N) * size_t(s.out));
      const std::vector<float> y = full.forward(*be, x, s.N);
      const std::vector<float> dx = full.backward(*be, dy, x, s.N);

      nuri::RowParallelLinear layer(*be, c, s.in, s.out);
      layer.load_full(full.w.data(), full.b.data());
      const size_t in_r = size_t(layer.local_in_features());
      const std::vector<float> x_r = last_dim_shard(x, s.N, s.in, tp, r);
      std::vector<float> y_tp(y.size(), 123.0f), dx_r(x_r.size(), 123.0f);
      layer.forward(y_tp.data(), x_r.data(), s.N);
      CHECK(max_error(y_tp, y) <= kTol);  // bias added once, not tp times

      layer.backward(dx_r.data(), dy.data(), x_r.data(), s.N);
      CHECK(max_error(dx_r, last_dim_shard(dx, s.N, s.in, tp, r)) <= kTol);
      std::vector<float> dw_ref(size_t(s.out) * in_r);
      nuri::slice_row_parallel_weight(dw_ref.data(), full.dw.data(), s.in, s.out, tp, r);
      CHECK(max_error(copy_of(layer.dweight(), dw_ref.size()), dw_ref) <= kTol);
      CHECK(max_error(copy_of(layer.dbias(), size_t(s.out)), full.db) <= kTol);
    }
  }
}

TEST_CASE("Megatron MLP column -> activation -> row equals the unsplit MLP", "[tp]") {
  auto be = nuri::make_backend("cpu", 1);
  auto w = world();
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    nuri::Communicator& c = grid.tp();
    const int r = c.rank();
    for (bool gelu : {true, false}) {
      for (const Shape& s : {Shape{13, 10, 7}, Shape{6, 3, 5}}) {
        const int C = s.in, H = s.out, OUT = 11, N = s.N;
        INFO("tp " << tp << " tp_rank " << r << " gelu " << gelu << " C " << C << " H " << H);
        FullLinear fc(C, H, 31), proj(H, OUT, 41);
        const std::vector<float> x = random(51, size_t(N) * size_t(C));
        const std::vector<float> dy = random(52, size_t(N) * size_t(OUT));
        // Unsplit reference.
        const std::vector<float> h = fc.forward(*be, x, N);
        std::vector<float> a = h;
        if (gelu) be->gelu_forward(a.data(), h.data(), a.size());
        const std::vector<float> y = proj.forward(*be, a, N);
        const std::vector<float> da = proj.backward(*be, dy, a, N);
        std::vector<float> dh = da;
        if (gelu) be->gelu_backward(dh.data(), h.data(), da.data(), dh.size());
        const std::vector<float> dx = fc.backward(*be, dh, x, N);

        // Tensor-parallel: one all-reduce forward (row), one backward (column).
        nuri::ColumnParallelLinear col(*be, c, C, H);
        nuri::RowParallelLinear row(*be, c, H, OUT);
        col.load_full(fc.w.data(), fc.b.data());
        row.load_full(proj.w.data(), proj.b.data());
        REQUIRE(col.out_range().offset == row.in_range().offset);
        REQUIRE(col.out_range().count == row.in_range().count);
        const size_t h_r = size_t(col.local_out_features());
        const uint64_t issued = c.issued();
        std::vector<float> hs(size_t(N) * h_r), as(hs.size()), ys(y.size());
        col.forward(hs.data(), x.data(), N);
        as = hs;
        if (gelu) be->gelu_forward(as.data(), hs.data(), as.size());
        row.forward(ys.data(), as.data(), N);
        CHECK(max_error(ys, y) <= kTol);

        std::vector<float> das(as.size()), dhs(as.size()), dxs(x.size());
        row.backward(das.data(), dy.data(), as.data(), N);
        dhs = das;
        if (gelu) be->gelu_backward(dhs.data(), hs.data(), das.data(), dhs.size());
        col.backward(dxs.data(), dhs.data(), x.data(), N);
        CHECK(max_error(dxs, dx) <= kTol);
        if (c.size() > 1) CHECK(c.issued() - issued == 2);  // one all-reduce each way

        CHECK(max_error(copy_of(col.dweight(), h_r * size_t(C)),
                        column_weight_shard(fc.dw, C, H, tp, r)) <= kTol);
        CHECK(max_error(copy_of(col.dbias(), h_r), column_bias_shard(fc.db, H, tp, r)) <= kTol);
        std::vector<float> dw2(size_t(OUT) * h_r);
        nuri::slice_row_parallel_weight(dw2.data(), proj.dw.data(), H, OUT, tp, r);
        CHECK(max_error(copy_of(row.dweight(), dw2.size()), dw2) <= kTol);
        CHECK(max_error(copy_of(row.dbias(), size_t(OUT)), proj.db) <= kTol);
      }
    }
  }
}

TEST_CASE("a tensor-parallel Model computes what one process computes", "[tp][model]") {
  auto be = nuri::make_backend("cpu", 1);
  auto w = world();
  struct Variant {
    const char* family;
    int kv, d_ff;
    bool tied, recompute;
    const char* saved = "fp32";  // activation_dtype
  };
  // llama: 2 kv heads, so at tp 4 each is replicated over 2 ranks; d_ff = 26 and vocab 37 give
  // uneven slices; the untied gpt2 has its own vocab-parallel LM head. The last two variants hold
  // their activations in bf16 (the second with recompute): each rank rounds its slices as the
  // whole tensor rounds, up to values the two reduction orders put on either side of a bf16
  // rounding boundary.
  const Variant variants[] = {{"gpt2", 4, 30, true, false},
                              {"gpt2", 4, 30, false, true},
                              {"llama", 2, 26, true, false},
                              {"llama", 2, 26, false, false, "bf16"},
                              {"gpt2", 4, 30, true, true, "bf16"}};
  for (int tp : tp_sizes(w->size())) {
    nuri::ProcessGrid grid(w, tp);
    for (const Variant& v : variants) {
      for (bool sp : {false, true}) {
        nuri::ModelConfig cfg = nuri::model_preset(std::string(v.family) + "-tiny");
        cfg.n_layer = 2;
        cfg.d_model = 32;
        cfg.n_head = 4;
        cfg.n_kv_head = v.kv;
        cfg.d_ff = v.d_ff;
        cfg.vocab_size = 37;
        cfg.max_seq_len = 8;
        cfg.tied_embeddings = v.tied;
        cfg.recompute = v.recompute;
        cfg.activation_dtype = v.saved;
        if (std::string(v.saved) == "bf16") cfg.n_layer = 4;
        INFO("tp " << tp << " rank " << grid.tp_rank() << " " << v.family << " tied " << v.tied << " sp " << sp);
        nuri::Model ref(cfg, *be);
        ref.init_weights(7);
        nuri::Model m(cfg, *be, {nuri::make_tensor_parallel_ops(grid.tp_ptr()), sp});
        m.init_weights(7);
        CHECK(m.tp_size() == tp);
        CHECK(m.bf16_activations() == (std::string(v.saved) == "bf16"));
        const std::vector<float> full = nuri::gather_full_parameters(m);
        REQUIRE(full.size() == ref.num_params());
        CHECK(std::equal(full.begin(), full.end(), ref.params()));  // the same draws, sliced

        const int B = 2, T = 6, N = B * T;  // N divides by 1, 2 and 4 (sequence parallelism)
        std::vector<int32_t> x(N), y(N);
        nuri::Rng rng(3);
        for (int i = 0; i < N; ++i) x[i] = int32_t(rng.below(37)), y[i] = int32_t(rng.below(37));
        y[5] = -1;  // ignored
        std::vector<float> want(size_t(N) * 37), got(want.size());
        ref.forward_logits(want.data(), x.data(), B, T);
        m.forward_logits(got.data(), x.data(), B, T);
        CHECK(max_error(got, want) <= kTol);
        const float loss_ref = ref.forward_loss(x.data(), y.data(), B, T);
        CHECK(std::abs(m.forward_loss(x.data(), y.data(), B, T) - loss_ref) <= kTol * loss_ref);

        // Two accumulated micro-batches (the partial-gradient sums must add, not replace).
        ref.zero_grads();
        m.zero_grads();
        for (int k = 0; k < 2; ++k) {
          const float a = ref.forward_backward(x.data(), y.data(), B, T, 0.5f);
          const float b = m.forward_backward(x.data(), y.data(), B, T, 0.5f);
          CHECK(std::abs(a - b) <= kTol * a);
          std::rotate(x.begin(), x.begin() + 1, x.end());
        }
        const std::vector<float> g = nuri::gather_full(m, m.grads());
        const std::vector<float> g_ref(ref.grads(), ref.grads() + ref.num_params());
        if (std::string(v.saved) == "bf16") {
          // An element rounded the other way moves the gradients by about one bf16 step (2^-8) of
          // their scale; a wrong or stale saved tensor moves them by the order of the scale.
          double scale = 0, worst = 0;
          for (size_t i = 0; i < g.size(); ++i) {
            scale = std::max(scale, std::abs(double(g_ref[i])));
            worst = std::max(worst, std::abs(double(g[i]) - g_ref[i]));
          }
          INFO("bf16 activations: largest gradient difference " << worst << " of " << scale);
          CHECK(worst <= 2e-3 * scale);
        } else {
          CHECK(max_error(g, g_ref) <= kTol);
        }
      }
    }
  }
}

TEST_CASE("a layout that cannot be split is refused with the reason", "[tp][model]") {
  nuri::ModelConfig cfg = nuri::model_preset("llama-tiny");
  cfg.n_head = 6;
  cfg.d_model = 48;
  cfg.n_kv_head = 3;
  try {
    nuri::parameter_layout(cfg, 4, 0);
    FAIL("tp 4 with 6 heads was accepted");
  } catch (const nuri::Error& e) {
    CHECK(e.kind() == nuri::ErrorKind::config);
    CHECK(e.message().find("does not divide model.n_head = 6") != std::string::npos);
    CHECK(e.message().find("1, 2, 3, 6") != std::string::npos);
  }
  try {
    nuri::parameter_layout(cfg, 2, 0);  // 3 kv heads: neither split over 2 nor replicated
    FAIL("tp 2 with 3 kv heads was accepted");
  } catch (const nuri::Error& e) {
    CHECK(e.message().find("model.n_kv_head = 3") != std::string::npos);
  }
  cfg.n_kv_head = 6;
  CHECK(nuri::parameter_layout(cfg, 3, 2).size() == nuri::parameter_layout(cfg).size());
  cfg.n_kv_head = 2;
  CHECK_NOTHROW(nuri::parameter_layout(cfg, 6, 5));  // 2 kv heads, each replicated over 3 ranks
}

// DataParallel's gradient communicator (DataParallelOptions::grad_comm; NCCL in GPU runs): the
// bucket reductions and ZeRO-1's all-gathers go over it, the loss and norm sums stay on the DP
// communicator, and the step is the same as with one communicator for everything.
TEST_CASE("DataParallel with a separate gradient communicator takes the same steps", "[dp]") {
  auto w = world();
  if (w->size() < 2) return;  // one rank: no communication to route
  nuri::ModelConfig cfg = nuri::model_preset("gpt2-tiny");
  cfg.n_layer = 2;
  cfg.d_model = 32;
  cfg.n_head = 2;
  cfg.n_kv_head = 2;
  cfg.d_ff = 48;
  cfg.vocab_size = 40;
  cfg.max_seq_len = 8;
  auto be = nuri::make_backend("cpu", 1);
  const int B = 2, T = 8;
  nuri::Rng rng(11, uint64_t(w->rank()));  // every rank its own batch
  std::vector<int32_t> x, y;
  for (int i = 0; i < B * T; ++i) {
    x.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
    y.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
  }
  for (bool zero1 : {false, true}) {
    std::vector<std::vector<float>> params;
    std::vector<uint64_t> on_grads;
    for (bool separate : {false, true}) {
      auto grads = w->split(0, w->rank(), "grads");
      nuri::Model m(cfg, *be);
      m.init_weights(3);
      nuri::DataParallelOptions o;
      o.zero1 = zero1;
      o.bucket_mb = 0;  // one bucket per layer: several collectives
      if (separate) o.grad_comm = grads;
      nuri::OptimConfig oc;
      nuri::DataParallel dp(m, *be, oc, w, o);
      dp.broadcast_parameters();
      for (int step = 0; step < 2; ++step) {
        dp.zero_grads();
        const float loss = dp.forward_backward(x.data(), y.data(), B, T, 1.0f, true);
        const nuri::DataParallel::Reduced r = dp.reduce(loss);
        dp.step(1e-2, r.grad_norm);
      }
      w->synchronize();
      grads->synchronize();
      params.emplace_back(m.params(), m.params() + m.num_params());
      on_grads.push_back(grads->issued());
    }
    INFO("zero1 = " << zero1);
    CHECK(on_grads[0] == 0);  // not given: the gradient communicator was not used
    CHECK(on_grads[1] > 2);   // given: the broadcast and every bucket of both steps went over it
    CHECK(params[0] == params[1]);
  }
  // A gradient communicator must have the DP group's ranks in its order.
  auto reversed = w->split(0, w->size() - 1 - w->rank(), "reversed");
  nuri::Model m(cfg, *be);
  nuri::DataParallelOptions o;
  o.grad_comm = reversed;
  nuri::OptimConfig oc;
  CHECK_THROWS_AS(nuri::DataParallel(m, *be, oc, w, o), nuri::Error);
}

int main(int argc, char** argv) { return nuri::testing::run_catch_under_mpi(argc, argv); }

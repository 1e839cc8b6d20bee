// The comm module under mpirun (ctest runs it at 1, 2, 3 and 4 ranks): every collective against
// a serial reference computed locally, async handles, argument checks, the timeout path that
// names a missing rank, and the ProcessGrid layouts.
//
// Every rank runs every test case in the same order; a check that fails on one rank only still
// lets the others continue, and a rank that diverges is caught by the communicators' timeout
// (60 s here) instead of hanging ctest.
#define CATCH_CONFIG_RUNNER
#include <algorithm>
#include <catch2/catch.hpp>
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "mpi_test_main.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"

namespace {


nuri::CommOptions test_options() {
  nuri::CommOptions o;
  o.timeout_s = 60;
  o.check_args = 0;
  return o;
}

std::shared_ptr<nuri::Communicator> world(nuri::CommOptions o = test_options()) {
  return nuri::testing::mpi_env()->world(o);
}

// Rank r's input element i: an integer (exact in float), different on every rank.
template <class T>
T value(int rank, size_t i) {
  return static_cast<T>(static_cast<int64_t>((rank + 1) * 3 + (i % 17)) -
                        static_cast<int64_t>((i * 7 + rank) % 11));
}

template <class T>
T reduce_ref(nuri::ReduceOp op, int size, size_t i) {
  T acc = value<T>(0, i);
  for (int r = 1; r < size; ++r) {
    const T v = value<T>(r, i);
    if (op == nuri::ReduceOp::sum || op == nuri::ReduceOp::avg) acc += v;
    if (op == nuri::ReduceOp::max) acc = std::max(acc, v);
    if (op == nuri::ReduceOp::min) acc = std::min(acc, v);
  }
  if (op == nuri::ReduceOp::avg) acc /= static_cast<T>(size);
  return acc;
}

const std::vector<size_t> kCounts = {0, 1, 2, 3, 7, 10, 1001, 65537};

template <class T>
void check_all_reduce(nuri::Communicator& c, nuri::ReduceOp op) {
  for (size_t n : kCounts) {
    std::vector<T> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = value<T>(c.rank(), i);
    c.all_reduce(x.data(), n, op);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += x[i] != reduce_ref<T>(op, c.size(), i);
    INFO("count " << n << " op " << nuri::to_string(op));
    CHECK(bad == 0);
  }
}

}  // namespace

TEST_CASE("block_range partitions without padding", "[comm]") {
  const std::vector<std::pair<size_t, size_t>> expect = {{0, 3}, {3, 3}, {6, 2}, {8, 2}};
  for (int i = 0; i < 4; ++i) {
    const nuri::BlockRange b = nuri::block_range(10, 4, i);
    CHECK(b.offset == expect[static_cast<size_t>(i)].first);
    CHECK(b.count == expect[static_cast<size_t>(i)].second);
  }
  CHECK(nuri::block_range(2, 4, 3).count == 0);
  CHECK(nuri::block_range(2, 4, 3).offset == 2);
  for (size_t total : {0, 1, 5, 1001}) {
    for (int parts = 1; parts <= 5; ++parts) {
      size_t next = 0;
      for (int i = 0; i < parts; ++i) {
        const nuri::BlockRange b = nuri::block_range(total, parts, i);
        CHECK(b.offset == next);
        next += b.count;
      }
      CHECK(next == total);
    }
  }
  CHECK_THROWS_AS(nuri::block_range(10, 0, 0), nuri::Error);
  CHECK_THROWS_AS(nuri::block_range(10, 4, 4), nuri::Error);
  CHECK(nuri::grid_factorizations(12) ==
        std::vector<std::pair<int, int>>{{1, 12}, {2, 6}, {3, 4}, {4, 3}, {6, 2}, {12, 1}});
}

TEST_CASE("all_reduce: sum, avg, max, min on float, double, int32, int64", "[comm]") {
  auto c = world();
  for (auto op : {nuri::ReduceOp::sum, nuri::ReduceOp::avg, nuri::ReduceOp::max,
                  nuri::ReduceOp::min}) {
    check_all_reduce<float>(*c, op);
    check_all_reduce<double>(*c, op);
  }
  for (auto op : {nuri::ReduceOp::sum, nuri::ReduceOp::max, nuri::ReduceOp::min}) {
    check_all_reduce<int32_t>(*c, op);
    check_all_reduce<int64_t>(*c, op);
  }
  CHECK(c->issued() == c->completed());
}

TEST_CASE("reduce_scatter: uneven blocks, in place and not", "[comm]") {
  auto c = world();
  const int P = c->size(), me = c->rank();
  for (size_t total : {size_t(1), size_t(3), size_t(10), size_t(1001), size_t(P) * 5}) {
    for (auto op : {nuri::ReduceOp::sum, nuri::ReduceOp::avg}) {
      std::vector<float> send(total);
      for (size_t i = 0; i < total; ++i) send[i] = value<float>(me, i);
      const nuri::BlockRange b = nuri::block_range(total, P, me);
      std::vector<float> recv(b.count, -1.f);
      c->reduce_scatter(send.data(), recv.data(), total, op);
      size_t bad = 0;
      for (size_t i = 0; i < b.count; ++i) bad += recv[i] != reduce_ref<float>(op, P, b.offset + i);
      INFO("total " << total << " op " << nuri::to_string(op));
      CHECK(bad == 0);
      // In place: the result lands in this rank's own slot of the full buffer.
      c->reduce_scatter(send.data(), send.data() + b.offset, total, op);
      bad = 0;
      for (size_t i = 0; i < b.count; ++i)
        bad += send[b.offset + i] != reduce_ref<float>(op, P, b.offset + i);
      CHECK(bad == 0);
    }
  }
  // int64 and double too.
  std::vector<int64_t> s64(7 * static_cast<size_t>(P) + 1);
  for (size_t i = 0; i < s64.size(); ++i) s64[i] = value<int64_t>(me, i);
  const nuri::BlockRange b = nuri::block_range(s64.size(), P, me);
  std::vector<int64_t> r64(b.count);
  c->reduce_scatter(s64.data(), r64.data(), s64.size());
  for (size_t i = 0; i < b.count; ++i)
    CHECK(r64[i] == reduce_ref<int64_t>(nuri::ReduceOp::sum, P, b.offset + i));
}

TEST_CASE("all_gather: uneven blocks, in place and not", "[comm]") {
  auto c = world();
  const int P = c->size(), me = c->rank();
  for (size_t total : {size_t(1), size_t(3), size_t(10), size_t(1001), size_t(P) * 5}) {
    const nuri::BlockRange b = nuri::block_range(total, P, me);
    std::vector<double> mine(b.count);
    for (size_t i = 0; i < b.count; ++i) mine[i] = value<double>(me, b.offset + i);
    std::vector<double> all(total, -1);
    c->all_gather(mine.data(), all.data(), total);
    auto expected = [&](size_t i) {
      int owner = 0;
      while (!(i >= nuri::block_range(total, P, owner).offset &&
               i < nuri::block_range(total, P, owner).offset +
                       nuri::block_range(total, P, owner).count))
        ++owner;
      return value<double>(owner, i);
    };
    size_t bad = 0;
    for (size_t i = 0; i < total; ++i) bad += all[i] != expected(i);
    INFO("total " << total);
    CHECK(bad == 0);
    std::vector<double> inplace(total, -1);
    std::copy(mine.begin(), mine.end(), inplace.begin() + static_cast<long>(b.offset));
    c->all_gather(inplace.data() + b.offset, inplace.data(), total);
    CHECK(inplace == all);
  }
}

TEST_CASE("broadcast from every root; barrier", "[comm]") {
  auto c = world();
  for (int root = 0; root < c->size(); ++root) {
    for (size_t n : {size_t(1), size_t(33), size_t(100003)}) {
      std::vector<float> x(n);
      for (size_t i = 0; i < n; ++i) x[i] = value<float>(c->rank(), i);
      c->broadcast(x.data(), n, root);
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) bad += x[i] != value<float>(root, i);
      CHECK(bad == 0);
    }
  }
  const uint64_t before = c->issued();
  c->barrier();
  c->barrier_async().wait();
  CHECK(c->issued() == before + 2);
}

TEST_CASE("async handles complete in order and leave the caller free", "[comm]") {
  auto c = world();
  const int P = c->size(), me = c->rank();
  constexpr int kOps = 6;
  constexpr size_t n = 100001;
  std::vector<std::vector<float>> bufs(kOps, std::vector<float>(n));
  std::vector<nuri::CommHandle> handles;
  for (int k = 0; k < kOps; ++k) {
    for (size_t i = 0; i < n; ++i) bufs[static_cast<size_t>(k)][i] = value<float>(me, i + k);
    handles.push_back(c->all_reduce_async(bufs[static_cast<size_t>(k)].data(), n));
  }
  // A blocking call queues behind them.
  int64_t token = me;
  c->all_reduce(&token, 1);
  CHECK(token == int64_t(P) * (P - 1) / 2);
  for (int k = 0; k < kOps; ++k) {
    CHECK(handles[static_cast<size_t>(k)].test());  // done: the blocking call came after them
    CHECK(handles[static_cast<size_t>(k)].sequence() == handles[0].sequence() + k);
  }
  for (int k = kOps - 1; k >= 0; --k) {  // waiting out of order is fine
    handles[static_cast<size_t>(k)].wait();
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i)
      bad += bufs[static_cast<size_t>(k)][i] != reduce_ref<float>(nuri::ReduceOp::sum, P, i + k);
    CHECK(bad == 0);
  }
  nuri::CommHandle empty;
  CHECK(empty.test());
  empty.wait();

  // The caller is free while the collective waits for a late rank: the last rank joins 300 ms
  // late; the others' async call returns at once and test() says "not yet".
  if (P > 1) {
    std::vector<float> x(1000, 1.f);
    if (me == P - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto t0 = std::chrono::steady_clock::now();
    nuri::CommHandle h = c->all_reduce_async(x.data(), x.size());
    const double issue_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (me != P - 1) {
      CHECK(issue_ms < 50);
      CHECK_FALSE(h.test());
    }
    h.wait();
    const double total_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (me != P - 1) CHECK(total_ms > 200);
    CHECK(x[999] == static_cast<float>(P));
  }
  c->synchronize();
  CHECK(c->completed() == c->issued());
}

TEST_CASE("bad arguments are refused with the group, rank and op named", "[comm]") {
  auto c = world();
  const std::string group = "group 'world' (size " + std::to_string(c->size());
  try {
    c->all_reduce(static_cast<float*>(nullptr), 3);
    FAIL("no error for a null buffer");
  } catch (const nuri::Error& e) {
    CHECK(e.kind() == nuri::ErrorKind::config);
    CHECK_THAT(e.what(), Catch::Contains("all_reduce (float x 3, sum)") &&
                             Catch::Contains(group) && Catch::Contains("null"));
    if (c->size() > 1) CHECK_THAT(e.what(), Catch::Contains("[rank " + std::to_string(c->rank())));
  }
  int64_t i = 1;
  CHECK_THROWS_WITH(c->all_reduce(&i, 1, nuri::ReduceOp::avg), Catch::Contains("avg"));
  float x = 0;
  CHECK_THROWS_WITH(c->broadcast(&x, 1, c->size()), Catch::Contains("root"));
  std::vector<float> buf(8 * static_cast<size_t>(c->size()));
  if (c->size() > 1) {
    // recv overlapping send anywhere but this rank's own slot.
    const size_t wrong = nuri::block_range(buf.size(), c->size(), c->rank()).offset + 1;
    CHECK_THROWS_WITH(c->reduce_scatter(buf.data(), buf.data() + wrong, buf.size()),
                      Catch::Contains("in-place"));
  }
  // Nothing was issued by the refused calls: the group still works.
  float one = 1;
  c->all_reduce(&one, 1);
  CHECK(one == static_cast<float>(c->size()));
}

TEST_CASE("check_args names the ranks that disagree on a count", "[comm]") {
  nuri::CommOptions o = test_options();
  o.check_args = 1;
  auto c = world(o);
  std::vector<float> x(20, 1.f);
  c->all_reduce(x.data(), x.size());  // agreement: passes
  CHECK(x[0] == static_cast<float>(c->size()));
  if (c->size() > 1) {
    const size_t n = c->rank() == 1 ? 11 : 10;
    try {
      c->all_reduce(x.data(), n);
      FAIL("no error for a count that differs across ranks");
    } catch (const nuri::Error& e) {
      CHECK(e.kind() == nuri::ErrorKind::shape);
      CHECK_THAT(e.what(), Catch::Contains("count") && Catch::Contains("11 on rank 1") &&
                               Catch::Contains("group 'world'"));
    }
    // Still aligned afterwards.
    c->barrier();
  }
}

TEST_CASE("a timed-out collective names the rank that did not arrive", "[comm][timeout]") {
  auto probe = world();
  const int P = probe->size(), me = probe->rank();
  if (P < 2) return;
  std::string message;
  std::mutex m;
  nuri::CommOptions o = test_options();
  o.timeout_s = 1.0;
  o.grace_s = 10.0;  // the non-root ranks stay quiet; rank 0 judges
  o.on_timeout = [&](const std::string& text) {
    std::lock_guard<std::mutex> lock(m);
    message = text;
  };
  auto c = world(o);
  const int late = P - 1;
  c->barrier();  // #1 on time
  if (me == late) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  c->barrier();  // #2: the late rank arrives after the timeout
  c->synchronize();
  std::lock_guard<std::mutex> lock(m);
  if (me == 0) {
    INFO(message);
    CHECK_THAT(message, Catch::Contains("barrier #2 on group 'world' (size " + std::to_string(P)) &&
                            Catch::Contains("did not arrive (world ranks): " +
                                            std::to_string(late) + ";") &&
                            Catch::Contains("has started 1 collectives") &&
                            Catch::Contains("not in a collective"));
  } else {
    CHECK(message.empty());
  }
}

TEST_CASE("ProcessGrid layouts: TP innermost, groups and errors", "[comm][grid]") {
  auto w = world();
  const int P = w->size(), me = w->rank();
  for (const auto& [tp, dp] : nuri::grid_factorizations(P)) {
    nuri::ProcessGrid grid(w, tp, dp);
    INFO("tp " << tp << " dp " << dp);
    CHECK(grid.tp_size() == tp);
    CHECK(grid.dp_size() == dp);
    CHECK(grid.tp_rank() == me % tp);
    CHECK(grid.dp_rank() == me / tp);
    CHECK(grid.world_rank() == grid.tp_rank() + tp * grid.dp_rank());
    // The members of each group, by world rank.
    std::vector<int64_t> tp_members(static_cast<size_t>(tp)), dp_members(static_cast<size_t>(dp));
    int64_t mine = me;
    grid.tp().all_gather(&mine, tp_members.data(), tp_members.size());
    grid.dp().all_gather(&mine, dp_members.data(), dp_members.size());
    for (int t = 0; t < tp; ++t)
      CHECK(tp_members[static_cast<size_t>(t)] == t + tp * grid.dp_rank());
    for (int d = 0; d < dp; ++d)
      CHECK(dp_members[static_cast<size_t>(d)] == grid.tp_rank() + tp * d);
    CHECK(grid.tp().name() == "tp");
    CHECK(grid.dp().name() == "dp");
    // Node facts follow from the hosts (one machine here; two simulated hosts in the multinode
    // test): nodes numbered by their lowest rank, local rank = position among the node's ranks.
    REQUIRE(grid.placements().size() == static_cast<size_t>(P));
    std::vector<std::string> hosts_in_order;
    std::vector<int> expected_node(P), expected_local(P);
    for (int r = 0; r < P; ++r) {
      const std::string& h = grid.placements()[static_cast<size_t>(r)].host;
      auto it = std::find(hosts_in_order.begin(), hosts_in_order.end(), h);
      expected_node[r] = int(it - hosts_in_order.begin());
      if (it == hosts_in_order.end()) hosts_in_order.push_back(h);
      expected_local[r] = 0;
      for (int q = 0; q < r; ++q) expected_local[r] += grid.placements()[static_cast<size_t>(q)].host == h;
    }
    int local_size = 0;
    for (int r = 0; r < P; ++r) local_size += expected_node[r] == expected_node[me];
    CHECK(grid.num_nodes() == int(hosts_in_order.size()));
    CHECK(grid.node() == expected_node[me]);
    CHECK(grid.local_size() == local_size);
    CHECK(grid.local_rank() == expected_local[me]);
    CHECK(grid.threads_per_rank() >= 1);
    for (int r = 0; r < P; ++r) {
      const nuri::RankPlacement& p = grid.placements()[static_cast<size_t>(r)];
      CHECK(p.world_rank == r);
      CHECK(p.tp_rank == r % tp);
      CHECK(p.dp_rank == r / tp);
      CHECK(p.node == expected_node[r]);
      CHECK(p.local_rank == expected_local[r]);
      CHECK(!p.host.empty());
    }
    const std::string d = grid.describe();
    CHECK_THAT(d, Catch::Contains("tp " + std::to_string(tp) + " x dp " + std::to_string(dp)));
    grid.print();
  }
  nuri::ProcessGrid derived(w, 1);  // dp 0: world / tp
  CHECK(derived.dp_size() == P);
  try {
    nuri::ProcessGrid bad(w, 3, 1);
    CHECK(P == 3);
  } catch (const nuri::Error& e) {
    CHECK(P != 3);
    CHECK(e.kind() == nuri::ErrorKind::config);
    CHECK_THAT(e.what(), Catch::Contains("does not equal the world size " + std::to_string(P)) &&
                             Catch::Contains("valid layouts are (tp 1, dp " + std::to_string(P)));
  }
  if (P == 4) {
    CHECK_THROWS_WITH(nuri::ProcessGrid(w, 3), Catch::Contains("tp 3 does not divide") &&
                                                   Catch::Contains("(tp 2, dp 2)"));
  }
  auto none = w->split(-1, 0, "nobody");
  CHECK(none == nullptr);
}

int main(int argc, char** argv) { return nuri::testing::run_catch_under_mpi(argc, argv); }

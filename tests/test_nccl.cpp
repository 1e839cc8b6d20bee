// The NCCL communicator under mpirun (ctest: 2 ranks). Everywhere: nccl_available() says what
// CMake found (NURI_EXPECT_NCCL), and without a GPU make_nccl_communicator refuses with a clear
// Error(backend) on every rank (no hang, no crash). On a machine with a GPU per rank the same
// collectives as the MPI communicator's tests run on device buffers (even and uneven
// reduce_scatter and all_gather, all_reduce sum/avg/max, broadcast, barrier, async handles,
// split) and must equal the MPI communicator's results; without one that part prints one line
// saying it did not run.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <numeric>
#include <vector>

#include "mpi_test_main.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "test_util.hpp"

#if NURI_EXPECT_NCCL
#include <cuda_runtime.h>
#endif

namespace {

std::shared_ptr<nuri::Communicator> world() {
  nuri::CommOptions o;
  o.timeout_s = 60;
  return nuri::testing::mpi_env()->world(o);
}

#if NURI_EXPECT_NCCL
int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Device copies of host vectors.
struct DeviceBuffer {
  float* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<float>& host) : n(host.size()) {
    REQUIRE(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p); }
  std::vector<float> get() const {
    std::vector<float> h(n);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};
#endif

}  // namespace

TEST_CASE("nccl_available matches the build", "[nccl]") {
  CHECK(nuri::nccl_available() == bool(NURI_EXPECT_NCCL));
}

TEST_CASE("without a GPU, make_nccl_communicator refuses clearly on every rank", "[nccl]") {
  auto w = world();
#if NURI_EXPECT_NCCL
  if (gpu_count() > 0) {
    SUCCEED("a GPU is present: the refusal path does not apply");
    return;
  }
#endif
  const std::string rank = "rank " + std::to_string(w->rank());
#if NURI_EXPECT_NCCL
  nuri::testing::expect_error([&] { nuri::make_nccl_communicator(w, 0); }, nuri::ErrorKind::backend,
                              {rank, "no CUDA device", "NCCL needs a GPU per rank"});
#else
  nuri::testing::expect_error([&] { nuri::make_nccl_communicator(w, 0); }, nuri::ErrorKind::backend,
                              {rank, "built without NCCL"});
#endif
  w->barrier();  // every rank got here: nobody hangs in an NCCL init
}

TEST_CASE("NCCL collectives equal the MPI communicator's on device buffers", "[nccl][gpu]") {
  auto w = world();
#if NURI_EXPECT_NCCL
  int local = gpu_count() > 0 ? 1 : 0, all = 0;
  all = local;
  w->all_reduce(&all, 1, nuri::ReduceOp::min);
  if (all == 0) {
    if (w->rank() == 0)
      std::printf("test_nccl: NOT RUN on this machine (no GPU): the NCCL collectives on device buffers; "
                  "run ctest -R test_nccl on a GPU host\n");
    return;
  }
  int devices = 0;
  cudaGetDeviceCount(&devices);
  auto nccl = nuri::make_nccl_communicator(w, w->rank() % devices);
  const int p = w->size(), r = w->rank();
  for (size_t total : {size_t(1000), size_t(1003)}) {  // even and uneven blocks over 2 ranks
    INFO("total " << total);
    std::vector<float> x(total);
    for (size_t i = 0; i < total; ++i) x[i] = float((i * 7 + size_t(r) * 13) % 17) - 8.0f;
    for (nuri::ReduceOp op : {nuri::ReduceOp::sum, nuri::ReduceOp::avg, nuri::ReduceOp::max}) {
      std::vector<float> want = x;
      w->all_reduce(want.data(), total, op);
      DeviceBuffer d(x);
      nuri::CommHandle h = nccl->all_reduce_async(d.p, total, op);
      h.wait();
      CHECK(d.get() == want);
    }
    const nuri::BlockRange mine = nuri::block_range(total, p, r);
    std::vector<float> want_rs(mine.count);
    w->reduce_scatter(x.data(), want_rs.data(), total);
    DeviceBuffer send(x), recv{std::vector<float>(mine.count)};
    nccl->reduce_scatter(send.p, recv.p, total);
    CHECK(recv.get() == want_rs);
    std::vector<float> want_ag(total);
    w->all_gather(want_rs.data(), want_ag.data(), total);
    DeviceBuffer gathered{std::vector<float>(total)};
    nccl->all_gather(recv.p, gathered.p, total);
    CHECK(gathered.get() == want_ag);
    DeviceBuffer b(x);
    nccl->broadcast(b.p, total, p - 1);
    std::vector<float> want_b = x;
    w->broadcast(want_b.data(), total, p - 1);
    CHECK(b.get() == want_b);
  }
  nccl->barrier();
  CHECK(nccl->issued() == nccl->completed());
  auto half = nccl->split(r % 2, r, "half");
  REQUIRE(half);
  CHECK(half->size() == (p + 1 - r % 2) / 2);
#else
  if (w->rank() == 0)
    std::printf("test_nccl: NOT RUN: nuri was built without NCCL, so there are no NCCL collectives to test\n");
#endif
}

int main(int argc, char** argv) { return nuri::testing::run_catch_under_mpi(argc, argv); }

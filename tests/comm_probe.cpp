// A loop of all-reduces in which one rank misbehaves, for tests/comm_failure.sh.
//
//   comm_probe MODE RANK [TIMEOUT_S]
//     MODE ok     every rank behaves
//          throw  RANK throws a nuri::Error in the middle of the loop (main calls abort_job)
//          kill   RANK sends itself SIGKILL in the middle of the loop
//          skip   RANK skips one all-reduce and then keeps going (it leaves the loop one
//                 collective early; the others wait in their last all-reduce)
//          stall  RANK stops calling collectives (stuck in "compute") for a long time
//          count  RANK passes one element less to one all-reduce (run with NURI_COMM_CHECK=1)
//   TIMEOUT_S: the communicators' timeout (default 3 s).
// Prints "probe: done" on rank 0 when the loop completes.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "nuri/comm.hpp"
#include "nuri/error.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: comm_probe ok|throw|kill|skip|stall|count RANK [TIMEOUT_S]\n");
    return 2;
  }
  const std::string mode = argv[1];
  const int bad_rank = std::atoi(argv[2]);
  nuri::CommOptions options;
  options.timeout_s = argc > 3 ? std::atof(argv[3]) : 3.0;
  nuri::MpiEnvironment env(&argc, &argv, options);
  try {
    auto world = env.world();
    const int me = world->rank();
    constexpr int kIters = 20, kBad = 10;
    std::vector<float> grads(4096);
    for (int it = 0; it < kIters; ++it) {
      if (me == bad_rank && it == kBad) {
        // For comm_failure.sh: the time from here to the job's end.
        std::fprintf(stderr, "probe: rank %d injects '%s' at %.3f\n", me, mode.c_str(),
                     std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count());
        std::fflush(stderr);
        if (mode == "throw")
          NURI_THROW(numeric, "probe", "loss is NaN at step " << it << " (injected failure)");
        if (mode == "kill") raise(SIGKILL);
        if (mode == "skip") continue;
        if (mode == "stall") std::this_thread::sleep_for(std::chrono::seconds(120));
      }
      for (auto& g : grads) g = static_cast<float>(me + it);
      const bool short_count = mode == "count" && me == bad_rank && it == kBad;
      world->all_reduce(grads.data(), grads.size() - (short_count ? 1 : 0), nuri::ReduceOp::avg);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (me == 0) std::printf("probe: done\n");
  } catch (const std::exception& e) {
    nuri::abort_job(e);
  }
  return 0;
}

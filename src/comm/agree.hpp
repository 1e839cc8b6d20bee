#pragma once
// Runs a piece of work on every rank of a group, then agrees on the outcome: when any rank
// failed, every rank throws (its own error, or Error(io) from `op` naming the ranks that failed),
// so that no rank goes on to a collective the failed ones will never reach. The trainer's set-up
// phases, `nuri tokenize`'s phases and the checkpoint save all go through it.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "nuri/comm.hpp"
#include "nuri/error.hpp"

namespace nuri {

// group null or of one rank: just runs fn (its error propagates). Collective otherwise.
template <class Fn>
void run_agreed(Communicator* group, const char* op, const std::string& what, Fn&& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  if (!group || group->size() == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  std::vector<int32_t> ok(size_t(group->size()), 0);
  ok[size_t(group->rank())] = error ? 0 : 1;
  group->all_gather(ok.data() + group->rank(), ok.data(), ok.size());
  if (error) std::rethrow_exception(error);
  std::string failed;
  for (size_t r = 0; r < ok.size(); ++r)
    if (!ok[r]) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  NURI_CHECK(failed.empty(), io, op,
             "stopping: another rank failed while " << what << " (rank " << failed << " of " << group->describe()
                                                    << "; its message says why)");
}

}  // namespace nuri

#pragma once
// The shared state behind a CommHandle: the collective, its sequence number and its completion
// (done, or an error). Every communicator implementation (MPI, NCCL) finishes its operations
// through finish(); CommHandle::wait()/test() read it (mpi_communicator.cpp).
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>

#include "nuri/comm.hpp"

namespace nuri::detail {

struct CommOpState {
  Collective collective;
  uint64_t sequence = 0;
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::exception_ptr error;

  void finish(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex);
    error = std::move(e);
    done = true;
    done_cv.notify_all();
  }
};

}  // namespace nuri::detail

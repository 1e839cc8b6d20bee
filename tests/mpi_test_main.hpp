#pragma once
// main() for Catch2 tests that run under mpirun: MPI starts before Catch and ends after it, and
// the job fails if any rank failed. A test file defines
//   int main(int argc, char** argv) { return nuri::testing::run_catch_under_mpi(argc, argv); }
// and reaches the environment (for world communicators) through mpi_env().
#include <catch2/catch.hpp>
#include <mpi.h>

#include "nuri/comm.hpp"

namespace nuri::testing {

// The process's MPI environment while the tests run; null outside run_catch_under_mpi.
inline MpiEnvironment*& mpi_env() {
  static MpiEnvironment* env = nullptr;
  return env;
}

inline int run_catch_under_mpi(int argc, char** argv) {
  CommOptions options;
  options.timeout_s = 60;
  MpiEnvironment env(&argc, &argv, options);
  mpi_env() = &env;
  int failed = 0;
  {
    Catch::Session session;
    const int rc = session.applyCommandLine(argc, argv);
    if (rc != 0) return rc;
    failed = session.run();
  }
  // Every rank's verdict: the job fails if any rank failed.
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  mpi_env() = nullptr;
  return any ? 1 : 0;
}

}  // namespace nuri::testing

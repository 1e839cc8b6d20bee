// test_gpu_harness (ctest `gpu_harness`, built everywhere, nvcc or not): test_gpu's backend checks
// (gpu_backend_checks.cpp) with a second CPU backend in the GPU's place. The comparisons are
// trivial then; what it checks is the harness itself: that it runs, and that its training runs
// learn, so that on a GPU the cuda backend's loss curve is compared with a real one.
#include <cstdio>
#include <exception>

#include "nuri/backend.hpp"

namespace nuri::gpu_test {
int backend_checks(Backend& gpu, Backend& cpu);  // gpu_backend_checks.cpp: returns its failures
}  // namespace nuri::gpu_test

int main() {
  int failures = 0;
  try {
    auto cpu = nuri::make_backend("cpu", 1), stand_in = nuri::make_backend("cpu", 1);
    failures = nuri::gpu_test::backend_checks(*stand_in, *cpu);
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d check(s) of the harness failed\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}

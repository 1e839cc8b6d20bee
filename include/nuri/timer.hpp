#pragma once
// \file
// Wall-clock timing.
#include <chrono>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Measures elapsed wall-clock time on a monotonic clock (std::chrono::steady_clock).
class Timer {
 public:
  // Starts timing now.
  Timer() : start_(std::chrono::steady_clock::now()) {}
  // Restarts timing from now.
  void reset() { start_ = std::chrono::steady_clock::now(); }
  // Seconds elapsed since construction or the last reset().
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace nuri
NURI_API_END

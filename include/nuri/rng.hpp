#pragma once
// \file
// Seeded, reproducible random numbers. Counter-based (SplitMix64 over seed and counter), so a
// stream can be positioned exactly: the same (seed, counter) always gives the same numbers on
// every platform and thread count. Not thread-safe: one Rng per thread or per purpose.
#include <cstdint>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// SplitMix64 finalizer: a good 64-bit mix of x.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A counter-based random stream: draw i of seed s is a pure function of (s, i).
class Rng {
 public:
  // The stream of seed, positioned at draw number counter.
  explicit Rng(uint64_t seed = 0, uint64_t counter = 0) : seed_(mix64(seed)), counter_(counter) {}
  // 64 uniformly distributed bits; advances the counter by one.
  uint64_t next_u64() { return mix64(seed_ ^ mix64(counter_++)); }
  // Uniform in [0, 1).
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n); n > 0.
  uint64_t below(uint64_t n) { return next_u64() % n; }
  // Standard normal (Box-Muller; uses two draws).
  double normal();
  uint64_t counter() const { return counter_; }        // the position: index of the next draw
  void set_counter(uint64_t c) { counter_ = c; }       // moves to draw c (e.g. to resume a run)

 private:
  uint64_t seed_;
  uint64_t counter_;
};

}  // namespace nuri
NURI_API_END

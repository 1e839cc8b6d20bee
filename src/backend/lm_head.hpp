#pragma once
// What every backend's fused LM head (Backend::lm_head_cross_entropy) and the model's
// vocabulary-parallel head share: the chunk of rows whose logits exist at once, and the check of
// the targets against the vocabulary.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

// Rows per chunk for N rows over a vocabulary (or vocabulary slice) of V ids:
// max(16, min(N, kLmHeadChunkFloats / V)).
inline int lm_head_chunk_rows(int N, size_t V) {
  return int(std::max<size_t>(16, std::min<size_t>(size_t(N), kLmHeadChunkFloats / V)));
}

// Throws Error(data) naming the first target (N of them, < 0 = ignored) that is not below V.
inline void check_lm_head_targets(const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; ++n) {
    NURI_CHECK(targets[n] < V, data, "lm_head_cross_entropy",
               "target " << targets[n] << " at row " << n << " is outside the vocabulary [0, " << V
                         << "); was the data tokenized with a larger vocabulary than the model's vocab_size?");
  }
}

}  // namespace nuri

#pragma once
// The two phases of train_bpe (nuri/tokenizer.hpp), apart so that tests can check each against an
// independent reference (tests/bpe_train_ref.py learns merges from the piece counts dumped here).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nuri/text_source.hpp"
#include "nuri/tokenizer.hpp"

namespace nuri::bpe {

// What the counting phase saw.
struct PieceCountStats {
  uint64_t bytes_read = 0;         // file bytes read (both splits)
  uint64_t train_documents = 0;    // documents counted
  uint64_t train_bytes = 0;        // their bytes (before normalization)
  uint64_t val_documents = 0;      // held-out documents, skipped
  uint64_t dropped_pieces = 0;     // distinct pieces dropped because the table was full
  uint64_t dropped_threshold = 0;  // the highest count among them
  double seconds = 0;
};

// Distinct pre-tokenized pieces (raw bytes) of the training documents of `paths` with their
// counts, sorted by bytes. Normalizes and splits exactly as BpeTokenizer::encode does; uses
// options.threads threads and holds at most options.max_pieces pieces (see BpeTrainOptions). The
// counts do not depend on the thread count unless pieces had to be dropped (stats->dropped_pieces).
std::vector<std::pair<std::string, uint64_t>> count_pieces(const std::vector<std::string>& paths,
                                                           const TextSourceOptions& sources,
                                                           const BpeTrainOptions& options,
                                                           PieceCountStats* stats = nullptr);

// Learns merges from piece counts: the most frequent adjacent pair first, ties broken by the
// smaller (left bytes, right bytes). Returns the model (byte tokens, learned tokens, specials).
BpeModel learn_bpe(const std::vector<std::pair<std::string, uint64_t>>& pieces,
                   const BpeTrainOptions& options);

}  // namespace nuri::bpe

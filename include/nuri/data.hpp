#pragma once
// Data: a tokenizer interface, a tokenized text dataset and a deterministic, resumable loader.
//
// Until the BPE tokenizer and token shards land, the tokenizer is byte-level: ids 0..255 are the
// bytes of UTF-8 text and id 256 is end-of-text, placed between documents. The Tokenizer and
// TokenDataset types are the seams the BPE tokenizer and memory-mapped shards slot into.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nuri {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  virtual int eot_id() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Decodes ids to bytes; the result may be incomplete UTF-8 (see sanitize_utf8 to print it).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
};

// "bytes" -> the byte-level tokenizer (vocab 257). Throws Error(config) for an unknown name.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// Replaces every invalid or truncated UTF-8 sequence by U+FFFD, so sampled text prints cleanly.
std::string sanitize_utf8(const std::string& bytes);
// Byte offset of the first invalid UTF-8 sequence, or std::string::npos if all is valid.
size_t first_invalid_utf8(const std::string& bytes);

// Training and validation token streams read from text files. Documents are separated by blank
// lines; each document is followed by end-of-text. From each file the last `val_fraction` of its
// documents go to validation (at least one when the file has two or more).
struct TokenDataset {
  std::vector<int32_t> train;
  std::vector<int32_t> val;
  int vocab_size = 0;
  std::vector<std::string> files;
};
// Throws Error(io) naming a missing or unreadable file or a directory, Error(data) naming the
// file, byte offset and line of the first invalid UTF-8 (e.g. legacy CP949/EUC-KR text).
TokenDataset load_text_dataset(const std::vector<std::string>& files, const Tokenizer& tokenizer,
                               double val_fraction);

// Frequencies of each id in `tokens` (length vocab_size), add-one smoothed, for the unigram loss.
// unigram_loss: cross-entropy (nats/token) of `eval` under the unigram model of `fit`.
double unigram_loss(const std::vector<int32_t>& fit, const std::vector<int32_t>& eval,
                    int vocab_size);

// Deterministic, resumable batches of random windows. Batch k (0-based, counted across the run)
// draws its B windows from a counter-based RNG keyed by (seed, k, rank), so the loader's whole
// state is one integer: `position()` / `set_position()` give exact resume. Ranks of a
// data-parallel group (rank, world) draw disjoint sample indices.
class BatchLoader {
 public:
  BatchLoader(const std::vector<int32_t>& tokens, int B, int T, uint64_t seed, int rank = 0,
              int world = 1);
  // Fills inputs and targets (B,T): targets are inputs shifted by one.
  void next(int32_t* inputs, int32_t* targets);
  uint64_t position() const { return position_; }
  void set_position(uint64_t p) { position_ = p; }

 private:
  const std::vector<int32_t>& tokens_;
  int B_, T_;
  uint64_t seed_;
  int rank_, world_;
  uint64_t position_ = 0;
};

// Evaluation windows: consecutive, non-overlapping (B,T) batches from the start of `tokens`,
// wrapping around when there are fewer than `batches` of them.
void eval_batch(const std::vector<int32_t>& tokens, int B, int T, int index, int32_t* inputs,
                int32_t* targets);

}  // namespace nuri

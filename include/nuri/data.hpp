#pragma once
// \file
// Data: a tokenizer interface, a tokenized text dataset and a deterministic, resumable loader.
//
// The byte-level tokenizer has ids 0..255 for the bytes of UTF-8 text and id 256 for
// end-of-text, placed after every document; BPE tokenizers (tokenizer.hpp) implement the same
// interface. Tokens reach training either from text files tokenized in memory
// (load_text_dataset, served by BatchLoader) or from memory-mapped token shards (shards.hpp,
// served by DataLoader); both are TokenViews, and DataLoader serves either kind.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Text to token ids and back. Made by make_tokenizer (or BpeTokenizer in tokenizer.hpp).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;  // for logs and manifests; "bytes" for the byte-level one
  virtual int vocab_size() const = 0;    // every id is in [0, vocab_size())
  virtual int eot_id() const = 0;        // the end-of-text id placed after every document
  // A fingerprint of everything that decides the ids (xxh64); token shards record it so that
  // data tokenized by one tokenizer is never read as if made by another.
  virtual uint64_t hash() const = 0;
  // The ids of `text` (UTF-8), without an end-of-text id: callers append eot_id() themselves.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Decodes ids to bytes; the result may be incomplete UTF-8 (see sanitize_utf8 to print it).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
};

// "bytes" -> the byte-level tokenizer (vocab 257); any other name is a path that
// BpeTokenizer::load reads (tokenizer.json, *.tiktoken, or a GPT-2 directory). Throws
// Error(config) for a name that is neither, Error(io)/Error(data) from reading the file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// Replaces every invalid or truncated UTF-8 sequence by U+FFFD, so sampled text prints cleanly.
std::string sanitize_utf8(const std::string& bytes);
// Byte offset of the first invalid UTF-8 sequence, or std::string::npos if all is valid.
size_t first_invalid_utf8(const std::string& bytes);

// Training and validation token streams read from text files. Documents are separated by blank
// lines; each document is followed by end-of-text. From each file the last `val_fraction` of its
// documents go to validation (at least one when the file has two or more).
struct TokenDataset {
  std::vector<int32_t> train;      // the training ids of every file, in file order
  std::vector<int32_t> val;        // the validation ids of every file, in file order
  int vocab_size = 0;              // the tokenizer's vocab_size()
  std::vector<std::string> files;  // the files read
};
// Throws Error(io) naming a missing or unreadable file or a directory, Error(data) naming the
// file, byte offset and line of the first invalid UTF-8 (e.g. legacy CP949/EUC-KR text).
TokenDataset load_text_dataset(const std::vector<std::string>& files, const Tokenizer& tokenizer,
                               double val_fraction);

// Cross-entropy (nats/token) of `eval` under the unigram model of `fit`: the frequency of each
// id in `fit`, add-one smoothed over vocab_size ids. A baseline for the model's loss; 0 when
// `eval` is empty. Every id must be in [0, vocab_size).
double unigram_loss(const std::vector<int32_t>& fit, const std::vector<int32_t>& eval,
                    int vocab_size);

// Deterministic, resumable batches of random windows over one in-memory token vector (the
// trainer's loader for data.train_files; shard datasets use DataLoader below). Batch k (0-based,
// counted across the run) draws its B windows from a counter-based RNG keyed by (seed, k, rank),
// so the loader's whole state is one integer: `position()` / `set_position()` give exact resume.
// Ranks of a data-parallel group (rank, world) draw disjoint sample indices.
class BatchLoader {
 public:
  // Keeps a reference to `tokens`, which must outlive the loader. Throws Error(data) when
  // tokens hold fewer than T+1 ids, Error(internal) unless 0 <= rank < world.
  BatchLoader(const std::vector<int32_t>& tokens, int B, int T, uint64_t seed, int rank = 0,
              int world = 1);
  // Fills inputs and targets (B,T): targets are inputs shifted by one.
  void next(int32_t* inputs, int32_t* targets);
  uint64_t position() const { return position_; }  // batches served so far (the next batch's k)
  void set_position(uint64_t p) { position_ = p; }  // resume: the next batch is batch p

 private:
  const std::vector<int32_t>& tokens_;
  int B_, T_;
  uint64_t seed_;
  int rank_, world_;
  uint64_t position_ = 0;
};

// Evaluation batch `index`: consecutive, non-overlapping (B,T) batches from the start of `tokens`;
// index is taken modulo the number of whole batches (at least one; a short text wraps around).
// Throws Error(data) when tokens hold fewer than T+1 ids.
void eval_batch(const std::vector<int32_t>& tokens, int B, int T, int index, int32_t* inputs,
                int32_t* targets);

// Token storage: a contiguous run of ids, 2 (uint16) or 4 (int32/uint32) bytes each, in memory or
// memory-mapped. Cheap to copy; `owner` keeps the memory alive (a shard's mapping, a vector).
struct TokenView {
  const void* data = nullptr;  // the first id: uint16 or int32 values, as token_bytes says
  uint64_t size = 0;   // tokens
  int token_bytes = 4;  // 2 or 4
  std::string source;  // where the tokens come from, for messages (a shard path, "data.train_files")
  std::shared_ptr<const void> owner;  // keeps `data` alive; empty when it outlives the view anyway

  int32_t operator[](uint64_t i) const {  // id i; i < size, unchecked
    return token_bytes == 2 ? int32_t(static_cast<const uint16_t*>(data)[i])
                            : static_cast<const int32_t*>(data)[i];
  }
  // out[0..n) = ids [start, start + n); the range must lie inside the view.
  void copy(uint64_t start, uint64_t n, int32_t* out) const;
  // A view that owns `tokens` (moved into shared storage).
  static TokenView of(std::vector<int32_t> tokens, std::string source);
  // A view that shares `tokens` (non-null), keeping it alive.
  static TokenView of(std::shared_ptr<const std::vector<int32_t>> tokens, std::string source);
};

// Views read as one stream, in order (e.g. every validation shard of a run).
class TokenStream {
 public:
  TokenStream() = default;
  // The stream of `views`, in order; the views keep their memory alive.
  explicit TokenStream(std::vector<TokenView> views);
  uint64_t size() const { return total_; }  // tokens in all views together
  // out[0..n) = ids [pos, pos + n) of the stream, crossing views as needed; in range.
  void copy(uint64_t pos, uint64_t n, int32_t* out) const;
  const std::vector<TokenView>& views() const { return views_; }  // the views, in stream order

 private:
  std::vector<TokenView> views_;
  std::vector<uint64_t> starts_;  // stream position of each view
  uint64_t total_ = 0;
};

// eval_batch over a stream: the same consecutive, wrapping (B,T) batches.
void eval_batch(const TokenStream& tokens, int B, int T, int index, int32_t* inputs, int32_t* targets);

// unigram_loss over streams, reading at most `max_tokens` of each (from the start); ids outside
// [0, vocab_size) are not counted.
double unigram_loss(const TokenStream& fit, const TokenStream& eval, int vocab_size,
                    uint64_t max_tokens = uint64_t(1) << 28);

// One weighted dataset of a DataLoader: its shards (or one in-memory view).
struct DataSource {
  std::string name;               // for messages and logs (a shard directory)
  std::vector<TokenView> shards;  // windows never cross a shard boundary
  double weight = 1.0;            // relative share of samples; > 0
};

// Where a DataLoader stands: enough to reproduce the exact next batch (for checkpoints).
struct LoaderState {
  uint64_t batches = 0;                // batches this loader has served
  uint64_t samples = 0;                // global samples drawn (all ranks together)
  std::vector<uint64_t> consumed;      // windows drawn from each source (all ranks together)
  // One line: "nuri-loader 1 batches=K samples=S consumed=a,b,c".
  std::string serialize() const;
  // Throws Error(data) quoting the text when it is not what serialize() writes.
  static LoaderState deserialize(const std::string& text);
  bool operator==(const LoaderState&) const = default;  // equal in every field
};

// Deterministic, resumable, rank-disjoint batches of windows from weighted sources.
//
// Windows: each shard of T+1 tokens at a time, non-overlapping (window i = tokens
// [i(T+1), (i+1)(T+1)) ; a tail shorter than T+1 is unused); a source's windows are numbered
// across its shards. Order: global sample s (counted over all ranks) picks its source by a
// seeded hash of s against the normalized weights; the source's counter c then gives window
// P_e(c mod n) of epoch e = c / n, P_e a seeded Feistel permutation of [0, n) (cycle-walking; no
// stored order), so each epoch visits every window of a source exactly once. Ranks: a global
// batch is world*B samples and rank r serves samples [rB, (r+1)B) of it; every rank advances all
// counters identically, so ranks are disjoint and rank r of w serves exactly the rows of the
// 1-rank loader's (w*B)-sample batches. Because the state counts samples, not batches, a resumed
// run may change B or world and still continues the same global sample sequence.
// Not thread-safe; the sources' memory is shared (kept alive by the views).
class DataLoader {
 public:
  // Throws Error(data) naming a source whose shards hold no window of T+1 tokens,
  // Error(config) for a weight that is not positive, Error(internal) for a bad rank/world.
  // `vocab_size` > 0: every id served is checked against it (Error(data) naming the shard).
  DataLoader(std::vector<DataSource> sources, int B, int T, uint64_t seed, int rank = 0, int world = 1,
             int vocab_size = 0);
  // Fills inputs and targets (B,T): targets are inputs shifted by one.
  void next(int32_t* inputs, int32_t* targets);
  LoaderState state() const { return state_; }  // a copy of where the loader stands
  // Throws Error(data) when the state has a different number of sources.
  void set_state(const LoaderState& state);

  size_t num_sources() const { return sources_.size(); }  // the sources given, in order
  const DataSource& source(size_t i) const { return sources_[i].source; }  // i < num_sources()
  uint64_t windows(size_t i) const { return sources_[i].windows; }   // per epoch
  // Source i's share of samples: its weight over the sum of weights.
  double probability(size_t i) const { return sources_[i].probability; }

 private:
  struct Source {
    DataSource source;
    std::vector<uint64_t> first_window;  // per shard, prefix sums of windows
    uint64_t windows = 0;
    double probability = 0, cumulative = 0;
  };
  size_t pick_source(uint64_t sample) const;
  void read_window(size_t src, uint64_t counter, int32_t* inputs, int32_t* targets) const;

  std::vector<Source> sources_;
  int B_, T_;
  uint64_t seed_;
  int rank_, world_, vocab_size_;
  LoaderState state_;
};

}  // namespace nuri
NURI_API_END

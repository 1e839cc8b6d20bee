#pragma once
// \file
// Token shards: text tokenized once (`nuri tokenize`), stored as flat binary files and
// memory-mapped by the loader. docs/data-format.md is the byte-level specification.
//
//   // Write: documents in, shards + manifest.json out (what `nuri tokenize` does on each rank).
//   nuri::TokenizeOptions opt;  opt.output_dir = "shards/ko";  opt.sources.val_fraction = 0.01;
//   std::vector<nuri::TextFile> files = nuri::list_text_files({"corpus/"}, opt.sources);
//   nuri::TokenizeResult part = nuri::tokenize_to_shards(files, *tok, opt);
//   nuri::write_manifest(opt.output_dir, nuri::make_manifest(*tok, opt, files, {part}));
//
//   // Read: the manifest, each shard mapped and checked against the run's tokenizer.
//   nuri::ShardCheck check;  check.tokenizer = tok.get();  check.max_vocab = cfg.model.vocab_size;
//   nuri::ShardDataset ds = nuri::open_shard_dataset("shards/ko", check);
//   nuri::DataLoader loader({{"ko", ds.train_views(), 1.0}}, B, T, seed);   // data.hpp
//
// A shard file is a 64-byte little-endian header (magic "NURITOK\0", version, dtype, vocab size,
// token and document counts, tokenizer hash, xxh64 of the token bytes, xxh64 of the header)
// followed by the tokens as uint16 (vocab <= 65536) or uint32; each document is followed by the
// tokenizer's end-of-text id. A directory of shards is described by manifest.json: the
// tokenizer, the sources, and per split (train, val) the shards in stream order.
//
// Errors: every failure is a nuri::Error naming the file: Error(io) for a missing, unreadable
// or truncated file, Error(data) for a file that is not a shard, has another format version,
// a corrupt header or content, or was made by another tokenizer / for a larger vocabulary.
// Threading: a TokenShard is immutable once open; any number of threads may read it. Writers
// and loaders are single-threaded objects (one per thread).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nuri/data.hpp"
#include "nuri/text_source.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// The shard and manifest format version this nuri writes and reads; other versions are refused.
inline constexpr uint32_t kShardFormatVersion = 1;
// Size of a shard file's header in bytes; the tokens start at this offset.
inline constexpr uint64_t kShardHeaderBytes = 64;

// The decoded header of a shard file.
struct ShardHeader {
  uint32_t version = kShardFormatVersion;  // format version
  uint32_t dtype = 2;           // bytes per token: 2 (uint16) or 4 (uint32)
  uint64_t vocab_size = 0;      // every id is < vocab_size
  uint64_t tokens = 0;          // end-of-text ids included
  uint64_t documents = 0;       // documents (so end-of-text ids) in the shard
  uint64_t tokenizer_hash = 0;  // Tokenizer::hash() of the tokenizer that made it
  uint64_t content_xxh64 = 0;   // xxh64 (seed 0) of the token bytes as stored
};

// The token dtype for a vocabulary: 2 when every id fits in uint16, else 4.
uint32_t shard_dtype_for_vocab(uint64_t vocab_size);

// What to check when opening a shard or a shard directory. Defaults check only the format.
struct ShardCheck {
  const Tokenizer* tokenizer = nullptr;  // when set: the shard's tokenizer hash must equal its hash
  uint64_t max_vocab = 0;                // when > 0: the shard's vocab_size must not exceed it
  bool verify = false;                   // recompute the content xxh64: O(file size)
  std::string vocab_key = "model.vocab_size";  // names max_vocab in messages
};

// A memory-mapped shard (MAP_SHARED, PROT_READ, MADV_RANDOM). Immutable; thread-safe to read.
class TokenShard : public std::enable_shared_from_this<TokenShard> {
 public:
  // Maps and validates `path`: magic, header checksum, version, dtype, file size against the
  // header, then `check`. Throws Error(io) (missing/unreadable/truncated) or Error(data), each
  // naming the path and what to do.
  static std::shared_ptr<TokenShard> open(const std::string& path, const ShardCheck& check = {});
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }       // the path given to open()
  const ShardHeader& header() const { return header_; }   // the validated header
  uint64_t size() const { return header_.tokens; }        // tokens in the shard
  // The tokens; the view keeps this shard (and its mapping) alive.
  TokenView view() const;
  // Recomputes the xxh64 of the token bytes; throws Error(data) naming the file on a mismatch.
  void verify() const;

 private:
  TokenShard() = default;
  std::string path_;
  ShardHeader header_;
  const unsigned char* map_ = nullptr;  // the whole file
  uint64_t map_bytes_ = 0;
};

// One shard as listed in a manifest. `file` is relative to the manifest's directory.
struct ShardEntry {
  std::string file;        // file name, relative to the manifest's directory
  uint64_t tokens = 0;     // the shard header's token count
  uint64_t documents = 0;  // the shard header's document count
};

// Writes one shard: `path`.tmp while open, renamed to `path` by finish(). Not thread-safe.
class ShardWriter {
 public:
  // Throws Error(io) naming the file when it cannot be created.
  ShardWriter(std::string path, uint64_t vocab_size, uint64_t tokenizer_hash);
  ~ShardWriter();  // an unfinished shard's temporary file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends the ids of one document, then `eot_id`. Throws Error(data) for an id outside
  // [0, vocab_size) (a tokenizer that disagrees with its own vocabulary), Error(io) on write errors.
  void add_document(const int32_t* ids, size_t n, int32_t eot_id);
  uint64_t tokens() const { return header_.tokens; }        // written so far, eot ids included
  uint64_t documents() const { return header_.documents; }  // documents added so far
  // Writes the header, flushes, fsyncs and renames to the final name. Returns the entry with
  // `file` = the final path's file name.
  ShardEntry finish();

 private:
  void flush_buffer();
  std::string path_, tmp_path_;
  ShardHeader header_;
  void* file_ = nullptr;  // FILE*
  void* hash_state_ = nullptr;  // XXH64_state_t*
  std::vector<unsigned char> buffer_;
  bool finished_ = false;
};

// The shards of one split (train or val) of a shard directory.
struct ShardSplit {
  std::vector<ShardEntry> shards;  // in stream order
  uint64_t tokens() const;     // sum of the shards' tokens
  uint64_t documents() const;  // sum of the shards' documents
};

// The description of a directory of shards (manifest.json).
struct ShardManifest {
  uint32_t version = kShardFormatVersion;  // format version
  std::string tokenizer_name;   // Tokenizer::name() of the tokenizer used
  uint64_t tokenizer_hash = 0;  // its Tokenizer::hash()
  uint64_t vocab_size = 0;      // its vocab_size(); every id is below it
  int32_t eot_id = -1;          // its end-of-text id, which ends every document
  uint32_t dtype = 2;           // bytes per token in the shards: 2 or 4
  std::vector<TextFile> sources;  // the input files, directories expanded
  std::string documents = "blank-line";  // how text files were split into documents
  std::string jsonl_field = "text";  // the JSONL field read as a document
  double val_fraction = 0;           // TextSourceOptions::val_fraction used
  // train: the training split's shards.
  ShardSplit train, val;  // val: the validation split's shards
  std::string created_at;  // UTC, ISO 8601
  std::string created_by;  // "nuri tokenize (nuri 0.1.0)"
  // ranks: how many ranks tokenized.
  int ranks = 1, threads = 1;  // threads: encoding threads per rank
};

// Writes dir/manifest.json atomically (temporary file + rename). Throws Error(io).
void write_manifest(const std::string& dir, const ShardManifest& manifest);
// Reads dir/manifest.json. Throws Error(io) when it is missing ("is this a nuri tokenize output
// directory?"), Error(data) naming the file for malformed JSON, a missing key or another version.
ShardManifest read_manifest(const std::string& dir);

// A shard directory opened for reading: the manifest and every shard mapped.
struct ShardDataset {
  std::string dir;          // the directory given to open_shard_dataset
  ShardManifest manifest;   // its manifest.json
  // train: the training split's shards, mapped, in stream order.
  std::vector<std::shared_ptr<TokenShard>> train, val;  // val: the validation split's shards
  std::vector<TokenView> train_views() const;  // a view of each train shard, in order
  std::vector<TokenView> val_views() const;    // a view of each val shard, in order
};
// Reads the manifest, checks its tokenizer and vocabulary against `check` (before touching any
// shard), then opens every shard with `check` and compares its counts with the manifest.
ShardDataset open_shard_dataset(const std::string& dir, const ShardCheck& check = {});

// xxh64 of a token stream read as little-endian uint32 values, in order: the same for the same
// ids whatever the dtype or the shard boundaries (what `nuri tokenize --verify` prints).
uint64_t token_stream_xxh64(const std::vector<TokenView>& views);

// Tokenizing ------------------------------------------------------------------------------------

// Options of tokenize_to_shards (and of make_manifest, which records them).
struct TokenizeOptions {
  std::string output_dir;             // where shards go; created if missing; must be non-empty
  TextSourceOptions sources;          // documents, JSONL field, val_fraction, strict UTF-8
  uint64_t shard_tokens = 100'000'000;  // a shard is closed before a document would pass this
  int threads = 1;                    // encoding threads
  uint64_t batch_bytes = 4u << 20;    // text per encoding batch
  // Big files are cut into work units of this many bytes (moved to document boundaries). A
  // constant of the format, not of the machine: the token stream never depends on it or on
  // the thread and rank counts.
  uint64_t unit_bytes = 32u << 20;
  // Called from the calling thread with (bytes read so far, tokens written so far).
  std::function<void(uint64_t, uint64_t)> progress;
};

// A piece of the input: bytes [begin, end) of a file, nominal (the real cut is moved forward to
// the next document boundary, see docs/data-format.md).
struct WorkUnit {
  size_t file = 0;  // index into the file list
  // begin: the unit's first byte (nominal).
  uint64_t begin = 0, end = 0;  // end: one past its last byte (nominal)
};
// The units of `files` in stream order; depends only on the files and `unit_bytes`.
std::vector<WorkUnit> plan_work_units(const std::vector<TextFile>& files, const TextSourceOptions& sources,
                                      uint64_t unit_bytes);
// Rank `rank` of `world` takes a contiguous run [first, last) of units, balanced by bytes.
std::pair<size_t, size_t> units_for_rank(const std::vector<WorkUnit>& units, int rank, int world);
// Calls `fn` for each document of one unit, in order, with the rules of text_source.hpp; the
// documents of a file's units, concatenated, are those for_each_document gives for the file.
void for_each_document_in_unit(const TextFile& file, const WorkUnit& unit, const TextSourceOptions& options,
                                const std::function<void(const Document&)>& fn,
                                const std::function<void(uint64_t)>& on_bytes = {});

// What one rank wrote.
struct TokenizeResult {
  // train: this rank's training shards, in stream order.
  ShardSplit train, val;    // val: this rank's validation shards, in stream order
  uint64_t bytes_read = 0;  // input bytes of this rank's units
};

// Tokenizes this rank's share of `paths` into `options.output_dir` (created if needed) as
// shards named {train,val}-RRRRR-SSSSS.bin (R = rank, S = sequence): documents are read in
// batches of about `batch_bytes`, encoded on `threads` threads and written in order. The
// caller gathers every rank's result (in rank order) and writes the manifest. Throws what
// reading (text_source.hpp) and writing throw; this rank's shards are then left as *.tmp or
// complete files without a manifest.
TokenizeResult tokenize_to_shards(const std::vector<TextFile>& files, const Tokenizer& tokenizer,
                                  const TokenizeOptions& options, int rank = 0, int world = 1);

// The manifest for the results of ranks 0..n-1 (in rank order): their shards concatenated.
ShardManifest make_manifest(const Tokenizer& tokenizer, const TokenizeOptions& options,
                            const std::vector<TextFile>& files, const std::vector<TokenizeResult>& ranks);


}  // namespace nuri
NURI_API_END

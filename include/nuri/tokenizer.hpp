#pragma once
// \file
// Byte-level BPE: encode and decode, training, and the file formats the ecosystem uses.
//
// A BpeTokenizer is a table of tokens (each a byte string, indexed by id), a list of merges in
// priority order, a pre-tokenization pattern (PCRE2, with Unicode classes), an optional Unicode
// normalization and a set of special tokens. Encoding is:
//   normalize (optional) -> split at special tokens (encode_with_specials only) ->
//   split into pieces by the pattern -> merge each piece's bytes by BPE -> ids.
// decode(encode(x)) == x for every valid UTF-8 x when normalization is none (with NFC/NFKC: for
// every x already in that form). Invalid UTF-8 is never an error in encode: each byte outside a
// valid sequence becomes a piece of its own and is encoded as its byte token (byte fallback),
// so decode(encode(x)) == x holds for any bytes.
//
// Thread-safety: a BpeTokenizer is immutable after construction; encode/decode may be called
// from many threads at once.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nuri/data.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Unicode normalization applied to text before encoding: none, NFC or NFKC.
enum class Normalization { none, nfc, nfkc };
const char* to_string(Normalization n);  // "none" | "nfc" | "nfkc"
// "none" | "nfc" | "nfkc"; throws Error(config) naming the choices otherwise.
Normalization parse_normalization(const std::string& name);

// The pre-tokenization regex (PCRE2 syntax) for a known name: "gpt2" (GPT-2, r50k), "cl100k",
// "o200k". Any other string is taken as a regex itself, in the same dialect as the named ones
// (`\s` is Unicode White_Space and `\p{..}` classes follow tiktoken's Unicode 16 tables, as
// src/tokenizer/pretokenize.hpp explains), translated for PCRE2 and checked to compile
// (Error(config) with PCRE2's message and offset otherwise). Translating is idempotent, so a
// pattern this returns may be passed in again.
std::string pretokenize_pattern(const std::string& name_or_regex);

// A special token: matched as a whole string by encode_with_specials, never produced by BPE.
struct SpecialToken {
  std::string text;  // e.g. "<|endoftext|>"
  int32_t id = -1;   // its id, an index into BpeModel::tokens
};

// Everything that defines a byte-level BPE tokenizer. `tokens[id]` is the token's raw bytes (not
// GPT-2's printable byte-to-unicode spelling); all 256 single bytes must be present. `merges` are
// pairs of ids (left, right) in priority order (first = merged first); the merged token must be
// in `tokens`. When `merges` is empty the tiktoken rule applies: adjacent parts whose
// concatenation is a token merge, lowest id first. Special tokens' ids index `tokens` too
// (their bytes are their text) and are excluded from BPE.
struct BpeModel {
  std::vector<std::string> tokens;                  // raw bytes of each token, indexed by id
  std::vector<std::pair<int32_t, int32_t>> merges;  // (left, right) ids, first = merged first
  std::string pattern;                     // regex, as pretokenize_pattern returns it
  Normalization normalization = Normalization::none;  // applied to text before encoding
  std::vector<SpecialToken> specials;      // matched by encode_with_specials; never from BPE
  std::string eot = "<|endoftext|>";       // which special token separates documents
};

// A byte-level BPE Tokenizer built from a BpeModel (see the top of this file).
class BpeTokenizer final : public Tokenizer {
 public:
  // Validates the model (Error(data) naming what is wrong: a missing byte token, a merge whose
  // result is not a token, a duplicate token, a special id out of range) and builds the tables.
  explicit BpeTokenizer(BpeModel model, std::string name = "bpe");
  ~BpeTokenizer() override;
  // Moves; a moved-from tokenizer may only be destroyed or assigned to.
  BpeTokenizer(BpeTokenizer&&) noexcept;
  // Moves; a moved-from tokenizer may only be destroyed or assigned to.
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  // Loads any supported format, chosen by what `path` is:
  //   a directory holding encoder.json + vocab.bpe (GPT-2's files; pattern "gpt2"),
  //   a *.json file (Hugging Face tokenizer.json, byte-level BPE),
  //   a *.tiktoken file (base64 token + rank per line; pattern `tiktoken_pattern`, special
  //   tokens `tiktoken_specials` given as text and appended after the last rank unless listed).
  // Throws Error(io) for a missing/unreadable file, Error(data) naming the file and line (or
  // JSON path) for malformed content, Error(config) for a path of none of these kinds.
  static BpeTokenizer load(const std::string& path, const std::string& tiktoken_pattern = "gpt2",
                           const std::vector<std::string>& tiktoken_specials = {"<|endoftext|>"});
  // GPT-2's encoder.json + vocab.bpe (pattern "gpt2"); named after their directory.
  // Throws as load.
  static BpeTokenizer from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe);
  // A *.tiktoken file with `pattern` (a name or regex, see pretokenize_pattern) and `specials`
  // (text) appended after the last rank unless listed; named after the file. Throws as load.
  static BpeTokenizer from_tiktoken_file(const std::string& path, const std::string& pattern,
                                         const std::vector<std::string>& specials);
  // A Hugging Face tokenizer.json (byte-level BPE only); named after the file, or after its
  // directory when the file is called tokenizer.json. Throws as load.
  static BpeTokenizer from_hf_json(const std::string& path);

  // Writers; each throws Error(io) naming the file it could not write. A tokenizer without
  // explicit merges writes the merges the tiktoken rule implies.
  void save_hf_json(const std::string& path) const;        // tokenizer.json
  void save_gpt2_files(const std::string& dir) const;      // dir/encoder.json + dir/vocab.bpe
  void save_tiktoken_file(const std::string& path) const;  // ranks = ids (specials not written)

  // Tokenizer interface.
  std::string name() const override;
  int vocab_size() const override;  // tokens.size(), special tokens included
  int eot_id() const override;     // the id of the special token model().eot; -1 if eot is empty
  uint64_t hash() const override;   // xxh64 of the canonical content (tokens, merges, pattern, ...)
  // Special-token text inside `text` is encoded as ordinary text (safe for untrusted input).
  std::vector<int32_t> encode(const std::string& text) const override;
  // Throws Error(data) for an id outside [0, vocab_size) naming the id and its position.
  std::string decode(const std::vector<int32_t>& ids) const override;

  // Like encode, but occurrences of special tokens' text become their ids.
  std::vector<int32_t> encode_with_specials(const std::string& text) const;
  // Encodes many texts on `threads` threads (0 = OpenMP's default); result[i] = encode(texts[i]).
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 int threads = 0) const;
  const BpeModel& model() const;  // the model it was built from
  // The raw bytes of one token; throws Error(data) for an id out of range.
  const std::string& token_bytes(int32_t id) const;
  // The id of a special token's text, or -1.
  int32_t special_id(const std::string& text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Training ---------------------------------------------------------------------------------------

struct BpeTrainOptions {
  int vocab_size = 8192;           // total, 256 byte tokens and the special tokens included
  std::string pattern = "o200k";   // a name or regex for pretokenize_pattern
  Normalization normalization = Normalization::nfc;  // applied to the corpus; kept in the model
  // Special tokens, given ids after the learned tokens, in this order. The first is end-of-text.
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|bos|>", "<|eos|>", "<|pad|>"};
  int min_frequency = 2;           // a pair seen fewer times is never merged
  int threads = 0;                 // pair counting and pre-tokenization threads (0 = all cores)
  // Memory bound: at most this many distinct pre-tokenized pieces are counted; when the table
  // fills, the rarest pieces are dropped (and the fact is reported). The corpus itself is
  // streamed and never held in memory. The result is the same for any thread count as long as
  // nothing is dropped; once pieces are dropped, which ones can depend on the thread count.
  size_t max_pieces = 2'000'000;
  bool progress = true;            // a progress bar on stderr
};

struct TextSourceOptions;  // nuri/text_source.hpp

// Learns a tokenizer from text files, JSONL files and directories (see nuri/text_source.hpp
// for how documents are read). Throws Error(config) for options that cannot work (vocab_size
// smaller than 256 + specials), Error(io)/Error(data) from reading the sources.
BpeTokenizer train_bpe(const std::vector<std::string>& paths, const TextSourceOptions& sources,
                       const BpeTrainOptions& options);

}  // namespace nuri
NURI_API_END

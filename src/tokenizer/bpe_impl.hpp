#pragma once
// BpeTokenizer's internals, shared by bpe.cpp (tables, encode, decode) and formats.cpp (readers and
// writers). Not installed.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nuri/tokenizer.hpp"
#include "tokenizer/pretokenize.hpp"

namespace nuri::bpe {

// (left id, right id) -> (rank, merged id): a flat open-addressing table keyed by left<<32|right,
// linear probing, load factor <= 1/2.
class PairTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);

  void reserve(size_t n);
  // Inserts unless the pair is present; returns false if it was.
  bool insert(int32_t left, int32_t right, int32_t rank, int32_t merged);
  const Entry* find(int32_t left, int32_t right) const {
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    size_t slot = (key * 0x9E3779B97F4A7C15ull) >> shift_;
    while (true) {
      const Entry& e = slots_[slot];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      slot = (slot + 1) & mask_;
    }
  }
  size_t size() const { return size_; }

 private:
  std::vector<Entry> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

// Token bytes -> id for the non-special tokens (flat open addressing over ids, xxh3 of the bytes).
class TokenIndex {
 public:
  void build(const std::vector<std::string>& tokens, const std::vector<bool>& is_special);
  // The id of `bytes`, or -1.
  int32_t find(std::string_view bytes) const;

 private:
  const std::vector<std::string>* tokens_ = nullptr;
  std::vector<int32_t> slots_;
  size_t mask_ = 0;
};

// The merges the tiktoken rule implies for a model without explicit merges: for each non-special
// token of two or more bytes, in id order, the two parts that BPE restricted to lower-ranked
// tokens ends with (tokens BPE cannot reach that way get no merge). This is how Hugging Face
// converts tiktoken files.
std::vector<std::pair<int32_t, int32_t>> implied_merges(const BpeTokenizer& tokenizer);

// Reading and writing files, used by formats.cpp.
std::string read_file(const std::string& path, const char* op);
void write_file(const std::string& path, const std::string& content, const char* op);

}  // namespace nuri::bpe

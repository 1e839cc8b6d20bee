#pragma once
// Pre-tokenization: the named patterns (GPT-2, cl100k, o200k), their translation from the
// reference regex dialects (Rust `regex`/`fancy-regex` as tiktoken uses, JS `u` mode) to PCRE2,
// and a compiled PCRE2 matcher (UTF + UCP, JIT) that splits valid UTF-8 text into pieces.
//
// Why a translation: PCRE2 10.42 and the references disagree on a few characters.
//   * \s: tiktoken's Rust regex uses the Unicode White_Space property; PCRE2's \s with UCP also
//     matches U+180E (MONGOLIAN VOWEL SEPARATOR, a format character since Unicode 6.3). \s and \S
//     are therefore spelled out as the White_Space set.
//   * \p{L}, \p{N}, \p{M} and the letter subcategories: PCRE2 10.42 has Unicode 14 tables,
//     tiktoken's Rust regex has Unicode 16 (checked code point by code point against tiktoken
//     1.0.22). The letters, numbers and marks added in Unicode 15.0-16.0 are added to each class.
// Characters added in Unicode 17 are not letters here (nor in tiktoken); a JS engine with
// Unicode 17 tables (node's ICU) disagrees on them, see tests/tokenizer_parity.sh.
#include <cstddef>
#include <string>

namespace nuri::bpe {

// The reference-dialect regex of a known pattern name ("gpt2", "cl100k", "o200k"), or "" if the
// name is not known.
std::string reference_pattern(const std::string& name);
// A reference-dialect regex (Rust regex / JS u-mode / Oniguruma: \s, \p{..} as above) rewritten
// for PCRE2 with the class fixes described above. Other syntax is passed through unchanged.
// Idempotent: translating a translated pattern returns it unchanged.
std::string translate_pattern(const std::string& reference_regex);
// The known name whose translation equals `pcre_pattern`, or "".
std::string known_pattern_name(const std::string& pcre_pattern);
// Compiles `pcre_pattern`; throws Error(config) with PCRE2's message and offset if it fails.
void check_pattern(const std::string& pcre_pattern);

// A compiled pre-tokenization pattern. Immutable; split() may be called from many threads (each
// thread keeps its own PCRE2 match data and JIT stack).
class Pretokenizer {
 public:
  explicit Pretokenizer(const std::string& pcre_pattern);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Splits s[0, n) (valid UTF-8) into consecutive pieces that cover it, calling
  // piece(offset, length) for each in order. Text between two matches (which the named patterns
  // never leave) becomes a piece of its own; empty matches are not pieces.
  template <class PieceFn>
  void split(const char* s, size_t n, PieceFn&& piece) const {
    size_t pos = 0;
    while (pos < n) {
      size_t start = 0, end = 0;
      if (!find(s, n, pos, start, end)) {
        piece(pos, n - pos);
        return;
      }
      if (start > pos) piece(pos, start - pos);
      piece(start, end - start);
      pos = end;
    }
  }

 private:
  // The first non-empty match in s[0, n) at or after `pos`; false if there is none.
  bool find(const char* s, size_t n, size_t pos, size_t& start, size_t& end) const;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace nuri::bpe

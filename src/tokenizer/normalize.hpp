#pragma once
// Unicode normalization (NFC, NFKC) for the BPE tokenizer, via utf8proc. Only valid UTF-8 runs are
// normalized; bytes outside a valid sequence pass through unchanged, so normalization never fails.
#include <string>
#include <string_view>

#include "nuri/tokenizer.hpp"

namespace nuri::bpe {

// Length of the valid UTF-8 sequence starting at s[i] (1-4), or 0 if none starts there (stray
// continuation byte, truncated sequence, overlong form, surrogate, code point > U+10FFFF).
int utf8_sequence_length(const unsigned char* s, size_t n, size_t i);
// Length of the longest valid UTF-8 prefix of s[i, n).
size_t valid_utf8_run(const unsigned char* s, size_t n, size_t i);

// `text` in normalization form `form`; Normalization::none returns it unchanged.
std::string normalize(std::string_view text, Normalization form);

}  // namespace nuri::bpe

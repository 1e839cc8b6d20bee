#pragma once
// GPT-2's bytes_to_unicode: the printable spelling of raw bytes used by encoder.json, vocab.bpe and
// Hugging Face's byte-level tokenizer.json. Bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF stand for
// themselves (as code points); the other 68 bytes map, in increasing order, to U+0100, U+0101, ...
#include <cstdint>
#include <string>
#include <string_view>

namespace nuri::bpe {

// The code point that spells byte b.
uint32_t byte_to_codepoint(uint8_t b);
// Raw bytes -> their GPT-2 spelling (UTF-8).
std::string bytes_to_unicode(std::string_view bytes);
// GPT-2 spelling (UTF-8) -> raw bytes. Returns false (and leaves `out` unspecified) when the text
// is not valid UTF-8 or holds a code point that spells no byte.
bool unicode_to_bytes(std::string_view text, std::string& out);

}  // namespace nuri::bpe

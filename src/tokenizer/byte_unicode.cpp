// GPT-2's bytes_to_unicode mapping and its inverse (see byte_unicode.hpp).
#include "tokenizer/byte_unicode.hpp"

#include <array>

namespace nuri::bpe {

namespace {

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // code points 0..323 -> byte, or -1
  ByteTables() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? uint32_t(b) : next++;
      from_cp[to_cp[b]] = int16_t(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else {  // every code point used here is below U+0800
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().to_cp[b]; }

std::string bytes_to_unicode(std::string_view bytes) {
  const ByteTables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) append_utf8(out, t.to_cp[c]);
  return out;
}

bool unicode_to_bytes(std::string_view text, std::string& out) {
  const ByteTables& t = tables();
  out.clear();
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = text[i];
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c >> 5) == 0x6 && i + 1 < text.size() && (uint8_t(text[i + 1]) >> 6) == 0x2) {
      cp = (uint32_t(c & 0x1F) << 6) | (uint8_t(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;  // a 3- or 4-byte sequence spells no byte; a broken one is not UTF-8
    }
    if (cp >= t.from_cp.size() || t.from_cp[cp] < 0) return false;
    out.push_back(char(t.from_cp[cp]));
  }
  return true;
}

}  // namespace nuri::bpe

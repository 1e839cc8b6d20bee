// NFC/NFKC via utf8proc, applied run by run to the valid UTF-8 parts of the text (see normalize.hpp).
#include "tokenizer/normalize.hpp"

#include <utf8proc.h>

#include <cstdlib>

#include "nuri/error.hpp"

namespace nuri::bpe {

int utf8_sequence_length(const unsigned char* s, size_t n, size_t i) {
  const unsigned char c = s[i];
  if (c < 0x80) return 1;
  int len;
  uint32_t cp;
  if ((c >> 5) == 0x6) {
    len = 2, cp = c & 0x1F;
  } else if ((c >> 4) == 0xE) {
    len = 3, cp = c & 0x0F;
  } else if ((c >> 3) == 0x1E) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + size_t(len) > n) return 0;
  for (int k = 1; k < len; ++k) {
    const unsigned char next = s[i + k];
    if ((next & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3F);
  }
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  const bool ok = cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
  return ok ? len : 0;
}

size_t valid_utf8_run(const unsigned char* s, size_t n, size_t i) {
  const size_t start = i;
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    const int len = utf8_sequence_length(s, n, i);
    if (len == 0) break;
    i += size_t(len);
  }
  return i - start;
}

namespace {

// Whether normalizing `run` (valid UTF-8) cannot change it: all ASCII, or (NFC only) all code
// points below U+0300, none of which composes with a predecessor or has a canonical decomposition
// that NFC would keep decomposed.
bool already_normal(const unsigned char* s, size_t n, Normalization form) {
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = s[i];
    if (c < 0x80) continue;
    if (form == Normalization::nfkc) return false;
    if (c >= 0xCC) return false;  // lead bytes 0xCC.. start code points >= U+0300
  }
  return true;
}

void append_normalized(std::string& out, const unsigned char* s, size_t n, Normalization form) {
  if (already_normal(s, n, form)) {
    out.append(reinterpret_cast<const char*>(s), n);
    return;
  }
  int options = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  if (form == Normalization::nfkc) options |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t len = utf8proc_map(s, utf8proc_ssize_t(n), &result, utf8proc_option_t(options));
  if (len < 0) {
    // Cannot happen for valid UTF-8 short of running out of memory.
    NURI_THROW(internal, "tokenizer.normalize",
               "utf8proc failed to normalize a valid UTF-8 run of " << n << " bytes to "
                   << to_string(form) << ": " << utf8proc_errmsg(len));
  }
  out.append(reinterpret_cast<const char*>(result), size_t(len));
  std::free(result);
}

}  // namespace

std::string normalize(std::string_view text, Normalization form) {
  if (form == Normalization::none) return std::string(text);
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::string out;
  out.reserve(n + n / 8);
  for (size_t i = 0; i < n;) {
    const size_t run = valid_utf8_run(s, n, i);
    if (run > 0) {
      append_normalized(out, s + i, run, form);
      i += run;
    } else {
      out.push_back(char(s[i]));  // an invalid byte passes through
      i += 1;
    }
  }
  return out;
}

}  // namespace nuri::bpe

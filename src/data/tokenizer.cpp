// make_tokenizer, the byte-level tokenizer (ids 0..255 = bytes, 256 = end-of-text) and UTF-8
// sanitizing. The BPE tokenizer (nuri/tokenizer.hpp) implements the same Tokenizer interface.
#include <filesystem>

#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"

namespace nuri {

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  int vocab_size() const override { return 257; }
  int eot_id() const override { return 256; }
  uint64_t hash() const override { return 0x6279746573323537ull; }  // "bytes257": fixed by definition
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
    return out;
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "bytes") return std::make_unique<ByteTokenizer>();
  NURI_CHECK(std::filesystem::exists(name), config, "data.tokenizer",
             "tokenizer '" << name << "' is neither \"bytes\" nor an existing file or directory; give "
             << "a tokenizer.json (nuri tokenizer-train writes one), a *.tiktoken file or a directory "
             << "with GPT-2's encoder.json and vocab.bpe");
  return std::make_unique<BpeTokenizer>(BpeTokenizer::load(name));
}

namespace {
// Length (1-4) of the valid UTF-8 sequence starting at s[i], or 0 if none starts there:
// rejects stray continuation bytes, truncated sequences, overlong forms, surrogates and code
// points above U+10FFFF.
int utf8_sequence_length(const std::string& s, size_t i) {
  const unsigned char c = s[i];
  const int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  if (len == 1) return 1;
  uint32_t cp = c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const unsigned char next = s[i + k];
    if ((next & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3F);
  }
  const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  const bool ok = cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
  return ok ? len : 0;
}
}  // namespace

size_t first_invalid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const int len = utf8_sequence_length(s, i);
    if (len == 0) return i;
    i += size_t(len);
  }
  return std::string::npos;
}

std::string sanitize_utf8(const std::string& s) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int len = utf8_sequence_length(s, i);
    if (len > 0) {
      out.append(s, i, size_t(len));
      i += size_t(len);
    } else {
      out += kReplacement;
      i += 1;
    }
  }
  return out;
}

}  // namespace nuri

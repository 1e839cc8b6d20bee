// Fuzz target: the BPE encoder and decoder on arbitrary bytes (invalid UTF-8 included).
// Properties checked on every input, for each tokenizer named in NURI_FUZZ_TOKENIZERS
// (colon-separated paths that BpeTokenizer::load reads), with normalization turned off:
//   - every id is in [0, vocab_size);
//   - decode(encode(x)) == x (byte fallback makes this hold for any bytes);
//   - decode(encode_with_specials(x)) == x (a special token decodes to its own text).
// With the tokenizer's own normalization (NFC/NFKC) only "no crash, ids in range" is checked.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"

namespace {

std::vector<std::unique_ptr<nuri::BpeTokenizer>> raw, normalized;

void check_ids(const nuri::BpeTokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) {
      std::fprintf(stderr, "fuzz_encode: id %d out of range [0, %d)\n", id, tok.vocab_size());
      std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("NURI_FUZZ_TOKENIZERS");
  if (!env || !*env) {
    std::fprintf(stderr, "fuzz_encode: set NURI_FUZZ_TOKENIZERS to tokenizer paths (colon-separated)\n");
    std::exit(2);
  }
  std::stringstream paths(env);
  for (std::string path; std::getline(paths, path, ':');) {
    if (path.empty()) continue;
    nuri::BpeTokenizer tok = nuri::BpeTokenizer::load(path);
    nuri::BpeModel model = tok.model();
    model.normalization = nuri::Normalization::none;
    raw.push_back(std::make_unique<nuri::BpeTokenizer>(model, path + " (no normalization)"));
    normalized.push_back(std::make_unique<nuri::BpeTokenizer>(std::move(tok)));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const auto& tok : raw) {
    const std::vector<int32_t> ids = tok->encode(text);
    check_ids(*tok, ids);
    if (tok->decode(ids) != text) {
      std::fprintf(stderr, "fuzz_encode: decode(encode(x)) != x for %s\n", tok->name().c_str());
      std::abort();
    }
    const std::vector<int32_t> with_specials = tok->encode_with_specials(text);
    check_ids(*tok, with_specials);
    if (tok->decode(with_specials) != text) {
      std::fprintf(stderr, "fuzz_encode: decode(encode_with_specials(x)) != x for %s\n", tok->name().c_str());
      std::abort();
    }
  }
  for (const auto& tok : normalized) check_ids(*tok, tok->encode(text));
  return 0;
}

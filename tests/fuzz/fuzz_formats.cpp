// Fuzz target: the tokenizer file readers. The first input byte picks the format, the rest is
// the file's content: 0 -> Hugging Face tokenizer.json, 1 -> *.tiktoken rank file, 2 -> GPT-2
// encoder.json and vocab.bpe (split at the first NUL byte). A reader must either return a
// working tokenizer or throw nuri::Error; any other exception, a crash, a leak or undefined
// behaviour fails. A tokenizer that loads must encode and decode a fixed text losslessly.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"

namespace {

std::string dir;

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), std::streamsize(content.size()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/nuri_fuzz_formats_XXXXXX";
  const char* made = mkdtemp(tmpl);
  if (!made) std::abort();
  dir = made;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int format = data[0] % 3;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    nuri::BpeModel model;
    if (format == 0) {
      write_file(dir + "/tokenizer.json", body);
      model = nuri::BpeTokenizer::from_hf_json(dir + "/tokenizer.json").model();
    } else if (format == 1) {
      write_file(dir + "/ranks.tiktoken", body);
      model = nuri::BpeTokenizer::from_tiktoken_file(dir + "/ranks.tiktoken", "gpt2", {"<|endoftext|>"}).model();
    } else {
      const size_t cut = body.find('\0');
      write_file(dir + "/encoder.json", body.substr(0, cut));
      write_file(dir + "/vocab.bpe", cut == std::string::npos ? std::string() : body.substr(cut + 1));
      model = nuri::BpeTokenizer::from_gpt2_files(dir + "/encoder.json", dir + "/vocab.bpe").model();
    }
    model.normalization = nuri::Normalization::none;
    const nuri::BpeTokenizer tok(std::move(model));
    const std::string text = "Hello, 세계! 123 \xF0\x9F\x91\x8B\r\n\xFF";
    if (tok.decode(tok.encode(text)) != text) {
      std::fprintf(stderr, "fuzz_formats: a loaded tokenizer does not round-trip\n");
      std::abort();
    }
  } catch (const nuri::Error&) {
    // A clear, typed error is the expected outcome for malformed input.
  }
  return 0;
}

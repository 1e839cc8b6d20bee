// Tokenizer encoding speed: documents of the given text files (split at blank lines, as
// `nuri tokenize` reads them) encoded with BpeTokenizer::encode_batch on N threads.
//
//   bench_tokenizer --tokenizer PATH [--threads N] [--reps R] [--val-fraction F --held-out] FILE...
// PATH is anything BpeTokenizer::load reads (a GPT-2 directory, tokenizer.json, *.tiktoken with
// --pattern). Prints one line per repetition, then
//   NURI tokenizer=... threads=N mb_per_s=<median> tokens=<count> bytes_per_token=<ratio>
// With --held-out, only the documents of the validation split (val fraction F) are counted and
// bytes per token is reported per file: the compression figure the README quotes.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "nuri/error.hpp"
#include "nuri/text_source.hpp"
#include "nuri/timer.hpp"
#include "nuri/tokenizer.hpp"

int main(int argc, char** argv) {
  std::string path, pattern = "gpt2";
  int threads = 2, reps = 5;
  double val_fraction = 0.0;
  bool held_out = false;
  std::vector<std::string> files;
  CLI::App app{"nuri tokenizer encoding benchmark"};
  app.add_option("--tokenizer", path, "Tokenizer file or GPT-2 directory")->required();
  app.add_option("--pattern", pattern, "Pre-tokenization pattern for a *.tiktoken file")->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--reps", reps)->capture_default_str();
  app.add_option("--val-fraction", val_fraction, "Validation split used with --held-out")->capture_default_str();
  app.add_flag("--held-out", held_out, "Bytes per token on the held-out documents only, per file");
  app.add_option("files", files, "Text files")->required();
  CLI11_PARSE(app, argc, argv);

  try {
    const nuri::BpeTokenizer tok = nuri::BpeTokenizer::load(path, pattern);
    nuri::TextSourceOptions so;
    so.val_fraction = val_fraction;

    if (held_out) {
      for (const nuri::TextFile& f : nuri::list_text_files(files, so)) {
        std::vector<std::string> docs;
        nuri::for_each_document(f, so, [&](const nuri::Document& d) {
          if (d.val) docs.emplace_back(d.text);
        });
        uint64_t bytes = 0, tokens = 0;
        for (const auto& ids : tok.encode_batch(docs, threads)) tokens += ids.size();
        for (const auto& d : docs) bytes += d.size();
        std::printf("HELDOUT tokenizer=%s file=%s documents=%zu bytes=%llu tokens=%llu bytes_per_token=%.3f\n",
                    path.c_str(), f.path.c_str(), docs.size(), (unsigned long long)bytes,
                    (unsigned long long)tokens, tokens ? double(bytes) / double(tokens) : 0.0);
      }
      return 0;
    }

    std::vector<std::string> docs;
    uint64_t bytes = 0;
    for (const nuri::TextFile& f : nuri::list_text_files(files, so)) {
      bytes += f.bytes;
      nuri::for_each_document(f, so, [&](const nuri::Document& d) { docs.emplace_back(d.text); });
    }
    std::vector<double> rates;
    uint64_t tokens = 0;
    for (int r = 0; r <= reps; ++r) {  // the first round warms up (page cache, allocator)
      nuri::Timer t;
      const auto ids = tok.encode_batch(docs, threads);
      const double seconds = t.seconds();
      tokens = 0;
      for (const auto& v : ids) tokens += v.size();
      if (r == 0) continue;
      rates.push_back(double(bytes) / 1e6 / seconds);
      std::printf("  nuri rep %d: %.2f MB/s\n", r, rates.back());
    }
    std::sort(rates.begin(), rates.end());
    std::printf("NURI tokenizer=%s threads=%d mb_per_s=%.3f tokens=%llu bytes_per_token=%.3f\n",
                path.c_str(), threads, rates[rates.size() / 2], (unsigned long long)tokens,
                double(bytes) / double(tokens));
  } catch (const nuri::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}

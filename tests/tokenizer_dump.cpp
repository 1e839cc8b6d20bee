// tokenizer_dump: a small CLI over nuri's BPE tokenizer for tests/tokenizer_parity.sh.
//   tokenizer_dump [--pattern P] [--special TEXT]... [--normalization N] COMMAND TOKENIZER ARGS
// TOKENIZER is anything BpeTokenizer::load reads; --pattern/--special apply to *.tiktoken files,
// --normalization replaces the loaded tokenizer's normalization (to make test variants).
// Commands:
//   encode IN OUT [specials]  IN: one JSON string per line; OUT: one JSON id array per line
//                             ("specials": encode_with_specials). Also checks decode(encode(x))==x.
//   encode-file FILE OUT      the whole file as one text; OUT: one JSON id array
//   decode IN OUT             IN: one JSON id array per line; OUT: hex of the decoded bytes per line
//   write-hf OUT | write-gpt2 DIR | write-tiktoken OUT
//   hash                      prints the tokenizer's hash (hex)
//   bench FILE [REPEATS]      prints single-thread encode speed in MB/s
//   classes OUT               per code point, the translated pattern classes it is in (see below)
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utf8proc.h>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"
#include "tokenizer/pretokenize.hpp"

namespace {

using nlohmann::json;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += {digits[c >> 4], digits[c & 15]};
  return out;
}

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 63))};
  } else if (cp < 0x10000) {
    out += {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 63)), char(0x80 | (cp & 63))};
  } else {
    out += {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 63)), char(0x80 | ((cp >> 6) & 63)),
            char(0x80 | (cp & 63))};
  }
  return out;
}

int run(int argc, char** argv) {
  std::string pattern = "gpt2", normalization;
  std::vector<std::string> specials;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--pattern" && i + 1 < argc) pattern = argv[++i];
    else if (a == "--special" && i + 1 < argc) specials.push_back(argv[++i]);
    else if (a == "--normalization" && i + 1 < argc) normalization = argv[++i];
    else args.push_back(a);
  }
  if (args.size() < 2) {
    std::cerr << "usage: tokenizer_dump [--pattern P] [--special T]... [--normalization N] "
                 "COMMAND TOKENIZER ARGS (see the source)\n";
    return 2;
  }
  const std::string command = args[0];
  if (specials.empty()) specials.push_back("<|endoftext|>");
  nuri::BpeTokenizer tok = nuri::BpeTokenizer::load(args[1], pattern, specials);
  if (!normalization.empty()) {
    nuri::BpeModel model = tok.model();
    model.normalization = nuri::parse_normalization(normalization);
    tok = nuri::BpeTokenizer(std::move(model), tok.name());
  }
  if (command == "encode" && args.size() >= 4) {
    const bool with_specials = args.size() >= 5 && args[4] == "specials";
    std::ifstream in(args[2]);
    std::ofstream out(args[3]);
    std::string line;
    size_t n = 0, roundtrip_failures = 0;
    while (std::getline(in, line)) {
      const std::string text = json::parse(line).get<std::string>();
      const auto ids = with_specials ? tok.encode_with_specials(text) : tok.encode(text);
      if (tok.model().normalization == nuri::Normalization::none && tok.decode(ids) != text) {
        if (roundtrip_failures++ < 5) std::cerr << "decode(encode(x)) != x for line " << n + 1 << "\n";
      }
      out << json(ids).dump() << "\n";
      ++n;
    }
    if (roundtrip_failures > 0) {
      std::cerr << roundtrip_failures << " of " << n << " strings did not round-trip\n";
      return 1;
    }
    return 0;
  }
  if (command == "encode-file" && args.size() >= 4) {
    const std::string text = read_all(args[2]);
    const auto ids = tok.encode(text);
    if (tok.decode(ids) != text) {
      std::cerr << "decode(encode(file)) != file for " << args[2] << "\n";
      return 1;
    }
    std::ofstream(args[3]) << json(ids).dump() << "\n";
    return 0;
  }
  if (command == "decode" && args.size() >= 4) {
    std::ifstream in(args[2]);
    std::ofstream out(args[3]);
    std::string line;
    while (std::getline(in, line)) out << hex(tok.decode(json::parse(line).get<std::vector<int32_t>>())) << "\n";
    return 0;
  }
  if (command == "write-hf" && args.size() >= 3) return tok.save_hf_json(args[2]), 0;
  if (command == "write-gpt2" && args.size() >= 3) return tok.save_gpt2_files(args[2]), 0;
  if (command == "write-tiktoken" && args.size() >= 3) return tok.save_tiktoken_file(args[2]), 0;
  if (command == "hash") {
    std::printf("%016llx\n", static_cast<unsigned long long>(tok.hash()));
    return 0;
  }
  if (command == "bench" && args.size() >= 3) {
    // Wall time and this thread's CPU time (the figure that holds on a busy machine).
    const std::string text = read_all(args[2]);
    const int repeats = args.size() >= 4 ? std::stoi(args[3]) : 3;
    size_t n_ids = tok.encode(text).size();  // warm the caches
    double best_wall = 1e30, best_cpu = 1e30;
    for (int r = 0; r < repeats; ++r) {
      timespec c0, c1;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
      const auto t0 = std::chrono::steady_clock::now();
      n_ids = tok.encode(text).size();
      best_wall = std::min(best_wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
      best_cpu = std::min(best_cpu, double(c1.tv_sec - c0.tv_sec) + 1e-9 * double(c1.tv_nsec - c0.tv_nsec));
    }
    std::printf("%s %s: %.1f MB/s per CPU-second, %.1f MB/s wall (%zu bytes -> %zu ids, best of %d)\n",
                tok.name().c_str(), args[2].c_str(), double(text.size()) / best_cpu / 1e6,
                double(text.size()) / best_wall / 1e6, text.size(), n_ids, repeats);
    return 0;
  }
  if (command == "classes" && args.size() >= 3) {
    // For each class the parity script compares with node's: the code points nuri's translated
    // pattern puts in it, as hex ranges; then those utf8proc (the normalizer) knows as assigned.
    std::ofstream out(args[2]);
    const char* classes[] = {"L", "N", "s", "Lu", "Lt", "Lm", "Lo", "M", "Ll", "assigned"};
    for (const char* cls : classes) {
      const std::string name = cls;
      const std::string raw = name == "s" ? "\\s" : "\\p{" + name + "}";
      // "a" + c is one piece exactly when c is in the class.
      std::unique_ptr<nuri::bpe::Pretokenizer> matcher;
      if (name != "assigned")
        matcher = std::make_unique<nuri::bpe::Pretokenizer>("a(?:" + nuri::bpe::translate_pattern(raw) + ")|a");
      out << name;
      int64_t run_start = -1;
      for (uint32_t cp = 0; cp <= 0x110000; ++cp) {
        bool in = false;
        if (cp < 0x110000 && !(cp >= 0xD800 && cp < 0xE000)) {
          if (matcher) {
            const std::string s = "a" + utf8(cp);
            size_t pieces = 0;
            matcher->split(s.data(), s.size(), [&](size_t, size_t) { ++pieces; });
            in = pieces == 1;
          } else {
            in = utf8proc_category(utf8proc_int32_t(cp)) != UTF8PROC_CATEGORY_CN;
          }
        }
        if (in && run_start < 0) run_start = cp;
        if (!in && run_start >= 0) {
          out << " " << std::hex << run_start << "-" << (cp - 1) << std::dec;
          run_start = -1;
        }
      }
      out << "\n";
    }
    return 0;
  }
  std::cerr << "unknown command or missing arguments: " << command << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const nuri::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

// nuri tokenizer-train: learn a byte-level BPE tokenizer from text, write it, and report how well
// it compresses the held-out documents.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.hpp"
#include "nuri/error.hpp"
#include "nuri/text_source.hpp"
#include "nuri/tokenizer.hpp"

namespace nuri::cli {

namespace {

namespace fs = std::filesystem;

struct TokenizerTrainCliOptions {
  std::vector<std::string> inputs;
  std::string out;
  std::string format = "hf";
  std::string normalization = "nfc";
  std::vector<std::string> extra_specials;
  std::string documents = "blank-line";
  bool quiet = false;
  BpeTrainOptions train;
  TextSourceOptions sources = [] {
    TextSourceOptions s;
    s.val_fraction = 0.01;  // nuri tokenize's default
    return s;
  }();
};

// Fails early, before training, when `out` cannot be written: a missing or read-only directory.
void check_writable(const std::string& out, bool is_directory) {
  const fs::path path(out);
  std::error_code ec;
  if (fs::exists(path, ec)) {
    const bool dir = fs::is_directory(path, ec);
    NURI_CHECK(dir == is_directory, io, "tokenizer-train",
               "cannot write '" << out << "': it is " << (dir ? "a directory" : "a file") << " and --format "
                                << (is_directory ? "gpt2 writes a directory" : "hf/tiktoken write a file")
                                << "; choose another --out");
    NURI_CHECK(access(out.c_str(), W_OK) == 0, io, "tokenizer-train",
               "cannot write '" << out << "': permission denied; choose another --out");
    return;
  }
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  NURI_CHECK(fs::is_directory(parent, ec), io, "tokenizer-train",
             "cannot write '" << out << "': directory '" << parent.string()
                              << "' does not exist; create it or choose another --out");
  NURI_CHECK(access(parent.c_str(), W_OK) == 0, io, "tokenizer-train",
             "cannot write '" << out << "': directory '" << parent.string()
                              << "' is not writable; choose another --out");
}

// The code point at s[i] (advancing i), or -1 for a byte that starts no valid sequence.
int32_t next_code_point(std::string_view s, size_t& i) {
  const auto c = uint8_t(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + size_t(len) > s.size()) {
    ++i;
    return -1;
  }
  int32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (uint8_t(s[i + size_t(k)]) & 0x3F);
  i += size_t(len);
  return cp;
}

bool is_hangul(int32_t cp) {
  return (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0x3130 && cp <= 0x318F) ||
         (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xD7B0 && cp <= 0xD7FF);
}

// Letters, approximately (no Unicode tables here): ASCII and Latin letters, and the alphabetic
// blocks (Greek onwards, kana, CJK, Hangul), leaving out digits, punctuation and symbol blocks.
bool is_letter(int32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  if (cp < 0x370) return cp >= 0xC0 && cp != 0xD7 && cp != 0xF7 && cp < 0x2B0;
  if (cp < 0x2000) return true;
  if (cp < 0x3040) return false;        // punctuation, symbols, arrows, box drawing, CJK punctuation
  if (cp < 0xE000) return cp < 0xD800;  // kana, CJK, Hangul syllables (not surrogates)
  if (cp >= 0xFF21 && cp <= 0xFF3A) return true;  // fullwidth Latin
  if (cp >= 0xFF41 && cp <= 0xFF5A) return true;
  if (cp >= 0xFF66 && cp <= 0xFFDC) return true;  // halfwidth kana and Hangul
  return (cp >= 0x10000 && cp < 0x1F000) || (cp >= 0x20000 && cp < 0x32400);
}

// The rule the bundled ko_prose corpus was selected by: at least half the letters are Hangul.
bool is_korean(std::string_view text) {
  size_t letters = 0, hangul = 0;
  for (size_t i = 0; i < text.size();) {
    const int32_t cp = next_code_point(text, i);
    if (cp < 0 || !is_letter(cp)) continue;
    ++letters;
    hangul += is_hangul(cp);
  }
  return letters > 0 && 2 * hangul >= letters;
}

struct HeldOutStats {
  uint64_t documents = 0, bytes = 0, tokens = 0;
  void print(const char* what) const {
    if (documents == 0) return;
    std::printf("  %-8s %8llu documents %10.2f MB %10llu tokens  %.3f bytes/token\n", what,
                (unsigned long long)documents, double(bytes) / 1e6, (unsigned long long)tokens,
                tokens ? double(bytes) / double(tokens) : 0.0);
  }
};

// Bytes per token of `tokenizer` on the held-out documents, Korean and other apart.
void report_held_out(const BpeTokenizer& tokenizer, const TokenizerTrainCliOptions& opt) {
  HeldOutStats korean, other;
  std::vector<std::string> texts;
  size_t pending_bytes = 0;
  auto flush = [&] {
    const std::vector<std::vector<int32_t>> ids = tokenizer.encode_batch(texts, opt.train.threads);
    for (size_t i = 0; i < texts.size(); ++i) {
      HeldOutStats& s = is_korean(texts[i]) ? korean : other;
      ++s.documents;
      s.bytes += texts[i].size();
      s.tokens += ids[i].size();
    }
    texts.clear();
    pending_bytes = 0;
  };
  for (const TextFile& file : list_text_files(opt.inputs, opt.sources)) {
    for_each_document(file, opt.sources, [&](const Document& doc) {
      if (!doc.val) return;
      texts.emplace_back(doc.text);
      pending_bytes += doc.text.size();
      if (pending_bytes >= (size_t(16) << 20)) flush();
    });
  }
  flush();
  if (korean.documents + other.documents == 0) return;
  HeldOutStats all{korean.documents + other.documents, korean.bytes + other.bytes,
                   korean.tokens + other.tokens};
  std::printf(
      "held-out documents (val fraction %g), bytes per token of the new tokenizer "
      "(Korean: at least half the letters Hangul):\n",
      opt.sources.val_fraction);
  korean.print("Korean");
  other.print("other");
  all.print("all");
}

}  // namespace

void add_tokenizer_train_command(CLI::App& app) {
  auto opt = std::make_shared<TokenizerTrainCliOptions>();
  CLI::App* cmd = app.add_subcommand("tokenizer-train", "Learn a byte-level BPE tokenizer from text");
  cmd->footer(
      "Inputs: text files (documents separated by blank lines), *.jsonl files (one JSON object per\n"
      "line) and directories (their *.txt, *.md and *.jsonl files). Documents held out by\n"
      "--val-fraction are not learned from; the bytes per token on them is printed at the end.\n"
      "Example:\n"
      "  nuri tokenizer-train -o tok.json --vocab-size 8192 texts/ more.jsonl");
  cmd->add_option("inputs", opt->inputs, "Text files, *.jsonl files or directories")
      ->required()
      ->expected(1, -1);
  cmd->add_option("-o,--out", opt->out, "Where to write the tokenizer (tokenizer.json for --format hf)")
      ->required();
  cmd->add_option("--format", opt->format,
                  "hf: Hugging Face tokenizer.json; gpt2: a directory with encoder.json and vocab.bpe; "
                  "tiktoken: a .tiktoken file")
      ->capture_default_str()
      ->check(CLI::IsMember({"hf", "gpt2", "tiktoken"}));
  cmd->add_option("--vocab-size", opt->train.vocab_size,
                  "Tokens in all: 256 bytes + learned merges + special tokens")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--pattern", opt->train.pattern, "Pre-tokenization: gpt2, cl100k, o200k or a PCRE2 regex")
      ->capture_default_str();
  cmd->add_option("--normalization", opt->normalization, "Unicode normalization applied before splitting")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "nfc", "nfkc"}));
  cmd->add_option("--special", opt->extra_specials,
                  "A special token to add after <|endoftext|> <|bos|> <|eos|> <|pad|> (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--jsonl-field", opt->sources.jsonl_field, "The document's field in *.jsonl lines")
      ->capture_default_str();
  cmd->add_option("--documents", opt->documents, "How text files split into documents")
      ->capture_default_str()
      ->check(CLI::IsMember({"blank-line", "line", "file"}));
  cmd->add_option(
         "--val-fraction", opt->sources.val_fraction,
         "Fraction of documents held out, chosen by a hash of their text as nuri tokenize chooses its "
         "validation split (same default: the tokenizer never sees those documents)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-frequency", opt->train.min_frequency, "A pair seen fewer times is never merged")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--max-pieces", opt->train.max_pieces,
                  "Most distinct pre-tokenized pieces held in memory; the rarest are dropped beyond it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", opt->train.threads, "CPU threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("-q,--quiet", opt->quiet, "No progress bars or summary on stderr");
  cmd->callback([opt, cmd] {
    check_writable(opt->out, opt->format == "gpt2");
    if (opt->format == "gpt2") {
      // GPT-2's encoder.json + vocab.bpe imply the GPT-2 pattern, no normalization and
      // <|endoftext|> as the only special token: those become the defaults, and others are errors.
      const bool pattern_given = cmd->get_option("--pattern")->count() > 0;
      const bool normalization_given = cmd->get_option("--normalization")->count() > 0;
      NURI_CHECK(!pattern_given || pretokenize_pattern(opt->train.pattern) == pretokenize_pattern("gpt2"),
                 config, "tokenizer-train",
                 "--format gpt2 implies --pattern gpt2 (GPT-2's files carry no pattern); "
                 "drop --pattern "
                     << opt->train.pattern << " or write --format hf");
      NURI_CHECK(
          !normalization_given || opt->normalization == "none", config, "tokenizer-train",
          "--format gpt2 implies --normalization none (GPT-2's files carry none); drop --normalization "
              << opt->normalization << " or write --format hf");
      NURI_CHECK(opt->extra_specials.empty(), config, "tokenizer-train",
                 "--format gpt2 carries <|endoftext|> as its only special token; drop --special or write "
                 "--format hf");
      opt->train.pattern = "gpt2";
      opt->normalization = "none";
      opt->train.special_tokens = {"<|endoftext|>"};
    }
    opt->train.normalization = parse_normalization(opt->normalization);
    opt->train.progress = !opt->quiet;
    for (const std::string& s : opt->extra_specials) opt->train.special_tokens.push_back(s);
    opt->sources.text_documents = parse_document_split(opt->documents);

    const BpeTokenizer tokenizer = train_bpe(opt->inputs, opt->sources, opt->train);
    if (opt->format == "gpt2") {
      fs::create_directories(opt->out);
      tokenizer.save_gpt2_files(opt->out);
    } else if (opt->format == "tiktoken") {
      tokenizer.save_tiktoken_file(opt->out);
    } else {
      tokenizer.save_hf_json(opt->out);
    }
    const std::string& pattern = opt->train.pattern;
    const bool named = pattern == "gpt2" || pattern == "cl100k" || pattern == "o200k";
    std::printf(
        "wrote %s (%s): vocab %d (%zu merges, %zu special tokens), pattern %s, normalization %s, "
        "hash %016llx\n",
        opt->out.c_str(), opt->format.c_str(), tokenizer.vocab_size(), tokenizer.model().merges.size(),
        tokenizer.model().specials.size(), named ? pattern.c_str() : "(custom regex)",
        to_string(opt->train.normalization), (unsigned long long)tokenizer.hash());
    if (opt->format == "tiktoken") {
      std::printf(
          "note: a .tiktoken file holds the ranks only: whoever loads it must give pattern %s, "
          "normalization %s and the %zu special tokens (after rank %d) themselves\n",
          named ? pattern.c_str() : "(the same regex)", to_string(opt->train.normalization),
          tokenizer.model().specials.size(),
          tokenizer.vocab_size() - int(tokenizer.model().specials.size()) - 1);
    }
    std::fflush(stdout);
    if (opt->sources.val_fraction > 0) report_held_out(tokenizer, *opt);
  });
}

}  // namespace nuri::cli

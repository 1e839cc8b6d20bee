// Pattern names, their translation to PCRE2, and the PCRE2 matcher (see pretokenize.hpp).
#include "tokenizer/pretokenize.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <map>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"

namespace nuri::bpe {

namespace {

const char* const kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kCl100k =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kO200k =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Unicode White_Space (what Rust regex's \s matches).
const char* const kWhiteSpace =
    R"(\x{9}-\x{D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Code points in each class under Unicode 16 (tiktoken) but not under PCRE2 10.42's Unicode 14,
// found by testing every code point against tiktoken 1.0.22 (see pretokenize.hpp).
const std::map<std::string, std::string>& class_additions() {
  static const std::map<std::string, std::string> additions = {
      {"L",
       R"(\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D4A}-\x{10D65}\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{11F02}\x{11F04}-\x{11F10}\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D}\x{16D40}-\x{16D6C}\x{18CFF}\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D}\x{1E4D0}-\x{1E4EB}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{2B739}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{323AF})"},
      {"N",
       R"(\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11F50}-\x{11F59}\x{16130}-\x{16139}\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9}\x{1E5F1}-\x{1E5FA})"},
      {"M",
       R"(\x{897}\x{CF3}\x{ECE}\x{10D69}-\x{10D6D}\x{10EFC}-\x{10EFF}\x{11241}\x{113B8}-\x{113C0}\x{113C2}\x{113C5}\x{113C7}-\x{113CA}\x{113CC}-\x{113D0}\x{113D2}\x{113E1}-\x{113E2}\x{11F00}-\x{11F01}\x{11F03}\x{11F34}-\x{11F3A}\x{11F3E}-\x{11F42}\x{11F5A}\x{13440}\x{13447}-\x{13455}\x{1611E}-\x{1612F}\x{1E08F}\x{1E4EC}-\x{1E4EF}\x{1E5EE}-\x{1E5EF})"},
      {"Lu", R"(\x{1C89}\x{A7CB}-\x{A7CC}\x{A7DA}\x{A7DC}\x{10D50}-\x{10D65})"},
      {"Ll", R"(\x{1C8A}\x{A7CD}\x{A7DB}\x{10D70}-\x{10D85}\x{1DF25}-\x{1DF2A})"},
      {"Lt", ""},
      {"Lm",
       R"(\x{10D4E}\x{10D6F}\x{16D40}-\x{16D42}\x{16D6B}-\x{16D6C}\x{1E030}-\x{1E06D}\x{1E4EB})"},
      {"Lo",
       R"(\x{105C0}-\x{105F3}\x{10D4A}-\x{10D4D}\x{10D4F}\x{10EC2}-\x{10EC4}\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{11F02}\x{11F04}-\x{11F10}\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D}\x{16D43}-\x{16D6A}\x{18CFF}\x{1B132}\x{1B155}\x{1E4D0}-\x{1E4EA}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{2B739}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{323AF})"},
  };
  return additions;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

pcre2_code* compile_or_throw(const std::string& pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    NURI_THROW(config, "tokenizer.pattern",
               "the pre-tokenization pattern does not compile (PCRE2): " << pcre2_message(error)
                   << " at byte offset " << offset << " of '" << pattern
                   << "'; use a known name (gpt2, cl100k, o200k) or fix the regex");
  }
  return code;
}

// Per-thread PCRE2 state: match data for one (whole-match) pair and a JIT stack that grows to
// 8 MiB, so long runs of one character class cannot exhaust the default 32 KiB.
struct ThreadMatchState {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  ThreadMatchState() {
    match_data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (!match_data || !context || !jit_stack) {
      NURI_THROW(internal, "tokenizer.pretokenize", "PCRE2 could not allocate match state");
    }
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_match_data_free(match_data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
  }
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

std::string reference_pattern(const std::string& name) {
  if (name == "gpt2") return kGpt2;
  if (name == "cl100k") return kCl100k;
  if (name == "o200k") return kO200k;
  return "";
}

std::string translate_pattern(const std::string& re) {
  const auto& additions = class_additions();
  std::string out;
  out.reserve(re.size() * 4);
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char c = re[i];
    if (c == '\\' && i + 1 < re.size()) {
      const char e = re[i + 1];
      if (e == 'p' && i + 2 < re.size() && re[i + 2] == '{') {
        const size_t close = re.find('}', i + 3);
        if (close != std::string::npos) {
          const std::string name = re.substr(i + 3, close - i - 3);
          const auto it = additions.find(name);
          if (it != additions.end()) {
            const std::string cls = "\\p{" + name + "}" + it->second;
            // Idempotent: a class already followed by its additions is left as it is.
            if (in_class && re.compare(close + 1, it->second.size(), it->second) == 0) {
              out += cls;
              i = close + it->second.size();
              continue;
            }
            out += in_class ? cls : "[" + cls + "]";
            i = close;
            continue;
          }
        }
      } else if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
        ++i;
        continue;
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
        ++i;
        continue;
      }
      out += c;
      out += e;
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < re.size() && re[i + 1] == '^') out += re[++i];
      if (i + 1 < re.size() && re[i + 1] == ']') out += re[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string known_pattern_name(const std::string& pcre_pattern) {
  for (const char* name : {"gpt2", "cl100k", "o200k"})
    if (pcre_pattern == translate_pattern(reference_pattern(name))) return name;
  return "";
}

void check_pattern(const std::string& pcre_pattern) {
  pcre2_code_free(compile_or_throw(pcre_pattern));
}

Pretokenizer::Pretokenizer(const std::string& pcre_pattern) {
  pcre2_code* code = compile_or_throw(pcre_pattern);
  code_ = code;
  // Without JIT (a platform PCRE2 lacks it for) matching falls back to the interpreter.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Pretokenizer::~Pretokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Pretokenizer::find(const char* s, size_t n, size_t pos, size_t& start, size_t& end) const {
  ThreadMatchState& state = thread_match_state();
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s);
  // The caller hands valid UTF-8 only, so PCRE2's own UTF check is skipped.
  const int rc = jit_ ? pcre2_jit_match(code, subject, n, pos, PCRE2_NOTEMPTY, state.match_data,
                                        state.context)
                      : pcre2_match(code, subject, n, pos, PCRE2_NOTEMPTY | PCRE2_NO_UTF_CHECK,
                                    state.match_data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    NURI_THROW(config, "tokenizer.pretokenize",
               "PCRE2 failed matching the pre-tokenization pattern at byte offset "
                   << pos << " of a " << n << "-byte text: " << pcre2_message(rc)
                   << "; simplify the pattern (e.g. fewer nested repeats)");
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
  start = ovector[0];
  end = ovector[1];
  return true;
}

}  // namespace nuri::bpe

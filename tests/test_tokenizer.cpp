// The byte-level BPE tokenizer (nuri/tokenizer.hpp): round trips on corpus text, random UTF-8 and
// invalid bytes; special tokens; the per-piece merge loops against a naive reference BPE; file
// format round trips and malformed files; NFC/NFKC; the content hash; encode_batch.
// Parity with tiktoken, gpt-3-encoder and Hugging Face is tests/tokenizer_parity.sh.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "test_util.hpp"
#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"
#include "tokenizer/byte_unicode.hpp"
#include "tokenizer/normalize.hpp"

using nuri::BpeModel;
using nuri::BpeTokenizer;
using nuri::Error;
using nuri::ErrorKind;
using nuri::testing::expect_error;
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path, size_t limit = std::string::npos) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  if (text.size() > limit) text.resize(limit);
  return text;
}

std::string corpus(const char* name, size_t limit = std::string::npos) {
  return read_text(std::string(NURI_CORPUS_DIR) + "/" + name + ".txt", limit);
}

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("nuri_test_tokenizer_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A small BPE learned naively from text split at spaces (merge the most frequent pair, ties to the
// smallest pair), so tests have realistic merges without fixture files.
BpeModel learn_model(const std::string& text, int n_merges, bool with_merges = true) {
  BpeModel model;
  for (int b = 0; b < 256; ++b) model.tokens.push_back(std::string(1, char(b)));
  std::map<std::string, int64_t> words;
  size_t start = 0;
  for (size_t i = 1; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ' ' || text[i] == '\n') {
      if (i > start) words[text.substr(start, i - start)]++;
      start = i;
    }
  }
  std::vector<std::pair<std::vector<int32_t>, int64_t>> seqs;
  for (const auto& [w, count] : words) {
    std::vector<int32_t> ids;
    for (unsigned char c : w) ids.push_back(c);
    seqs.emplace_back(ids, count);
  }
  for (int m = 0; m < n_merges; ++m) {
    std::map<std::pair<int32_t, int32_t>, int64_t> counts;
    for (const auto& [ids, count] : seqs)
      for (size_t i = 0; i + 1 < ids.size(); ++i) counts[{ids[i], ids[i + 1]}] += count;
    if (counts.empty()) break;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    const auto pair = best->first;
    const int32_t id = int32_t(model.tokens.size());
    model.tokens.push_back(model.tokens[size_t(pair.first)] + model.tokens[size_t(pair.second)]);
    model.merges.push_back(pair);
    for (auto& [ids, count] : seqs) {
      std::vector<int32_t> next;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == pair.first && ids[i + 1] == pair.second) {
          next.push_back(id);
          ++i;
        } else {
          next.push_back(ids[i]);
        }
      }
      ids = next;
    }
  }
  if (!with_merges) model.merges.clear();
  model.pattern = nuri::pretokenize_pattern("gpt2");
  model.specials = {{"<|endoftext|>", int32_t(model.tokens.size())}};
  model.tokens.push_back("<|endoftext|>");
  return model;
}

const BpeModel& english_korean_model() {
  static const BpeModel model =
      learn_model(corpus("en_moby_dick", 60000) + corpus("ko_prose", 60000), 400);
  return model;
}

// Naive reference BPE of one piece: merge the lowest-ranked adjacent pair (leftmost on ties).
std::vector<int32_t> reference_bpe(const BpeModel& model, const std::string& piece) {
  std::map<std::string, int32_t> index;
  for (size_t id = 0; id < model.tokens.size(); ++id) index.emplace(model.tokens[id], int32_t(id));
  std::map<std::pair<int32_t, int32_t>, int32_t> rank;
  for (size_t r = 0; r < model.merges.size(); ++r) rank.emplace(model.merges[r], int32_t(r));
  std::vector<std::string> parts;
  for (char c : piece) parts.push_back(std::string(1, c));
  if (model.merges.empty() && index.count(piece)) return {index.at(piece)};
  while (parts.size() > 1) {
    int32_t best = INT32_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      int32_t r = INT32_MAX;
      if (model.merges.empty()) {
        const auto it = index.find(parts[i] + parts[i + 1]);
        if (it != index.end()) r = it->second;
      } else {
        const auto it = rank.find({index.at(parts[i]), index.at(parts[i + 1])});
        if (it != rank.end()) r = it->second;
      }
      if (r < best) best = r, at = i;
    }
    if (best == INT32_MAX) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + long(at) + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& p : parts) ids.push_back(index.at(p));
  return ids;
}

std::string random_utf8(std::mt19937& rng, int n_chars) {
  std::string s;
  for (int i = 0; i < n_chars; ++i) {
    uint32_t cp;
    switch (rng() % 5) {
      case 0: cp = 0x20 + rng() % 95; break;
      case 1: cp = 0xAC00 + rng() % 11172; break;
      case 2: cp = rng() % 0x800; break;
      case 3: cp = 0x1F300 + rng() % 0x700; break;
      default: cp = rng() % 0x110000; break;
    }
    if (cp >= 0xD800 && cp < 0xE000) cp = ' ';
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 63))};
    } else if (cp < 0x10000) {
      s += {char(0xE0 | (cp >> 12)), char(0x80 | ((cp >> 6) & 63)), char(0x80 | (cp & 63))};
    } else {
      s += {char(0xF0 | (cp >> 18)), char(0x80 | ((cp >> 12) & 63)), char(0x80 | ((cp >> 6) & 63)),
            char(0x80 | (cp & 63))};
    }
  }
  return s;
}


}  // namespace

TEST_CASE("bpe: decode(encode(x)) == x on corpus text, random UTF-8 and invalid bytes") {
  const BpeTokenizer tok(english_korean_model());
  for (const char* name : {"ko_prose", "en_brown", "en_moby_dick"}) {
    const std::string text = corpus(name);
    const auto ids = tok.encode(text);
    INFO(name);
    CHECK(ids.size() < text.size());
    CHECK(tok.decode(ids) == text);
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const std::string s = random_utf8(rng, 1 + int(rng() % 60));
    REQUIRE(nuri::first_invalid_utf8(s) == std::string::npos);
    REQUIRE(tok.decode(tok.encode(s)) == s);
  }
  for (int i = 0; i < 2000; ++i) {
    std::string s(1 + rng() % 40, '\0');
    for (char& c : s) c = char(rng() % 4 == 0 ? rng() % 256 : 0x61 + rng() % 3);
    if (rng() % 2) s += "\xED\xA0\x80 \xC0\xAF \xF4\x90\x80\x80 \xE0\x80";  // surrogate, overlong, > U+10FFFF, truncated
    REQUIRE(tok.decode(tok.encode(s)) == s);
  }
  // Byte fallback: each invalid byte is its own piece and becomes its byte token.
  CHECK(tok.encode("\xFF") == std::vector<int32_t>{0xFF});
  CHECK(tok.encode("a\xC3") == std::vector<int32_t>{'a', 0xC3});
}

TEST_CASE("bpe: per-piece merges match a naive reference, short and long pieces, both rules") {
  for (bool with_merges : {true, false}) {
    BpeModel model = learn_model(corpus("en_moby_dick", 30000) + " 0000000000 aaaaaaaa", 300, with_merges);
    model.pattern = "(?s).+";  // the whole text is one piece
    model.specials.clear();
    model.eot = "";
    const BpeTokenizer tok(model);
    std::mt19937 rng(11);
    const std::string alphabet = "aeinorst h0";
    for (int i = 0; i < 400; ++i) {
      const size_t n = i < 300 ? 1 + rng() % 40 : 129 + rng() % 600;  // short and heap-based
      std::string s(n, ' ');
      for (char& c : s) c = alphabet[rng() % alphabet.size()];
      INFO("merges: " << with_merges << ", piece: " << s);
      REQUIRE(tok.encode(s) == reference_bpe(model, s));
    }
  }
}

TEST_CASE("bpe: special tokens are text for encode and ids for encode_with_specials") {
  const BpeTokenizer tok(english_korean_model());
  const int32_t eot = tok.eot_id();
  REQUIRE(eot == tok.special_id("<|endoftext|>"));
  REQUIRE(tok.special_id("<|nope|>") == -1);
  const std::string text = "end<|endoftext|>start <|endoftext|><|endoftext|>";
  const auto plain = tok.encode(text);
  CHECK(std::find(plain.begin(), plain.end(), eot) == plain.end());
  CHECK(tok.decode(plain) == text);
  const auto with = tok.encode_with_specials(text);
  CHECK(std::count(with.begin(), with.end(), eot) == 3);
  CHECK(tok.decode(with) == text);
  CHECK(tok.encode_with_specials("<|endoftext|>") == std::vector<int32_t>{eot});
  expect_error([&] { tok.decode({0, tok.vocab_size()}); }, ErrorKind::data, {"position 1"});
  expect_error([&] { tok.token_bytes(-1); }, ErrorKind::data, {"-1"});
}

TEST_CASE("bpe: encode_batch equals encode") {
  const BpeTokenizer tok(english_korean_model());
  const std::string text = corpus("ko_prose", 200000) + corpus("en_brown", 200000);
  std::vector<std::string> texts;
  for (size_t i = 0; i < text.size(); i += 5000) texts.push_back(text.substr(i, 5000 + i % 77));
  const auto batch = tok.encode_batch(texts, 2);
  REQUIRE(batch.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) REQUIRE(batch[i] == tok.encode(texts[i]));
}

TEST_CASE("bpe: model validation names what is wrong") {
  BpeModel model = english_korean_model();
  SECTION("a missing byte token") {
    model.tokens[65] = "AA-not-a-byte";
    expect_error([&] { BpeTokenizer t(model); }, ErrorKind::data, {"byte 0x41"});
  }
  SECTION("a duplicate token") {
    model.tokens[300] = model.tokens[301];
    expect_error([&] { BpeTokenizer t(model); }, ErrorKind::data, {"300", "301"});
  }
  SECTION("a merge whose result is not a token") {
    model.merges.push_back({'q', 'z'});
    expect_error([&] { BpeTokenizer t(model); }, ErrorKind::data, {"not a token"});
  }
  SECTION("a special id out of range") {
    model.specials.push_back({"<|x|>", 1 << 30});
    expect_error([&] { BpeTokenizer t(model); }, ErrorKind::data, {"<|x|>"});
  }
  SECTION("a pattern that does not compile") {
    expect_error([&] { nuri::pretokenize_pattern("(unclosed"); }, ErrorKind::config, {"offset"});
  }
}

TEST_CASE("bpe: NFC and NFKC normalization") {
  using nuri::Normalization;
  using nuri::bpe::normalize;
  CHECK(normalize("e\xCC\x81", Normalization::nfc) == "\xC3\xA9");                  // e + U+0301 -> é
  CHECK(normalize("\xEF\xAC\x81", Normalization::nfc) == "\xEF\xAC\x81");           // ﬁ stays
  CHECK(normalize("\xEF\xAC\x81", Normalization::nfkc) == "fi");                    // ﬁ -> fi
  CHECK(normalize("\xE2\x91\xA0\xEF\xBC\xA1", Normalization::nfkc) == "1A");        // ① Ａ -> 1A
  CHECK(normalize("\xC2\xA0", Normalization::nfkc) == " ");                         // U+00A0 -> space
  const std::string hangul = "\xED\x95\x9C";                                        // 한
  const std::string jamo = "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB";                   // ᄒ ᅡ ᆫ
  CHECK(normalize(jamo, Normalization::nfc) == hangul);
  CHECK(normalize(jamo, Normalization::none) == jamo);
  CHECK(normalize("a\xFF" + jamo, Normalization::nfc) == "a\xFF" + hangul);         // invalid byte kept
  BpeModel model = english_korean_model();
  model.normalization = Normalization::nfc;
  const BpeTokenizer nfc(model);
  CHECK(nfc.encode(jamo) == nfc.encode(hangul));
  model.normalization = Normalization::nfkc;
  const BpeTokenizer nfkc(model);
  CHECK(nfkc.encode("\xEF\xAC\x81ne") == nfkc.encode("fine"));
  CHECK(nuri::parse_normalization("nfkc") == Normalization::nfkc);
  expect_error([] { nuri::parse_normalization("nfd"); }, ErrorKind::config, {"nfd", "nfc"});
}

TEST_CASE("bpe: the hash changes when anything changes") {
  const BpeModel base = english_korean_model();
  const uint64_t h = BpeTokenizer(base).hash();
  CHECK(BpeTokenizer(base, "another name").hash() == h);
  std::vector<BpeModel> variants(6, base);
  std::swap(variants[0].tokens[300], variants[0].tokens[301]);  // merges then name other ids
  for (auto& [l, r] : variants[0].merges) {
    if (l == 300) l = 301; else if (l == 301) l = 300;
    if (r == 300) r = 301; else if (r == 301) r = 300;
  }
  variants[1].merges.pop_back();
  variants[1].tokens.erase(variants[1].tokens.end() - 2);  // the last merge's token
  variants[1].specials[0].id -= 1;
  variants[2].pattern = nuri::pretokenize_pattern("o200k");
  variants[3].normalization = nuri::Normalization::nfc;
  variants[4].tokens.push_back("<|pad|>");
  variants[4].specials.push_back({"<|pad|>", int32_t(variants[4].tokens.size() - 1)});
  variants[5].eot = "";
  for (size_t i = 0; i < variants.size(); ++i) {
    INFO("variant " << i);
    CHECK(BpeTokenizer(variants[i]).hash() != h);
  }
}

TEST_CASE("bpe: format round trips keep tokens, merges and hash") {
  const fs::path dir = temp_dir("formats");
  const BpeTokenizer gpt2(english_korean_model());
  const std::string sample = corpus("ko_prose", 20000) + corpus("en_brown", 20000);

  gpt2.save_gpt2_files((dir / "gpt2").string());
  const BpeTokenizer from_gpt2 = BpeTokenizer::load((dir / "gpt2").string());
  CHECK(from_gpt2.model().tokens == gpt2.model().tokens);
  CHECK(from_gpt2.model().merges == gpt2.model().merges);
  CHECK(from_gpt2.hash() == gpt2.hash());

  gpt2.save_hf_json((dir / "gpt2.json").string());
  const BpeTokenizer from_hf = BpeTokenizer::load((dir / "gpt2.json").string());
  CHECK(from_hf.model().merges == gpt2.model().merges);
  CHECK(from_hf.hash() == gpt2.hash());

  // The tiktoken rule: no explicit merges.
  BpeModel rule = english_korean_model();
  rule.merges.clear();
  rule.pattern = nuri::pretokenize_pattern("o200k");
  const BpeTokenizer tiktoken(rule);
  tiktoken.save_tiktoken_file((dir / "t.tiktoken").string());
  const BpeTokenizer from_tiktoken = BpeTokenizer::load((dir / "t.tiktoken").string(), "o200k");
  CHECK(from_tiktoken.model().tokens == tiktoken.model().tokens);
  CHECK(from_tiktoken.hash() == tiktoken.hash());
  CHECK(from_tiktoken.encode(sample) == tiktoken.encode(sample));
  // A rank beyond the file's lines is refused before anything is sized by it (found by
  // fuzz_formats: a two-line file with rank 176554555 ran out of memory).
  {
    std::ofstream bad(dir / "huge_rank.tiktoken");
    bad << "AA== 0\nAA== 176554555\n";
  }
  expect_error([&] { BpeTokenizer::from_tiktoken_file((dir / "huge_rank.tiktoken").string(), "o200k", {}); },
               ErrorKind::data, {"huge_rank.tiktoken", "line 2", "rank 176554555", "no gaps"});

  tiktoken.save_hf_json((dir / "t.json").string());
  const BpeTokenizer tiktoken_hf = BpeTokenizer::from_hf_json((dir / "t.json").string());
  CHECK(tiktoken_hf.model().merges.empty());
  CHECK(tiktoken_hf.hash() == tiktoken.hash());

  // Normalization and a custom regex survive tokenizer.json.
  BpeModel custom = english_korean_model();
  custom.normalization = nuri::Normalization::nfkc;
  custom.pattern = nuri::pretokenize_pattern(R"(\p{L}+|\p{N}|[^\p{L}\p{N}]+)");
  const BpeTokenizer custom_tok(custom);
  custom_tok.save_hf_json((dir / "custom.json").string());
  CHECK(BpeTokenizer::from_hf_json((dir / "custom.json").string()).hash() == custom_tok.hash());
  // GPT-2's files cannot carry a normalization: refused rather than silently dropped.
  expect_error([&] { custom_tok.save_gpt2_files((dir / "bad").string()); }, ErrorKind::config,
                {"tokenizer.json"});
  // Bytes <-> GPT-2 spelling.
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += char(b);
  std::string back;
  REQUIRE(nuri::bpe::unicode_to_bytes(nuri::bpe::bytes_to_unicode(bytes), back));
  CHECK(back == bytes);
  CHECK(nuri::bpe::bytes_to_unicode(" ") == "\xC4\xA0");  // Ġ
}

TEST_CASE("bpe: malformed files give Error(data/io) naming the file and line") {
  const fs::path dir = temp_dir("malformed");
  const BpeTokenizer tok(english_korean_model());
  tok.save_gpt2_files((dir / "good").string());
  tok.save_hf_json((dir / "good.json").string());
  const std::string encoder = read_text((dir / "good" / "encoder.json").string());
  const std::string vocab = read_text((dir / "good" / "vocab.bpe").string());

  SECTION("a truncated encoder.json") {
    fs::create_directories(dir / "truncated");
    write(dir / "truncated" / "encoder.json", encoder.substr(0, encoder.size() / 2));
    write(dir / "truncated" / "vocab.bpe", vocab);
    expect_error([&] { BpeTokenizer::load((dir / "truncated").string()); }, ErrorKind::data,
                  {"encoder.json", "line", "truncated"});
  }
  SECTION("a truncated tokenizer.json") {
    const std::string json = read_text((dir / "good.json").string());
    write(dir / "cut.json", json.substr(0, json.size() - 100));
    expect_error([&] { BpeTokenizer::load((dir / "cut.json").string()); }, ErrorKind::data,
                  {"cut.json", "line"});
  }
  SECTION("a merge naming an unknown token") {
    fs::create_directories(dir / "unknown");
    write(dir / "unknown" / "encoder.json", encoder);
    std::string lines = vocab;
    lines.insert(lines.find('\n', lines.find('\n') + 1) + 1, "zzz\xC4\xA0 qqq\n");  // line 3
    write(dir / "unknown" / "vocab.bpe", lines);
    expect_error([&] { BpeTokenizer::load((dir / "unknown").string()); }, ErrorKind::data,
                  {"vocab.bpe", "line 3", "not in"});
  }
  SECTION("a merge naming an unknown token in tokenizer.json") {
    std::string json = read_text((dir / "good.json").string());
    const size_t merges = json.find("\"merges\":[\"");
    REQUIRE(merges != std::string::npos);
    json.insert(merges + 10, "\"zzz qqq\",");
    write(dir / "bad_merge.json", json);
    expect_error([&] { BpeTokenizer::load((dir / "bad_merge.json").string()); }, ErrorKind::data,
                  {"bad_merge.json", "model.merges[0]"});
  }
  SECTION("a bad base64 line") {
    tok.save_tiktoken_file((dir / "t.tiktoken").string());
    std::string lines = read_text((dir / "t.tiktoken").string());
    const size_t line5 = [&] {
      size_t at = 0;
      for (int i = 0; i < 4; ++i) at = lines.find('\n', at) + 1;
      return at;
    }();
    lines.replace(line5, lines.find(' ', line5) - line5, "!!notbase64");
    write(dir / "bad.tiktoken", lines);
    expect_error([&] { BpeTokenizer::load((dir / "bad.tiktoken").string()); }, ErrorKind::data,
                  {"bad.tiktoken", "line 5", "base64"});
  }
  SECTION("a missing vocab.bpe") {
    fs::create_directories(dir / "novocab");
    write(dir / "novocab" / "encoder.json", encoder);
    expect_error([&] { BpeTokenizer::load((dir / "novocab").string()); }, ErrorKind::io,
                  {"novocab", "vocab.bpe"});
    expect_error([&] {
      BpeTokenizer::from_gpt2_files((dir / "novocab" / "encoder.json").string(),
                                    (dir / "novocab" / "vocab.bpe").string());
    }, ErrorKind::io, {"vocab.bpe"});
  }
  SECTION("a missing file") {
    expect_error([&] { BpeTokenizer::load((dir / "none.json").string()); }, ErrorKind::io,
                  {"none.json"});
  }
}

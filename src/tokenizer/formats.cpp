// Tokenizer files: GPT-2's encoder.json + vocab.bpe, tiktoken rank files (base64 token + rank per
// line) and Hugging Face tokenizer.json for byte-level BPE. Readers name the file and line (or
// JSON path) of malformed content; writers name the file they could not write.
//
// Hugging Face files: a pre_tokenizer of ByteLevel{use_regex: true} means the GPT-2 pattern;
// Sequence[Split{Regex, Isolated}, ByteLevel{use_regex: false}] means that regex (written in the
// references' dialect and translated for PCRE2, see pretokenize.hpp). A tokenizer without
// explicit merges (tiktoken rule) is written with the merges the rule implies and
// ignore_merges: true (a piece that is a token is that token, as in tiktoken); reading such a
// file back gives the tiktoken rule again when the merges are exactly the implied ones.
// All added_tokens become special tokens (matched only by encode_with_specials).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"
#include "tokenizer/bpe_impl.hpp"
#include "tokenizer/byte_unicode.hpp"
#include "tokenizer/pretokenize.hpp"

namespace nuri {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

const char* kEndOfText = "<|endoftext|>";

// 1-based line of byte `offset` in `text`.
size_t line_of(const std::string& text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + size_t(std::count(text.begin(), text.begin() + long(offset), '\n'));
}

json parse_json(const std::string& path, const char* op) {
  const std::string text = bpe::read_file(path, op);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    NURI_THROW(data, op, "'" << path << "' is not valid JSON (line " << line_of(text, e.byte)
                             << ", byte offset " << e.byte << "): " << e.what()
                             << "; is the file truncated?");
  } catch (const json::exception& e) {  // e.g. a number too large for any type
    NURI_THROW(data, op, "'" << path << "' cannot be read as JSON: " << e.what());
  }
}

std::string escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(char(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

// --- base64 (RFC 4648, padded) -----------------------------------------------------------------

const char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                       uint8_t(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kBase64[(v >> (6 * k)) & 63]);
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    out += {kBase64[(v >> 18) & 63], kBase64[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8);
    out += {kBase64[(v >> 18) & 63], kBase64[(v >> 12) & 63], kBase64[(v >> 6) & 63], '='};
  }
  return out;
}

bool base64_decode(std::string_view text, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[uint8_t(kBase64[i])] = int8_t(i);
    return t;
  }();
  out.clear();
  if (text.empty() || text.size() % 4 != 0) return false;
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int padding = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + size_t(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++padding;
      } else {
        if (padding > 0) return false;  // data after padding
        v[k] = table[uint8_t(c)];
        if (v[k] < 0) return false;
      }
    }
    const uint32_t w = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(char(w >> 16));
    if (padding < 2) out.push_back(char((w >> 8) & 0xFF));
    if (padding < 1) out.push_back(char(w & 0xFF));
  }
  return true;
}

// Specials by text: the id of a token with those bytes already present, else appended.
void add_specials(BpeModel& model, const std::vector<std::string>& specials) {
  for (const std::string& text : specials) {
    const auto it = std::find(model.tokens.begin(), model.tokens.end(), text);
    const int32_t id = int32_t(it - model.tokens.begin());
    if (it == model.tokens.end()) model.tokens.push_back(text);
    model.specials.push_back({text, id});
  }
}

// The end-of-text token of a file format that does not name one.
std::string default_eot(const BpeModel& model) {
  for (const SpecialToken& s : model.specials)
    if (s.text == kEndOfText) return s.text;
  return model.specials.empty() ? std::string() : model.specials.front().text;
}

// Merges to write: the model's own, or those the tiktoken rule implies.
std::vector<std::pair<int32_t, int32_t>> merges_to_write(const BpeTokenizer& t) {
  return t.model().merges.empty() ? bpe::implied_merges(t) : t.model().merges;
}

}  // namespace

// --- GPT-2 ---------------------------------------------------------------------------------------

BpeTokenizer BpeTokenizer::from_gpt2_files(const std::string& encoder_json,
                                           const std::string& vocab_bpe) try {
  const char* op = "tokenizer.load_gpt2";
  const json encoder = parse_json(encoder_json, op);
  NURI_CHECK(encoder.is_object(), data, op,
             "'" << encoder_json << "' must hold a JSON object {token: id}");
  BpeModel model;
  model.tokens.assign(encoder.size(), std::string());
  std::vector<bool> filled(encoder.size(), false);
  std::map<std::string, int32_t, std::less<>> ids;  // GPT-2 spelling -> id
  std::string bytes;
  for (auto it = encoder.begin(); it != encoder.end(); ++it) {
    NURI_CHECK(it.value().is_number_integer(), data, op,
               "'" << encoder_json << "': the id of token \"" << escaped(it.key())
                   << "\" is not an integer");
    const int64_t id = it.value().get<int64_t>();
    NURI_CHECK(id >= 0 && size_t(id) < encoder.size() && !filled[size_t(id)], data, op,
               "'" << encoder_json << "': token \"" << escaped(it.key()) << "\" has id " << id
                   << ", which is repeated or outside [0, " << encoder.size()
                   << "); ids must be 0..n-1, each once");
    if (!bpe::unicode_to_bytes(it.key(), bytes)) {
      NURI_THROW(data, op, "'" << encoder_json << "': token \"" << escaped(it.key())
                               << "\" (id " << id
                               << ") is not in GPT-2's byte-to-unicode spelling");
    }
    model.tokens[size_t(id)] = bytes;
    filled[size_t(id)] = true;
    ids.emplace(it.key(), int32_t(id));
  }
  const std::string text = bpe::read_file(vocab_bpe, op);
  std::istringstream lines(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    NURI_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               data, op,
               "'" << vocab_bpe << "' line " << line_no << ": expected two tokens separated by one "
                   << "space, got \"" << escaped(line) << "\"");
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    const auto l = ids.find(left), r = ids.find(right), m = ids.find(left + right);
    NURI_CHECK(l != ids.end() && r != ids.end(), data, op,
               "'" << vocab_bpe << "' line " << line_no << ": merge \"" << escaped(line)
                   << "\" names a token that is not in '" << encoder_json
                   << "'; are the two files from the same tokenizer?");
    NURI_CHECK(m != ids.end(), data, op,
               "'" << vocab_bpe << "' line " << line_no << ": merge \"" << escaped(line)
                   << "\" makes \"" << escaped(left + right) << "\", which is not in '"
                   << encoder_json << "'");
    model.merges.emplace_back(l->second, r->second);
  }
  model.pattern = pretokenize_pattern("gpt2");
  if (ids.count(kEndOfText)) add_specials(model, {kEndOfText});
  model.eot = default_eot(model);
  return BpeTokenizer(std::move(model), fs::path(encoder_json).parent_path().filename().string());
} catch (const json::exception& e) {
  // A value of the wrong JSON type deep in the file (nlohmann's own checks): still Error(data).
  NURI_THROW(data, "tokenizer.load_gpt2", "'" << encoder_json << "': unexpected JSON content (" << e.what()
                                << "); is this the right file?");
}

void BpeTokenizer::save_gpt2_files(const std::string& dir) const {
  const char* op = "tokenizer.save_gpt2";
  const BpeModel& m = model();
  NURI_CHECK(bpe::known_pattern_name(m.pattern) == "gpt2" && m.normalization == Normalization::none,
             config, op,
             "GPT-2's encoder.json + vocab.bpe imply the GPT-2 pattern and no normalization; "
             "tokenizer '" << name() << "' differs, so save it as tokenizer.json instead");
  for (const SpecialToken& s : m.specials) {
    NURI_CHECK(s.text == kEndOfText, config, op,
               "GPT-2's files carry only " << kEndOfText << " as a special token; tokenizer '"
                                           << name() << "' has '" << s.text
                                           << "': save it as tokenizer.json instead");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  ordered_json encoder = ordered_json::object();
  std::vector<std::string> spelled(m.tokens.size());
  for (size_t id = 0; id < m.tokens.size(); ++id) {
    spelled[id] = bpe::bytes_to_unicode(m.tokens[id]);
    encoder[spelled[id]] = id;
  }
  std::string vocab = "#version: 0.2\n";
  for (const auto& [l, r] : merges_to_write(*this))
    vocab += spelled[size_t(l)] + " " + spelled[size_t(r)] + "\n";
  bpe::write_file((fs::path(dir) / "encoder.json").string(), encoder.dump(), op);
  bpe::write_file((fs::path(dir) / "vocab.bpe").string(), vocab, op);
}

// --- tiktoken ------------------------------------------------------------------------------------

BpeTokenizer BpeTokenizer::from_tiktoken_file(const std::string& path, const std::string& pattern,
                                              const std::vector<std::string>& specials) {
  const char* op = "tokenizer.load_tiktoken";
  const std::string text = bpe::read_file(path, op);
  std::vector<std::string> by_rank;
  std::vector<bool> filled;
  // Ranks are 0..n-1 with n <= the lines: a larger rank is refused before anything is sized by it
  // (a one-line file saying rank 2^30 must not allocate 2^30 entries).
  const size_t max_lines = size_t(std::count(text.begin(), text.end(), '\n')) + 1;
  std::istringstream lines(text);
  std::string line, bytes;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    NURI_CHECK(space != std::string::npos, data, op,
               "'" << path << "' line " << line_no
                   << ": expected '<base64 token> <rank>', got \"" << escaped(line.substr(0, 80))
                   << "\"");
    NURI_CHECK(base64_decode(std::string_view(line).substr(0, space), bytes), data, op,
               "'" << path << "' line " << line_no << ": \"" << escaped(line.substr(0, space))
                   << "\" is not valid base64");
    const std::string rank_text = line.substr(space + 1);
    size_t used = 0;
    long long rank = -1;
    try {
      rank = std::stoll(rank_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    NURI_CHECK(used == rank_text.size() && used > 0 && rank >= 0 && rank < (1LL << 31), data, op,
               "'" << path << "' line " << line_no << ": rank \"" << escaped(rank_text)
                   << "\" is not a non-negative integer");
    NURI_CHECK(size_t(rank) < max_lines, data, op,
               "'" << path << "' line " << line_no << ": rank " << rank << " but the file has only " << max_lines
                   << " lines (ranks must be 0..n-1 with no gaps)");
    if (size_t(rank) >= by_rank.size()) {
      by_rank.resize(size_t(rank) + 1);
      filled.resize(size_t(rank) + 1, false);
    }
    NURI_CHECK(!filled[size_t(rank)], data, op,
               "'" << path << "' line " << line_no << ": rank " << rank << " appears twice");
    by_rank[size_t(rank)] = bytes;
    filled[size_t(rank)] = true;
  }
  for (size_t r = 0; r < filled.size(); ++r) {
    NURI_CHECK(filled[r], data, op,
               "'" << path << "': no token has rank " << r << " (ranks must be 0..n-1 with no gaps)");
  }
  NURI_CHECK(!by_rank.empty(), data, op, "'" << path << "' holds no tokens; is it empty?");
  BpeModel model;
  model.tokens = std::move(by_rank);
  model.pattern = pretokenize_pattern(pattern);
  add_specials(model, specials);
  model.eot = default_eot(model);
  return BpeTokenizer(std::move(model), fs::path(path).stem().string());
}

void BpeTokenizer::save_tiktoken_file(const std::string& path) const {
  const char* op = "tokenizer.save_tiktoken";
  const BpeModel& m = model();
  std::vector<bool> special(m.tokens.size(), false);
  for (const SpecialToken& s : m.specials) special[size_t(s.id)] = true;
  std::string out;
  out.reserve(m.tokens.size() * 12);
  bool seen_special = false;
  for (size_t id = 0; id < m.tokens.size(); ++id) {
    if (special[id]) {
      seen_special = true;
      continue;
    }
    NURI_CHECK(!seen_special, config, op,
               "tokenizer '" << name() << "': a tiktoken file needs the special tokens after all "
                             << "ranked ones, but token " << id << " follows a special token");
    out += base64_encode(m.tokens[id]);
    out += ' ';
    out += std::to_string(id);
    out += '\n';
  }
  bpe::write_file(path, out, op);
}

// --- Hugging Face tokenizer.json -----------------------------------------------------------------

BpeTokenizer BpeTokenizer::from_hf_json(const std::string& path) try {
  const char* op = "tokenizer.load_hf";
  const json root = parse_json(path, op);
  auto fail = [&](const std::string& where, const std::string& what) {
    NURI_THROW(data, op, "'" << path << "' at " << where << ": " << what);
  };
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object())
    fail("(top level)", "no \"model\" object; is this a Hugging Face tokenizer.json?");
  const json& model_json = root["model"];
  if (model_json.value("type", std::string("BPE")) != "BPE")
    fail("model.type", "\"" + model_json.value("type", std::string()) +
                           "\" is not supported; nuri reads byte-level BPE only");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model_json.contains(key) && !model_json[key].is_null() && model_json[key] != "")
      fail(std::string("model.") + key, "is set; nuri's byte-level BPE does not support it");
  if (model_json.value("byte_fallback", false))
    fail("model.byte_fallback", "is true; nuri reads byte-level BPE (ByteLevel pre-tokenizer) only");
  if (!model_json.contains("vocab") || !model_json["vocab"].is_object())
    fail("model.vocab", "missing or not an object {token: id}");
  if (!model_json.contains("merges") || !model_json["merges"].is_array())
    fail("model.merges", "missing or not an array");

  // Pre-tokenizer -> pattern.
  std::string pattern;
  const json& pre = root.value("pre_tokenizer", json());
  auto check_byte_level = [&](const json& p, const std::string& where) {
    if (p.value("add_prefix_space", false))
      fail(where + ".add_prefix_space", "is true; nuri does not add a prefix space");
  };
  if (pre.is_object() && pre.value("type", "") == "ByteLevel") {
    check_byte_level(pre, "pre_tokenizer");
    if (!pre.value("use_regex", true))
      fail("pre_tokenizer.use_regex", "is false with no Split before it; nothing splits the text");
    pattern = pretokenize_pattern("gpt2");
  } else if (pre.is_object() && pre.value("type", "") == "Sequence" &&
             pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
             pre["pretokenizers"].size() == 2) {
    const json& split = pre["pretokenizers"][0];
    const json& byte_level = pre["pretokenizers"][1];
    if (split.value("type", "") != "Split" || !split.contains("pattern") ||
        !split["pattern"].is_object() || !split["pattern"].contains("Regex") ||
        !split["pattern"]["Regex"].is_string())
      fail("pre_tokenizer.pretokenizers[0]", "expected a Split with a {\"Regex\": ...} pattern");
    if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
      fail("pre_tokenizer.pretokenizers[0]", "only behavior Isolated with invert false is supported");
    if (byte_level.value("type", "") != "ByteLevel" || byte_level.value("use_regex", true))
      fail("pre_tokenizer.pretokenizers[1]", "expected ByteLevel with use_regex false");
    check_byte_level(byte_level, "pre_tokenizer.pretokenizers[1]");
    const std::string regex = split["pattern"]["Regex"].get<std::string>();
    pattern = bpe::translate_pattern(regex);
    bpe::check_pattern(pattern);
  } else {
    fail("pre_tokenizer", "expected ByteLevel{use_regex: true} or Sequence[Split{Regex, Isolated}, "
                          "ByteLevel{use_regex: false}]");
  }

  // Normalizer.
  Normalization normalization = Normalization::none;
  const json& norm = root.value("normalizer", json());
  auto parse_norm = [&](const json& n, const std::string& where) {
    const std::string type = n.value("type", "");
    if (type == "NFC") return Normalization::nfc;
    if (type == "NFKC") return Normalization::nfkc;
    fail(where, "normalizer \"" + type + "\" is not supported (null, NFC or NFKC)");
    return Normalization::none;
  };
  if (norm.is_object()) {
    if (norm.value("type", "") == "Sequence" && norm.contains("normalizers") &&
        norm["normalizers"].is_array()) {
      if (norm["normalizers"].size() > 1) fail("normalizer", "a Sequence of more than one normalizer");
      if (norm["normalizers"].size() == 1)
        normalization = parse_norm(norm["normalizers"][0], "normalizer.normalizers[0]");
    } else {
      normalization = parse_norm(norm, "normalizer");
    }
  } else if (!norm.is_null()) {
    fail("normalizer", "expected null or an object");
  }

  // Added tokens: their content is their bytes.
  std::map<int64_t, std::string> added;
  std::vector<std::pair<std::string, int64_t>> added_order;
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    const json& list = root["added_tokens"];
    for (size_t i = 0; i < list.size(); ++i) {
      const json& a = list[i];
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        fail("added_tokens[" + std::to_string(i) + "]", "expected {\"id\": int, \"content\": string}");
      added[a["id"].get<int64_t>()] = a["content"].get<std::string>();
      added_order.emplace_back(a["content"].get<std::string>(), a["id"].get<int64_t>());
    }
  }

  // Vocabulary.
  const json& vocab = model_json["vocab"];
  int64_t max_id = added.empty() ? -1 : added.rbegin()->first;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      fail("model.vocab[\"" + escaped(it.key()) + "\"]", "id is not a non-negative integer");
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  if (max_id < 0 || max_id >= (int64_t(1) << 31)) fail("model.vocab", "empty or ids too large");
  BpeModel model;
  model.tokens.assign(size_t(max_id + 1), std::string());
  std::vector<bool> filled(size_t(max_id + 1), false);
  std::map<std::string, int32_t, std::less<>> ids;  // GPT-2 spelling -> id
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    const std::string where = "model.vocab[\"" + escaped(it.key()) + "\"]";
    if (filled[size_t(id)]) fail(where, "id " + std::to_string(id) + " is used twice");
    if (added.count(id)) {
      bytes = added[id];
    } else if (!bpe::unicode_to_bytes(it.key(), bytes)) {
      fail(where, "token is not in GPT-2's byte-to-unicode spelling");
    }
    model.tokens[size_t(id)] = bytes;
    filled[size_t(id)] = true;
    ids.emplace(it.key(), int32_t(id));
  }
  for (const auto& [id, content] : added) {
    if (!filled[size_t(id)]) {
      model.tokens[size_t(id)] = content;
      filled[size_t(id)] = true;
    }
  }
  for (size_t id = 0; id < filled.size(); ++id)
    if (!filled[id]) fail("model.vocab", "no token has id " + std::to_string(id) + " (ids must be 0..n-1)");
  for (const auto& [content, id] : added_order) model.specials.push_back({content, int32_t(id)});

  // Merges: "left right" strings or [left, right] pairs.
  const json& merges = model_json["merges"];
  model.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        fail(where, "\"" + escaped(s) + "\" is not two tokens separated by one space");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail(where, "expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto l = ids.find(left), r = ids.find(right);
    if (l == ids.end() || r == ids.end())
      fail(where, "merge (\"" + escaped(left) + "\", \"" + escaped(right) +
                      "\") names a token that is not in model.vocab");
    if (!ids.count(left + right))
      fail(where, "merge (\"" + escaped(left) + "\", \"" + escaped(right) + "\") makes \"" +
                      escaped(left + right) + "\", which is not in model.vocab");
    model.merges.emplace_back(l->second, r->second);
  }
  model.pattern = pattern;
  model.normalization = normalization;
  model.eot = default_eot(model);
  // A Hugging Face directory holds "tokenizer.json": name it after the directory; a file of its
  // own name (nuri-ko-8k.json) after itself.
  const std::string stem = fs::path(path).stem().string();
  const std::string name = stem == "tokenizer" ? fs::path(path).parent_path().filename().string() : stem;

  if (model_json.value("ignore_merges", false)) {
    // Only the tiktoken rule has this meaning here: keep it when the merges are the implied ones.
    BpeModel rule = model;
    rule.merges.clear();
    BpeTokenizer tiktoken_rule(std::move(rule), name);
    if (bpe::implied_merges(tiktoken_rule) != model.merges)
      fail("model.ignore_merges", "is true but the merges are not the ones the tiktoken rule "
                                  "implies; nuri supports ignore_merges only for that case");
    return tiktoken_rule;
  }
  return BpeTokenizer(std::move(model), name);
} catch (const json::exception& e) {
  // A value of the wrong JSON type deep in the file (nlohmann's own checks): still Error(data).
  NURI_THROW(data, "tokenizer.load_hf", "'" << path << "': unexpected JSON content (" << e.what()
                                << "); is this the right file?");
}

void BpeTokenizer::save_hf_json(const std::string& path) const {
  const char* op = "tokenizer.save_hf";
  const BpeModel& m = model();
  const std::string known = bpe::known_pattern_name(m.pattern);
  ordered_json root = ordered_json::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  for (const SpecialToken& s : m.specials) {
    added.push_back({{"id", s.id}, {"content", s.text}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  root["added_tokens"] = added;
  if (m.normalization == Normalization::none) root["normalizer"] = nullptr;
  else root["normalizer"] = {{"type", m.normalization == Normalization::nfc ? "NFC" : "NFKC"}};
  if (known == "gpt2") {
    root["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                             {"trim_offsets", true}, {"use_regex", true}};
  } else {
    // Known patterns are written in the references' dialect; other regexes as given (PCRE2).
    const std::string regex = known.empty() ? m.pattern : bpe::reference_pattern(known);
    ordered_json split = {{"type", "Split"}, {"pattern", {{"Regex", regex}}},
                          {"behavior", "Isolated"}, {"invert", false}};
    ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                               {"trim_offsets", true}, {"use_regex", false}};
    root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
  }
  root["post_processor"] = nullptr;
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                     {"use_regex", true}};
  std::vector<std::string> spelled(m.tokens.size());
  std::vector<bool> special(m.tokens.size(), false);
  for (const SpecialToken& s : m.specials) special[size_t(s.id)] = true;
  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < m.tokens.size(); ++id) {
    spelled[id] = special[id] ? m.tokens[id] : bpe::bytes_to_unicode(m.tokens[id]);
    vocab[spelled[id]] = id;
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [l, r] : merges_to_write(*this))
    merges.push_back(spelled[size_t(l)] + " " + spelled[size_t(r)]);
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", m.merges.empty()},
                   {"vocab", vocab},
                   {"merges", merges}};
  bpe::write_file(path, root.dump(), op);
}

// --- Any format ----------------------------------------------------------------------------------

BpeTokenizer BpeTokenizer::load(const std::string& path, const std::string& tiktoken_pattern,
                                const std::vector<std::string>& tiktoken_specials) {
  const char* op = "tokenizer.load";
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    const fs::path encoder = p / "encoder.json", vocab = p / "vocab.bpe";
    NURI_CHECK(fs::exists(encoder, ec), io, op,
               "directory '" << path << "' has no encoder.json; a tokenizer directory holds "
                             << "GPT-2's encoder.json and vocab.bpe");
    NURI_CHECK(fs::exists(vocab, ec), io, op,
               "directory '" << path << "' has encoder.json but no vocab.bpe; GPT-2's tokenizer "
                             << "needs both files");
    return from_gpt2_files(encoder.string(), vocab.string());
  }
  NURI_CHECK(fs::exists(p, ec), io, op, "tokenizer file '" << path << "' does not exist");
  const std::string ext = p.extension().string();
  if (ext == ".json") return from_hf_json(path);
  if (ext == ".tiktoken") return from_tiktoken_file(path, tiktoken_pattern, tiktoken_specials);
  NURI_THROW(config, op,
             "cannot tell the format of '" << path << "': expected a directory with encoder.json + "
                                           << "vocab.bpe, a *.json (Hugging Face) or a *.tiktoken file");
}

}  // namespace nuri

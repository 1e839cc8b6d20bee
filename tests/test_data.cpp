// Data: token shards (format, round trip, every validation error), the manifest, the
// DataLoader (determinism, exact resume, rank disjointness, epochs, weights), text sources
// (document rules, JSONL, UTF-8, directories, validation split), work units that cut big files,
// the tokenizing pipeline's independence of threads/ranks, and training on shards end to end.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "test_util.hpp"
#include "nuri/config.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/shards.hpp"
#include "nuri/text_source.hpp"
#include "nuri/train.hpp"

using nuri::Error;
using nuri::ErrorKind;
namespace fs = std::filesystem;

namespace {

const std::string corpus = NURI_CORPUS_DIR;

// A fresh directory per test case.
std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("nuri_test_data_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::string write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

using nuri::testing::expect_error;

// A tokenizer with a chosen vocabulary and hash; encode maps bytes to ids (for shard tests).
class FakeTokenizer final : public nuri::Tokenizer {
 public:
  FakeTokenizer(int vocab, uint64_t hash) : vocab_(vocab), hash_(hash) {}
  std::string name() const override { return "fake"; }
  int vocab_size() const override { return vocab_; }
  int eot_id() const override { return vocab_ - 1; }
  uint64_t hash() const override { return hash_; }
  std::vector<int32_t> encode(const std::string& t) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : t) ids.push_back(int32_t(c));
    return ids;
  }
  std::string decode(const std::vector<int32_t>&) const override { return ""; }

 private:
  int vocab_;
  uint64_t hash_;
};

// Writes one shard of `docs` and returns its path.
std::string write_shard(const std::string& path, uint64_t vocab, uint64_t hash,
                        const std::vector<std::vector<int32_t>>& docs, int32_t eot) {
  nuri::ShardWriter w(path, vocab, hash);
  for (const auto& d : docs) w.add_document(d.data(), d.size(), eot);
  w.finish();
  return path;
}

std::vector<int32_t> all_tokens(const nuri::TokenView& v) {
  std::vector<int32_t> out(v.size);
  v.copy(0, v.size, out.data());
  return out;
}

// A token stream whose every id is its position (+ base): a window's first id names it.
nuri::TokenView positions(uint64_t n, int32_t base, const std::string& name) {
  std::vector<int32_t> t(n);
  for (uint64_t i = 0; i < n; ++i) t[i] = base + int32_t(i);
  return nuri::TokenView::of(std::move(t), name);
}

std::vector<nuri::DataSource> two_sources(double w0 = 1, double w1 = 1) {
  // Source 0: two shards (windows never cross them); source 1: one shard.
  return {{"a", {positions(1000, 0, "a0"), positions(517, 10000, "a1")}, w0},
          {"b", {positions(3000, 100000, "b0")}, w1}};
}

// Runs a loader for `batches` batches; returns each row's first input id.
std::vector<int32_t> rows(nuri::DataLoader& l, int B, int T, int batches) {
  std::vector<int32_t> x(size_t(B) * T), y(x.size()), out;
  for (int k = 0; k < batches; ++k) {
    l.next(x.data(), y.data());
    for (int b = 0; b < B; ++b) {
      out.push_back(x[size_t(b) * T]);
      for (int t = 0; t + 1 < T; ++t) REQUIRE(y[size_t(b) * T + t] == x[size_t(b) * T + t + 1]);
      REQUIRE(y[size_t(b) * T + T - 1] == x[size_t(b) * T + T - 1] + 1);  // positions: consecutive
    }
  }
  return out;
}

std::vector<std::string> documents_of(const nuri::TextFile& f, const nuri::TextSourceOptions& o) {
  std::vector<std::string> docs;
  nuri::for_each_document(f, o, [&](const nuri::Document& d) { docs.emplace_back(d.text); });
  return docs;
}

}  // namespace

// Shards ----------------------------------------------------------------------------------------

TEST_CASE("shards: write and read back, uint16 and uint32") {
  const std::string dir = temp_dir("roundtrip");
  const std::vector<std::vector<int32_t>> docs = {{1, 2, 3}, {}, {255, 0, 7, 7}};
  for (uint64_t vocab : {300ull, 65536ull, 70000ull}) {
    INFO("vocab " << vocab);
    const int32_t eot = int32_t(vocab - 1);
    const std::vector<int32_t> big = {int32_t(vocab - 2), 5};
    auto all_docs = docs;
    all_docs.push_back(big);
    const std::string path = write_shard(dir + "/s" + std::to_string(vocab) + ".bin", vocab, 0xabcdef, all_docs, eot);
    CHECK_FALSE(fs::exists(path + ".tmp"));
    auto shard = nuri::TokenShard::open(path, {});
    const uint32_t dtype = vocab <= 65536 ? 2 : 4;
    CHECK(shard->header().dtype == dtype);
    CHECK(shard->header().vocab_size == vocab);
    CHECK(shard->header().documents == 4);
    CHECK(shard->header().tokenizer_hash == 0xabcdef);
    CHECK(fs::file_size(path) == nuri::kShardHeaderBytes + shard->size() * dtype);
    std::vector<int32_t> expect;
    for (const auto& d : all_docs) {
      expect.insert(expect.end(), d.begin(), d.end());
      expect.push_back(eot);
    }
    const nuri::TokenView v = shard->view();
    CHECK(all_tokens(v) == expect);
    CHECK(v[3] == eot);
    shard->verify();
    CHECK(read_file(path).substr(0, 8) == std::string("NURITOK\0", 8));
  }
  // An id outside the vocabulary never reaches a file.
  nuri::ShardWriter w(dir + "/bad.bin", 300, 1);
  const int32_t ids[] = {1, 300};
  expect_error([&] { w.add_document(ids, 2, 299); }, ErrorKind::data, {"id 300", "outside its vocabulary of 300"});
}

TEST_CASE("shards: truncated, foreign, wrong version, corrupt, wrong tokenizer, vocab too large") {
  const std::string dir = temp_dir("errors");
  const std::vector<std::vector<int32_t>> docs = {{1, 2, 3, 4, 5}, {6, 7}};
  const std::string good = write_shard(dir + "/good.bin", 300, 0x7b, docs, 299);
  const std::string bytes = read_file(good);

  const std::string truncated = write_file(dir + "/truncated.bin", bytes.substr(0, bytes.size() - 3));
  expect_error([&] { nuri::TokenShard::open(truncated); }, ErrorKind::io,
               {truncated, "is truncated", "promises 9 tokens (82 bytes)", "file has 79 bytes"});
  const std::string stub = write_file(dir + "/stub.bin", bytes.substr(0, 20));
  expect_error([&] { nuri::TokenShard::open(stub); }, ErrorKind::io, {stub, "truncated", "20 bytes"});

  const std::string foreign = write_file(dir + "/foreign.bin", "Call me Ishmael. Some years ago...\n");
  expect_error([&] { nuri::TokenShard::open(foreign); }, ErrorKind::data, {foreign, "is not a nuri token shard"});
  const std::string empty = write_file(dir + "/empty.bin", "");
  expect_error([&] { nuri::TokenShard::open(empty); }, ErrorKind::data, {empty, "is not a nuri token shard"});
  expect_error([&] { nuri::TokenShard::open(dir + "/missing.bin"); }, ErrorKind::io, {dir + "/missing.bin", "cannot open"});

  std::string v2 = bytes;
  v2[8] = 2;
  const std::string version = write_file(dir + "/version.bin", v2);
  expect_error([&] { nuri::TokenShard::open(version); }, ErrorKind::data,
               {version, "format version 2", "reads version 1"});

  std::string hdr = bytes;
  hdr[16] ^= 1;  // vocab_size
  const std::string header = write_file(dir + "/header.bin", hdr);
  expect_error([&] { nuri::TokenShard::open(header); }, ErrorKind::data, {header, "corrupt header"});

  std::string body = bytes;
  body[nuri::kShardHeaderBytes + 2] ^= 1;
  const std::string content = write_file(dir + "/content.bin", body);
  CHECK_NOTHROW(nuri::TokenShard::open(content));  // only the O(size) check sees it
  nuri::ShardCheck verify;
  verify.verify = true;
  expect_error([&] { nuri::TokenShard::open(content, verify); }, ErrorKind::data, {content, "is corrupt", "xxh64"});

  const std::string longer = write_file(dir + "/longer.bin", bytes + "xx");
  expect_error([&] { nuri::TokenShard::open(longer); }, ErrorKind::data, {longer, "2 bytes after its 9 tokens"});

  auto bytes_tok = nuri::make_tokenizer("bytes");
  nuri::ShardCheck by_tokenizer;
  by_tokenizer.tokenizer = bytes_tok.get();
  expect_error([&] { nuri::TokenShard::open(good, by_tokenizer); }, ErrorKind::data,
               {good, "hash 0x000000000000007b", "'bytes' has hash 0x6279746573323537", "Set data.tokenizer",
                "re-tokenize"});

  nuri::ShardCheck small_model;
  small_model.max_vocab = 257;
  expect_error([&] { nuri::TokenShard::open(good, small_model); }, ErrorKind::config,
               {good, "vocab size 300", "larger than model.vocab_size (257)", "set model.vocab_size = 300"});
}

TEST_CASE("shards: manifest round trip and directory checks") {
  const std::string dir = temp_dir("manifest");
  FakeTokenizer tok(300, 0x1234);
  nuri::TokenizeOptions opt;
  opt.output_dir = dir;
  nuri::TokenizeResult r;
  r.train.shards.push_back(nuri::ShardEntry{"train-00000-00000.bin", 0, 0});
  write_shard(dir + "/train-00000-00000.bin", 300, 0x1234, {{1, 2, 3}}, 299);
  r.train.shards[0].tokens = 4;
  r.train.shards[0].documents = 1;
  nuri::ShardManifest m = nuri::make_manifest(tok, opt, {{"in.txt", false, 10}}, {r});
  nuri::write_manifest(dir, m);
  CHECK_FALSE(fs::exists(dir + "/manifest.json.tmp"));
  const nuri::ShardManifest back = nuri::read_manifest(dir);
  CHECK(back.tokenizer_hash == 0x1234);
  CHECK(back.vocab_size == 300);
  CHECK(back.train.tokens() == 4);
  CHECK(back.sources.size() == 1);
  CHECK(back.sources[0].path == "in.txt");

  nuri::ShardCheck check;
  check.tokenizer = &tok;
  nuri::ShardDataset ds = nuri::open_shard_dataset(dir, check);
  CHECK(ds.train.size() == 1);
  CHECK(all_tokens(ds.train_views()[0]) == std::vector<int32_t>{1, 2, 3, 299});

  auto bytes_tok = nuri::make_tokenizer("bytes");
  nuri::ShardCheck other;
  other.tokenizer = bytes_tok.get();
  expect_error([&] { nuri::open_shard_dataset(dir, other); }, ErrorKind::data,
               {dir, "tokenizer 'fake' (hash 0x0000000000001234", "'bytes' has hash 0x6279746573323537",
                "nuri tokenize --tokenizer bytes"});
  nuri::ShardCheck small;
  small.max_vocab = 257;
  expect_error([&] { nuri::open_shard_dataset(dir, small); }, ErrorKind::config, {dir, "vocab size 300", "model.vocab_size (257)"});

  // A shard that does not match its manifest entry (two runs mixed).
  write_shard(dir + "/train-00000-00000.bin", 300, 0x1234, {{1, 2}}, 299);
  expect_error([&] { nuri::open_shard_dataset(dir); }, ErrorKind::data,
               {"train-00000-00000.bin", "holds 3 tokens", "lists 4 tokens"});
  const std::string empty = temp_dir("manifest_missing");
  expect_error([&] { nuri::open_shard_dataset(empty); }, ErrorKind::io, {empty, "has no manifest.json"});
  write_file(empty + "/manifest.json", "{\"format\": \"nuri-token-shards\", \"version\": 1}");
  expect_error([&] { nuri::open_shard_dataset(empty); }, ErrorKind::data, {empty + "/manifest.json", "not a valid manifest"});
}

// Loader ------------------------------------------------------------------------------------------

TEST_CASE("loader: same seed same batches, different seed different; targets are inputs shifted") {
  const int B = 4, T = 16;
  nuri::DataLoader a(two_sources(), B, T, 7), b(two_sources(), B, T, 7), c(two_sources(), B, T, 8);
  const auto ra = rows(a, B, T, 20), rb = rows(b, B, T, 20), rc = rows(c, B, T, 20);
  CHECK(ra == rb);
  CHECK(ra != rc);
  // Every row starts a window: (position - shard start) is a multiple of T + 1.
  for (int32_t first : ra) {
    const int32_t base = first >= 100000 ? 100000 : first >= 10000 ? 10000 : 0;
    CHECK((first - base) % (T + 1) == 0);
  }
}

TEST_CASE("loader: state at batch k, set_state, then identical batches (also serialized)") {
  const int B = 3, T = 8;
  nuri::DataLoader a(two_sources(3, 1), B, T, 11);
  rows(a, B, T, 37);
  const nuri::LoaderState at = a.state();
  CHECK(at.batches == 37);
  CHECK(at.samples == 37 * 3);
  CHECK(at.consumed[0] + at.consumed[1] == 37 * 3);
  const auto expected = rows(a, B, T, 25);

  nuri::DataLoader b(two_sources(3, 1), B, T, 11);
  b.set_state(nuri::LoaderState::deserialize(at.serialize()));
  CHECK(b.state() == at);
  CHECK(rows(b, B, T, 25) == expected);

  expect_error([] { nuri::LoaderState::deserialize("nuri-loader 1 batches=x samples=1 consumed=1"); }, ErrorKind::data,
               {"'batches' is not a number"});
  expect_error([] { nuri::LoaderState::deserialize("hello"); }, ErrorKind::data, {"cannot read the loader state"});
  nuri::DataLoader one({{"a", {positions(100, 0, "a")}, 1.0}}, B, T, 11);
  expect_error([&] { one.set_state(at); }, ErrorKind::data, {"counts 2 data source(s) but this run has 1"});
}

TEST_CASE("loader: ranks are disjoint and together serve the 1-rank sequence") {
  const int B = 2, T = 8;
  for (int world : {2, 4}) {
    INFO("world " << world);
    // The 1-rank loader with world*B rows per batch is the global sequence.
    nuri::DataLoader global(two_sources(), world * B, T, 3);
    const int batches = 30;
    const auto expect = rows(global, world * B, T, batches);
    std::vector<std::vector<int32_t>> per_rank;
    for (int r = 0; r < world; ++r) {
      nuri::DataLoader l(two_sources(), B, T, 3, r, world);
      per_rank.push_back(rows(l, B, T, batches));
    }
    std::vector<int32_t> merged;
    for (int k = 0; k < batches; ++k)
      for (int r = 0; r < world; ++r)
        for (int b = 0; b < B; ++b) merged.push_back(per_rank[size_t(r)][size_t(k * B + b)]);
    CHECK(merged == expect);
    // At most 240 samples, about half from each source, stay inside the first epoch of each
    // (a: 111 + 57 windows, b: 333), so no window may repeat.
    std::set<int32_t> seen(merged.begin(), merged.end());
    CHECK(seen.size() == merged.size());
  }
}

TEST_CASE("loader: an epoch visits every window exactly once, then a new order") {
  const int T = 4;
  const uint64_t n = 997 / (T + 1);  // 199 windows
  nuri::DataLoader l({{"a", {positions(997, 0, "a")}, 1.0}}, 1, T, 5);
  const auto first = rows(l, 1, T, int(n));
  const auto second = rows(l, 1, T, int(n));
  CHECK(std::set<int32_t>(first.begin(), first.end()).size() == n);
  CHECK(std::set<int32_t>(second.begin(), second.end()).size() == n);
  CHECK(first != second);
  // Not the identity order.
  std::vector<int32_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  CHECK(first != sorted);
  // Tokens past the last whole window are never served.
  CHECK(*std::max_element(first.begin(), first.end()) == int32_t((n - 1) * (T + 1)));
}

TEST_CASE("loader: weights 3:1 give 75% of samples from the first source") {
  const int B = 8, T = 4;
  nuri::DataLoader l(two_sources(3, 1), B, T, 99);
  const auto r = rows(l, B, T, 2500);  // 20,000 samples
  const double from_a = double(std::count_if(r.begin(), r.end(), [](int32_t v) { return v < 100000; })) / double(r.size());
  CHECK(from_a == Approx(0.75).margin(0.015));
  CHECK(l.probability(0) == Approx(0.75));
  CHECK(l.state().consumed[0] == uint64_t(std::count_if(r.begin(), r.end(), [](int32_t v) { return v < 100000; })));
}

TEST_CASE("loader: errors name the source") {
  expect_error([] { nuri::DataLoader l({{"tiny", {positions(10, 0, "t")}, 1.0}}, 2, 16, 1); }, ErrorKind::data,
               {"'tiny' has 10 tokens", "one sequence of 17"});
  expect_error([] { nuri::DataLoader l({{"w", {positions(100, 0, "t")}, 0.0}}, 2, 4, 1); }, ErrorKind::config,
               {"weight of 'w'"});
  // An id outside the model's vocabulary is caught before it indexes the embedding.
  nuri::DataLoader l({{"v", {positions(100, 250, "shard-x.bin")}, 1.0}}, 2, 4, 1, 0, 1, 257);
  std::vector<int32_t> x(8), y(8);
  expect_error([&] { for (int i = 0; i < 20; ++i) l.next(x.data(), y.data()); }, ErrorKind::data,
               {"'shard-x.bin' holds token id", "outside the vocabulary (257)"});
}

TEST_CASE("eval_batch over a stream of views equals eval_batch over one vector") {
  std::vector<int32_t> all(1000);
  for (size_t i = 0; i < all.size(); ++i) all[i] = int32_t(i * 7 % 257);
  const nuri::TokenStream stream({nuri::TokenView::of({all.begin(), all.begin() + 333}, "p0"),
                                  nuri::TokenView::of({all.begin() + 333, all.begin() + 334}, "p1"),
                                  nuri::TokenView::of({all.begin() + 334, all.end()}, "p2")});
  const int B = 3, T = 50;
  std::vector<int32_t> x1(B * T), y1(B * T), x2(B * T), y2(B * T);
  for (int i = 0; i < 12; ++i) {
    nuri::eval_batch(all, B, T, i, x1.data(), y1.data());
    nuri::eval_batch(stream, B, T, i, x2.data(), y2.data());
    REQUIRE(x1 == x2);
    REQUIRE(y1 == y2);
  }
}

// Text sources ------------------------------------------------------------------------------------

TEST_CASE("text source: blank-line, line and file documents; JSONL; errors with positions") {
  const std::string dir = temp_dir("text");
  const std::string text = write_file(dir + "/a.txt", "one\ntwo\n\n  \nthree\r\n\t\nfour");
  nuri::TextSourceOptions o;
  const auto files = nuri::list_text_files({text}, o);
  REQUIRE(files.size() == 1);
  CHECK(files[0].bytes == fs::file_size(text));
  CHECK(documents_of(files[0], o) == std::vector<std::string>{"one\ntwo\n", "three\r\n", "four"});
  o.text_documents = nuri::DocumentSplit::line;
  CHECK(documents_of(files[0], o) == std::vector<std::string>{"one\n", "two\n", "three\r\n", "four"});
  o.text_documents = nuri::DocumentSplit::file;
  CHECK(documents_of(files[0], o) == std::vector<std::string>{read_file(text)});

  nuri::TextSourceOptions j;
  j.jsonl_field = "body";
  const std::string jsonl = write_file(dir + "/b.jsonl", "{\"body\": \"가나다\"}\n\n{\"body\": \"x\\ny\", \"id\": 2}\n");
  const auto jf = nuri::list_text_files({jsonl}, j);
  REQUIRE(jf[0].jsonl);
  CHECK(documents_of(jf[0], j) == std::vector<std::string>{"가나다", "x\ny"});
  const std::string bad = write_file(dir + "/bad.jsonl", "{\"body\": \"ok\"}\n{\"text\": \"wrong field\"}\n");
  expect_error([&] { documents_of(nuri::list_text_files({bad}, j)[0], j); }, ErrorKind::data,
               {bad, "line 2", "no string field \"body\"", "--jsonl-field"});
  const std::string broken = write_file(dir + "/broken.jsonl", "{\"body\": \"ok\"}\n\n{\"body\": \n");
  expect_error([&] { documents_of(nuri::list_text_files({broken}, j)[0], j); }, ErrorKind::data,
               {broken, "line 3", "is not valid JSON"});

  const std::string euckr = write_file(dir + "/euckr.txt", "fine text\n\n\xb4\xeb\xc7\xd1\n");
  nuri::TextSourceOptions strict;
  expect_error([&] { documents_of(nuri::list_text_files({euckr}, strict)[0], strict); }, ErrorKind::data,
               {euckr, "not valid UTF-8: byte 11 (line 3)", "iconv"});
  strict.strict_utf8 = false;
  CHECK(documents_of(nuri::list_text_files({euckr}, strict)[0], strict).size() == 2);
}

TEST_CASE("text source: directories are walked in sorted order; the validation split is a stable hash") {
  const std::string dir = temp_dir("walk");
  fs::create_directories(dir + "/sub");
  write_file(dir + "/b.txt", "b\n");
  write_file(dir + "/a.md", "a\n");
  write_file(dir + "/sub/c.jsonl", "{\"text\": \"c\"}\n");
  write_file(dir + "/skip.bin", "x");
  nuri::TextSourceOptions o;
  const auto files = nuri::list_text_files({dir}, o);
  REQUIRE(files.size() == 3);
  CHECK(fs::path(files[0].path).filename() == "a.md");
  CHECK(fs::path(files[1].path).filename() == "b.txt");
  CHECK(fs::path(files[2].path).filename() == "c.jsonl");
  CHECK(files[2].jsonl);
  expect_error([&] { nuri::list_text_files({dir + "/nope"}, o); }, ErrorKind::io, {dir + "/nope", "does not exist"});

  // The split depends on the text only: same answer every time, ~the fraction over many docs.
  int val = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string doc = "document number " + std::to_string(i) + "\n";
    const bool v = nuri::is_validation_document(doc, 0.1);
    CHECK(v == nuri::is_validation_document(doc, 0.1));
    CHECK_FALSE(nuri::is_validation_document(doc, 0.0));
    if (v) CHECK(nuri::is_validation_document(doc, 0.2));  // monotone in the fraction
    val += v;
  }
  CHECK(double(val) / 20000 == Approx(0.1).margin(0.01));
}

TEST_CASE("work units: cut files give exactly the documents of the whole file, in every mode") {
  const std::string dir = temp_dir("units");
  // Awkward text: runs of blank lines, whitespace-only lines, CRLF, a long document, no final newline.
  std::string text;
  for (int i = 0; i < 400; ++i) {
    text += "paragraph " + std::to_string(i) + " line one\n";
    if (i % 3 == 0) text += "and a second line that is a little longer\r\n";
    if (i % 50 == 7) text += std::string(900, 'z') + "\n";
    text += i % 4 == 0 ? "\n\n \t\n" : i % 4 == 1 ? "\r\n" : "\n";
  }
  text += "tail without newline";
  const std::string txt = write_file(dir + "/t.txt", text);
  std::string jl;
  for (int i = 0; i < 300; ++i) jl += "{\"text\": \"doc " + std::to_string(i) + std::string(size_t(i % 40), 'q') + "\"}\n" + (i % 7 ? "" : "\n");
  const std::string jsonl = write_file(dir + "/j.jsonl", jl);

  for (auto mode : {nuri::DocumentSplit::blank_line, nuri::DocumentSplit::line}) {
    for (uint64_t unit : {1ull, 7ull, 100ull, 1000ull, 4096ull}) {
      nuri::TextSourceOptions o;
      o.text_documents = mode;
      o.chunk_bytes = 4096;  // several reads per unit
      const auto files = nuri::list_text_files({txt, jsonl}, o);
      const auto units = nuri::plan_work_units(files, o, unit);
      for (size_t f = 0; f < files.size(); ++f) {
        INFO("mode " << nuri::to_string(mode) << " unit " << unit << " file " << files[f].path);
        std::vector<std::string> cut;
        uint64_t bytes = 0;
        for (const auto& u : units)
          if (u.file == f)
            nuri::for_each_document_in_unit(files[f], u, o, [&](const nuri::Document& d) { cut.emplace_back(d.text); },
                                            [&](uint64_t n) { bytes += n; });
        CHECK(cut == documents_of(files[f], o));
        CHECK(bytes == files[f].bytes);
      }
      // Ranks: contiguous runs that cover every unit once, in order.
      for (int world : {1, 2, 3, 8}) {
        size_t next = 0;
        for (int r = 0; r < world; ++r) {
          const auto [first, last] = nuri::units_for_rank(units, r, world);
          CHECK(first == next);
          next = last;
        }
        CHECK(next == units.size());
      }
    }
  }
}

TEST_CASE("tokenize: the token stream is the same for any thread count, rank count and unit size") {
  auto tok = nuri::make_tokenizer("bytes");
  nuri::TextSourceOptions src;
  src.val_fraction = 0.05;
  const auto files = nuri::list_text_files({corpus + "/en_moby_dick.txt", corpus + "/ko_prose.txt"}, src);
  uint64_t train_hash = 0, val_hash = 0;
  uint64_t train_tokens = 0;
  struct Layout { int threads, world; uint64_t unit_bytes, shard_tokens; };
  for (const Layout& lay : {Layout{1, 1, 32u << 20, 100'000'000}, Layout{2, 1, 300'000, 500'000},
                            Layout{1, 3, 250'000, 700'000}, Layout{2, 4, 1'000'000, 1'000'000}}) {
    INFO("threads " << lay.threads << " world " << lay.world << " unit " << lay.unit_bytes);
    nuri::TokenizeOptions opt;
    opt.output_dir = temp_dir("tokenize_" + std::to_string(lay.threads) + "_" + std::to_string(lay.world));
    opt.sources = src;
    opt.threads = lay.threads;
    opt.unit_bytes = lay.unit_bytes;
    opt.shard_tokens = lay.shard_tokens;
    opt.batch_bytes = 64 << 10;  // many batches, so threads really interleave
    std::vector<nuri::TokenizeResult> results;
    for (int r = 0; r < lay.world; ++r) results.push_back(nuri::tokenize_to_shards(files, *tok, opt, r, lay.world));
    nuri::write_manifest(opt.output_dir, nuri::make_manifest(*tok, opt, files, results));
    nuri::ShardCheck check;
    check.tokenizer = tok.get();
    check.verify = true;
    const nuri::ShardDataset ds = nuri::open_shard_dataset(opt.output_dir, check);
    const uint64_t th = nuri::token_stream_xxh64(ds.train_views()), vh = nuri::token_stream_xxh64(ds.val_views());
    if (train_hash == 0) {
      train_hash = th, val_hash = vh, train_tokens = ds.manifest.train.tokens();
      CHECK(ds.manifest.val.tokens() > 0);
      CHECK(ds.manifest.val.tokens() < ds.manifest.train.tokens() / 5);
    }
    CHECK(th == train_hash);
    CHECK(vh == val_hash);
    CHECK(ds.manifest.train.tokens() == train_tokens);
    for (const auto& e : ds.manifest.train.shards) CHECK(e.tokens <= lay.shard_tokens + 100'000);
  }
  // The stream is the text: train + val documents, each followed by end-of-text.
  nuri::TokenDataset text = nuri::load_text_dataset({corpus + "/en_moby_dick.txt"}, *tok, 0.0);
  nuri::TokenizeOptions one;
  one.output_dir = temp_dir("tokenize_moby");
  const auto moby = nuri::list_text_files({corpus + "/en_moby_dick.txt"}, one.sources);
  nuri::write_manifest(one.output_dir, nuri::make_manifest(*tok, one, moby, {nuri::tokenize_to_shards(moby, *tok, one)}));
  const nuri::ShardDataset ds = nuri::open_shard_dataset(one.output_dir);
  CHECK(ds.manifest.train.tokens() == text.train.size());
  CHECK(nuri::token_stream_xxh64(ds.train_views()) == nuri::token_stream_xxh64({nuri::TokenView::of(text.train, "t")}));
}

TEST_CASE("train: a run on token shards works end to end and checks the shards first") {
  auto tok = nuri::make_tokenizer("bytes");
  nuri::TokenizeOptions opt;
  opt.output_dir = temp_dir("train_shards");
  opt.sources.val_fraction = 0.05;
  const auto files = nuri::list_text_files({corpus + "/en_moby_dick.txt"}, opt.sources);
  nuri::write_manifest(opt.output_dir, nuri::make_manifest(*tok, opt, files, {nuri::tokenize_to_shards(files, *tok, opt)}));
  const std::string run_dir = temp_dir("train_run");
  std::vector<std::string> sets = {
      "model.preset=gpt2-tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.n_kv_head=2",
      "model.d_ff=64", "model.vocab_size=257", "model.max_seq_len=32", "train.batch_size=4", "train.seq_len=32",
      "train.steps=6", "train.eval_every=3", "train.eval_batches=2", "train.peak_gflops=100", "train.sample_tokens=0",
      "train.threads=2", "train.save=false", "train.run_dir=\"" + run_dir + "\"",
      "data.datasets=[\"" + opt.output_dir + "\", \"" + opt.output_dir + "\"]", "data.weights=[3, 1]",
      "data.verify_shards=true"};
  const nuri::TrainResult r = nuri::train(nuri::load_run_config("", sets));
  CHECK(r.steps_done == 6);
  CHECK(std::isfinite(r.final_train_loss));
  CHECK(r.final_val_loss > 0);
  CHECK(r.unigram_val_loss > 2.5);

  // Both sources of data at once, or neither: a config error.
  auto both = sets;
  both.push_back("data.train_files=[\"" + corpus + "/en_moby_dick.txt\"]");
  expect_error([&] { nuri::load_run_config("", both); }, ErrorKind::config,
               {"both data.train_files and data.datasets are set"});
  auto weights = sets;
  weights.push_back("data.weights=[1]");
  expect_error([&] { nuri::load_run_config("", weights); }, ErrorKind::config,
               {"data.weights has 1 value(s) but data.datasets has 2"});
  auto neither = sets;
  neither.push_back("data.datasets=[]");
  neither.push_back("data.weights=[]");
  expect_error([&] { nuri::train(nuri::load_run_config("", neither)); }, ErrorKind::config, {"no training data"});
  // A model smaller than the shards' vocabulary is refused before it is built.
  auto small = sets;
  small.push_back("data.tokenizer=bytes");
  small.push_back("model.vocab_size=200");
  expect_error([&] { nuri::train(nuri::load_run_config("", small)); }, ErrorKind::config, {"model.vocab_size (200)"});
}

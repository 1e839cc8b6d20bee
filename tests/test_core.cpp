// Core: configuration (keys, types, ranges, overrides, presets), errors, RNG, UTF-8, tokenizer,
// schedules, dataset split and the batch loader.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "test_util.hpp"
#include "nuri/config.hpp"
#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/optim.hpp"
#include "nuri/rng.hpp"

using nuri::Error;
using nuri::ErrorKind;

namespace {
std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("nuri_test_core_" + name);
  std::ofstream(path) << text;
  return path.string();
}

using nuri::testing::expect_error;
}  // namespace

TEST_CASE("config: file, preset and overrides resolve in order") {
  const std::string path = write_temp("ok.toml",
                                      "backend = \"cpu\"\n[model]\npreset = \"llama-tiny\"\nn_layer = 3\n"
                                      "[optim]\nlr = 1e-3\n[train]\nsteps = 7\n");
  nuri::RunConfig c = nuri::load_run_config(path, {"train.steps=9", "optim.schedule=wsd", "model.d_model=192"});
  CHECK(c.model.family == "llama");   // from the preset
  CHECK(c.model.n_kv_head == 2);      // from the preset
  CHECK(c.model.n_layer == 3);        // file overrides preset
  CHECK(c.model.d_model == 192);      // --set overrides preset
  CHECK(c.train.steps == 9);          // --set overrides file
  CHECK(c.optim.lr == Approx(1e-3));
  CHECK(c.optim.schedule == "wsd");   // bare word taken as a string

  // The resolved TOML reloads to the same values.
  const std::string again = write_temp("again.toml", nuri::to_toml(c));
  nuri::RunConfig d = nuri::load_run_config(again, {});
  CHECK(d.model.n_layer == 3);
  CHECK(d.model.d_model == 192);
  CHECK(d.train.steps == 9);
  CHECK(d.optim.lr == c.optim.lr);
  CHECK(d.model.norm_eps == c.model.norm_eps);
}

TEST_CASE("config: unknown key is an error naming it, the file and a suggestion") {
  const std::string path = write_temp("typo.toml", "[model]\nn_heads = 4\n");
  expect_error([&] { nuri::load_run_config(path, {}); }, ErrorKind::config,
               {"unknown key 'model.n_heads'", "typo.toml:2", "did you mean 'model.n_head'"});
  expect_error([&] { nuri::load_run_config("", {"optim.learning_rate=1"}); }, ErrorKind::config,
               {"unknown key 'optim.learning_rate'"});
}

TEST_CASE("config: wrong types and ranges are errors naming the key") {
  expect_error([] { nuri::load_run_config("", {"train.steps=\"ten\""}); }, ErrorKind::config,
               {"train.steps", "integer"});
  expect_error([] { nuri::load_run_config("", {"train.steps=0"}); }, ErrorKind::config,
               {"train.steps", "[1,"});
  expect_error([] { nuri::load_run_config("", {"optim.schedule=linear"}); }, ErrorKind::config,
               {"optim.schedule", "cosine"});
  expect_error([] { nuri::load_run_config("", {"model.preset=gpt5"}); }, ErrorKind::config,
               {"gpt5", "gpt2-124m"});
  expect_error([] { nuri::load_run_config("", {"nonsense"}); }, ErrorKind::config, {"section.key=value"});
  expect_error([] { nuri::load_run_config("/no/such/file.toml", {}); }, ErrorKind::io,
               {"/no/such/file.toml"});
  const std::string bad = write_temp("bad.toml", "[model\nn_layer = 2\n");
  expect_error([&] { nuri::load_run_config(bad, {}); }, ErrorKind::config, {"bad.toml:1"});
}

TEST_CASE("config: n_head must divide d_model") {
  expect_error([] { nuri::load_run_config("", {"model.d_model=100", "model.n_head=3"}); },
               ErrorKind::shape, {"n_head (3)", "d_model (100)"});
  expect_error([] { nuri::load_run_config("", {"model.n_head=6", "model.n_kv_head=4"}); },
               ErrorKind::shape, {"n_kv_head (4)"});
}

TEST_CASE("rng: reproducible, positionable, roughly normal") {
  nuri::Rng a(42), b(42), c(43);
  std::vector<uint64_t> xs;
  for (int i = 0; i < 100; ++i) xs.push_back(a.next_u64());
  for (int i = 0; i < 100; ++i) CHECK(b.next_u64() == xs[i]);
  CHECK(c.next_u64() != xs[0]);
  nuri::Rng d(42, 50);
  CHECK(d.next_u64() == xs[50]);
  nuri::Rng n(7);
  double sum = 0, sq = 0;
  const int count = 20000;
  for (int i = 0; i < count; ++i) {
    double v = n.normal();
    sum += v;
    sq += v * v;
  }
  CHECK(std::abs(sum / count) < 0.03);
  CHECK(std::abs(sq / count - 1.0) < 0.05);
}

TEST_CASE("utf8: sanitize keeps valid text and replaces broken sequences") {
  const std::string ko = "한국어 text ✓ 🇰🇷";
  CHECK(nuri::sanitize_utf8(ko) == ko);
  CHECK(nuri::sanitize_utf8("a\xED\x95") == "a\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated 한
  CHECK(nuri::sanitize_utf8("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");    // overlong '/'
  CHECK(nuri::sanitize_utf8("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  CHECK(nuri::first_invalid_utf8(ko) == std::string::npos);
  CHECK(nuri::first_invalid_utf8("ok \xB4\xEB") == 3);  // EUC-KR bytes
  CHECK(nuri::first_invalid_utf8("\xF4\x90\x80\x80") == 0);  // above U+10FFFF
}

TEST_CASE("byte tokenizer: round trip of any bytes") {
  auto tok = nuri::make_tokenizer("bytes");
  CHECK(tok->vocab_size() == 257);
  std::string s = "누리 nuri\r\n\t";
  s.push_back('\0');
  s.push_back('\xff');
  const auto ids = tok->encode(s);
  CHECK(ids.size() == s.size());
  CHECK(tok->decode(ids) == s);
  expect_error([] { nuri::make_tokenizer("gpt9"); }, ErrorKind::config, {"gpt9", "bytes"});
}

TEST_CASE("schedules: warmup, cosine, wsd") {
  nuri::OptimConfig o;
  o.lr = 1.0;
  o.min_lr = 0.1;
  o.warmup_steps = 10;
  CHECK(nuri::learning_rate(o, 0, 100) == Approx(0.1));
  CHECK(nuri::learning_rate(o, 9, 100) == Approx(1.0));
  CHECK(nuri::learning_rate(o, 10, 100) == Approx(1.0));
  CHECK(nuri::learning_rate(o, 99, 100) == Approx(0.1));
  const double mid = nuri::learning_rate(o, 10 + 89 / 2, 100);
  CHECK(mid == Approx(0.55).margin(0.02));
  for (int s = 11; s < 100; ++s) CHECK(nuri::learning_rate(o, s, 100) <= nuri::learning_rate(o, s - 1, 100));
  o.schedule = "wsd";
  o.decay_fraction = 0.2;
  CHECK(nuri::learning_rate(o, 50, 100) == Approx(1.0));
  CHECK(nuri::learning_rate(o, 79, 100) == Approx(1.0));
  CHECK(nuri::learning_rate(o, 80, 100) < 1.0);
  CHECK(nuri::learning_rate(o, 99, 100) == Approx(0.1));
}

TEST_CASE("dataset: documents, validation split, end-of-text, missing file") {
  const std::string path = write_temp("docs.txt", "doc one\nline two\n\ndoc two\n\n\ndoc three\n\ndoc four\n");
  auto tok = nuri::make_tokenizer("bytes");
  nuri::TokenDataset ds = nuri::load_text_dataset({path}, *tok, 0.25);
  // 4 documents, the last one held out.
  CHECK(tok->decode(ds.val) == "doc four\n");
  CHECK(std::count(ds.train.begin(), ds.train.end(), 256) == 3);
  CHECK(std::count(ds.val.begin(), ds.val.end(), 256) == 1);
  CHECK(tok->decode(ds.train) == "doc one\nline two\ndoc two\ndoc three\n");
  expect_error([] { nuri::load_text_dataset({"/no/such/corpus.txt"}, *nuri::make_tokenizer("bytes"), 0.1); },
               ErrorKind::io, {"/no/such/corpus.txt"});
}

TEST_CASE("unigram loss: entropy of a known distribution") {
  // fit: 'a' x 3, 'b' x 1 over a vocabulary of 2 (add-one: 4/6, 2/6)
  std::vector<int32_t> fit = {0, 0, 0, 1}, eval = {0, 1};
  const double expect = -(std::log(4.0 / 6) + std::log(2.0 / 6)) / 2;
  CHECK(nuri::unigram_loss(fit, eval, 2) == Approx(expect));
}

TEST_CASE("loader: deterministic, resumable, disjoint across ranks, targets shifted") {
  std::vector<int32_t> tokens(5000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(i % 251);
  const int B = 3, T = 16;
  std::vector<int32_t> x1(B * T), y1(B * T), x2(B * T), y2(B * T);
  nuri::BatchLoader a(tokens, B, T, 5), b(tokens, B, T, 5);
  for (int k = 0; k < 4; ++k) a.next(x1.data(), y1.data());
  b.set_position(3);
  b.next(x2.data(), y2.data());
  CHECK(x1 == x2);
  CHECK(y1 == y2);
  for (int i = 0; i < B * T; ++i) CHECK(y1[i] == (x1[i] + 1) % 251);
  // Two ranks of a data-parallel group draw from different sample indices.
  nuri::BatchLoader r0(tokens, B, T, 5, 0, 2), r1(tokens, B, T, 5, 1, 2);
  std::set<std::vector<int32_t>> seen;
  for (int k = 0; k < 5; ++k) {
    r0.next(x1.data(), y1.data());
    r1.next(x2.data(), y2.data());
    CHECK(x1 != x2);
  }
  nuri::BatchLoader short_loader_check(tokens, B, T, 5);
  std::vector<int32_t> tiny(10, 1);
  expect_error([&] { nuri::BatchLoader l(tiny, B, T, 5); }, ErrorKind::data, {"fewer than one sequence"});
}

// Text files -> train/validation token streams, the unigram baseline, and the batch loader.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/rng.hpp"

namespace nuri {

namespace {

// Splits text into documents at blank lines (lines that are empty or only whitespace).
std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> docs;
  std::string current;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool blank = line.find_first_not_of(" \t") == std::string::npos;
    if (blank) {
      if (!current.empty()) docs.push_back(std::move(current));
      current.clear();
    } else {
      current += line;
      current += '\n';
    }
  }
  if (!current.empty()) docs.push_back(std::move(current));
  return docs;
}

}  // namespace

TokenDataset load_text_dataset(const std::vector<std::string>& files, const Tokenizer& tokenizer,
                               double val_fraction) {
  NURI_CHECK(!files.empty(), config, "data", "data.train_files is empty; give at least one text file");
  TokenDataset ds;
  ds.vocab_size = tokenizer.vocab_size();
  ds.files = files;
  for (const auto& path : files) {
    NURI_CHECK(!std::filesystem::is_directory(path), io, "data",
               "'" << path << "' (data.train_files) is a directory; list the text files in it");
    std::ifstream in(path, std::ios::binary);
    NURI_CHECK(in.good(), io, "data", "cannot open data file '" << path
                                        << "' (data.train_files); check the path"
                                        << (path.ends_with(".xz") ? "" : " — the bundled corpus is "
                                            "decompressed by the build into build/data/corpus/"));
    std::ostringstream buf;
    buf << in.rdbuf();
    NURI_CHECK(!in.bad(), io, "data", "error while reading '" << path << "'");
    const std::string text = buf.str();
    const size_t bad = first_invalid_utf8(text);
    if (bad != std::string::npos) {
      const size_t line = 1 + size_t(std::count(text.begin(), text.begin() + std::ptrdiff_t(bad), '\n'));
      NURI_THROW(data, "data", "'" << path << "' is not valid UTF-8: byte " << bad << " (line " << line
                                   << ") starts no valid sequence. Convert the file to UTF-8 (for "
                                   << "legacy Korean text: iconv -f CP949 -t UTF-8)");
    }
    const std::vector<std::string> docs = split_documents(text);
    NURI_CHECK(!docs.empty(), data, "data", "data file '" << path << "' holds no text");
    size_t n_val = docs.size() >= 2 ? size_t(std::ceil(val_fraction * double(docs.size()))) : 0;
    if (val_fraction > 0 && docs.size() >= 2) n_val = std::clamp<size_t>(n_val, 1, docs.size() - 1);
    if (val_fraction == 0) n_val = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
      std::vector<int32_t>& dst = i + n_val < docs.size() ? ds.train : ds.val;
      std::vector<int32_t> ids = tokenizer.encode(docs[i]);
      dst.insert(dst.end(), ids.begin(), ids.end());
      dst.push_back(tokenizer.eot_id());
    }
  }
  return ds;
}

double unigram_loss(const std::vector<int32_t>& fit, const std::vector<int32_t>& eval,
                    int vocab_size) {
  std::vector<double> count(vocab_size, 1.0);  // add-one smoothing
  for (int32_t t : fit) count[t] += 1.0;
  const double total = double(fit.size()) + vocab_size;
  double loss = 0;
  for (int32_t t : eval) loss -= std::log(count[t] / total);
  return eval.empty() ? 0.0 : loss / double(eval.size());
}

double unigram_loss(const TokenStream& fit, const TokenStream& eval, int vocab_size, uint64_t max_tokens) {
  std::vector<double> count(size_t(vocab_size), 1.0);  // add-one smoothing, as above
  std::vector<int32_t> buf(size_t(1) << 16);
  auto for_each_id = [&](const TokenStream& s, auto&& fn) {
    const uint64_t n = std::min(s.size(), max_tokens);
    for (uint64_t pos = 0; pos < n; pos += buf.size()) {
      const uint64_t take = std::min<uint64_t>(buf.size(), n - pos);
      s.copy(pos, take, buf.data());
      for (uint64_t i = 0; i < take; ++i)
        if (buf[i] >= 0 && buf[i] < vocab_size) fn(buf[i]);
    }
  };
  double fitted = 0;
  for_each_id(fit, [&](int32_t t) { count[size_t(t)] += 1.0, fitted += 1.0; });
  const double total = fitted + vocab_size;
  double loss = 0, evaluated = 0;
  for_each_id(eval, [&](int32_t t) { loss -= std::log(count[size_t(t)] / total), evaluated += 1.0; });
  return evaluated == 0 ? 0.0 : loss / evaluated;
}

BatchLoader::BatchLoader(const std::vector<int32_t>& tokens, int B, int T, uint64_t seed, int rank,
                         int world)
    : tokens_(tokens), B_(B), T_(T), seed_(seed), rank_(rank), world_(world) {
  NURI_CHECK(tokens.size() >= size_t(T) + 1, data, "BatchLoader",
             "the training text has " << tokens.size() << " tokens, fewer than one sequence of "
                                      << T + 1 << "; add data or lower train.seq_len");
  NURI_CHECK(rank >= 0 && rank < world, internal, "BatchLoader", "rank " << rank << " of " << world);
}

void BatchLoader::next(int32_t* inputs, int32_t* targets) {
  const uint64_t windows = tokens_.size() - size_t(T_);  // start positions with T+1 tokens (>= 1)
  for (int b = 0; b < B_; ++b) {
    // Sample index across the whole data-parallel group: ranks take interleaved indices.
    const uint64_t sample = (position_ * uint64_t(world_) + uint64_t(rank_)) * uint64_t(B_) + b;
    const uint64_t start = mix64(mix64(seed_) ^ mix64(sample + 0x5151)) % windows;
    for (int t = 0; t < T_; ++t) {
      inputs[size_t(b) * T_ + t] = tokens_[start + t];
      targets[size_t(b) * T_ + t] = tokens_[start + t + 1];
    }
  }
  ++position_;
}

void eval_batch(const std::vector<int32_t>& tokens, int B, int T, int index, int32_t* inputs,
                int32_t* targets) {
  NURI_CHECK(tokens.size() >= size_t(T) + 1, data, "eval_batch",
             "the validation text has " << tokens.size() << " tokens, fewer than one sequence of "
                                        << T + 1 << "; raise data.val_fraction or add data");
  const size_t per_batch = size_t(B) * T;
  const size_t batches = std::max<size_t>(1, (tokens.size() - 1) / per_batch);
  const size_t base = (size_t(index) % batches) * per_batch;
  for (size_t i = 0; i < per_batch; ++i) {
    const size_t p = (base + i) % (tokens.size() - 1);
    inputs[i] = tokens[p];
    targets[i] = tokens[p + 1];
  }
}

}  // namespace nuri

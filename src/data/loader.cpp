// Token views and streams, validation batches over a stream, and the weighted, permuted,
// rank-disjoint DataLoader (see nuri/data.hpp for the sampling rules).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <sstream>

#include "nuri/data.hpp"
#include "nuri/error.hpp"
#include "nuri/rng.hpp"

namespace nuri {

void TokenView::copy(uint64_t start, uint64_t n, int32_t* out) const {
  NURI_CHECK(start <= size && n <= size - start, internal, "TokenView",
             "range [" << start << ", " << start + n << ") outside '" << source << "' (" << size << " tokens)");
  if (token_bytes == 2) {
    const uint16_t* p = static_cast<const uint16_t*>(data) + start;
    for (uint64_t i = 0; i < n; ++i) out[i] = int32_t(p[i]);
  } else {
    std::memcpy(out, static_cast<const int32_t*>(data) + start, n * sizeof(int32_t));
  }
}

TokenView TokenView::of(std::vector<int32_t> tokens, std::string source) {
  return of(std::make_shared<const std::vector<int32_t>>(std::move(tokens)), std::move(source));
}

TokenView TokenView::of(std::shared_ptr<const std::vector<int32_t>> owned, std::string source) {
  TokenView v;
  v.data = owned->data();
  v.size = owned->size();
  v.token_bytes = 4;
  v.source = std::move(source);
  v.owner = owned;
  return v;
}

TokenStream::TokenStream(std::vector<TokenView> views) : views_(std::move(views)) {
  for (const TokenView& v : views_) {
    starts_.push_back(total_);
    total_ += v.size;
  }
}

void TokenStream::copy(uint64_t pos, uint64_t n, int32_t* out) const {
  NURI_CHECK(pos <= total_ && n <= total_ - pos, internal, "TokenStream",
             "range [" << pos << ", " << pos + n << ") outside a stream of " << total_ << " tokens");
  size_t v = size_t(std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin()) - 1;
  while (n > 0) {
    const uint64_t local = pos - starts_[v];
    const uint64_t take = std::min(n, views_[v].size - local);
    views_[v].copy(local, take, out);
    out += take;
    pos += take;
    n -= take;
    ++v;
  }
}

void eval_batch(const TokenStream& tokens, int B, int T, int index, int32_t* inputs, int32_t* targets) {
  NURI_CHECK(tokens.size() >= uint64_t(T) + 1, data, "eval_batch",
             "the validation split has " << tokens.size() << " tokens, fewer than one sequence of " << T + 1
                                         << "; tokenize with a larger --val-fraction or add data");
  // Same windows as the vector version: B*T consecutive inputs from `base`, wrapping at the end.
  const uint64_t per_batch = uint64_t(B) * uint64_t(T);
  const uint64_t usable = tokens.size() - 1;
  const uint64_t batches = std::max<uint64_t>(1, usable / per_batch);
  const uint64_t base = (uint64_t(index) % batches) * per_batch;
  std::vector<int32_t> buf;
  uint64_t i = 0;
  while (i < per_batch) {
    const uint64_t p = (base + i) % usable;
    const uint64_t run = std::min(per_batch - i, usable - p);  // contiguous until the wrap
    buf.resize(run + 1);
    tokens.copy(p, run + 1, buf.data());
    for (uint64_t k = 0; k < run; ++k) {
      inputs[i + k] = buf[k];
      targets[i + k] = buf[k + 1];
    }
    i += run;
  }
}

// LoaderState -------------------------------------------------------------------------------------

std::string LoaderState::serialize() const {
  std::ostringstream out;
  out << "nuri-loader 1 batches=" << batches << " samples=" << samples << " consumed=";
  for (size_t i = 0; i < consumed.size(); ++i) out << (i ? "," : "") << consumed[i];
  return out.str();
}

LoaderState LoaderState::deserialize(const std::string& text) {
  auto bad = [&](const std::string& why) {
    NURI_THROW(data, "LoaderState", "cannot read the loader state '" << text << "': " << why
                                     << " (expected 'nuri-loader 1 batches=K samples=S consumed=a,b,...')");
  };
  std::istringstream in(text);
  std::string magic, version, batches, samples, consumed;
  if (!(in >> magic >> version >> batches >> samples >> consumed)) bad("too few fields");
  if (magic != "nuri-loader") bad("not a loader state");
  if (version != "1") bad("version " + version + ", this nuri reads version 1");
  auto number = [&](const std::string& s, const std::string& field) -> uint64_t {
    size_t used = 0;
    uint64_t v = 0;
    try {
      v = std::stoull(s, &used);
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    if (s.empty() || used != s.size() || s[0] == '-') bad("'" + field + "' is not a number");
    return v;
  };
  auto field = [&](const std::string& kv, const std::string& key) {
    if (kv.rfind(key + "=", 0) != 0) bad("missing '" + key + "='");
    return kv.substr(key.size() + 1);
  };
  LoaderState st;
  st.batches = number(field(batches, "batches"), "batches");
  st.samples = number(field(samples, "samples"), "samples");
  const std::string list = field(consumed, "consumed");
  std::istringstream items(list);
  for (std::string item; std::getline(items, item, ',');) st.consumed.push_back(number(item, "consumed"));
  std::string rest;
  if (in >> rest) bad("unexpected '" + rest + "'");
  return st;
}

// DataLoader -------------------------------------------------------------------------------------

namespace {

// A bijection of [0, n) keyed by `key`: a balanced 4-round Feistel network on the smallest even
// number of bits covering n, cycle-walked until the value falls inside [0, n) (fewer than 4
// steps on average since the domain is < 4n). O(1) memory, any n up to 2^64.
uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key) {
  if (n <= 1) return 0;
  int bits = std::max(2, int(std::bit_width(n - 1)));
  bits += bits & 1;
  const int half = bits / 2;
  const uint64_t mask = half == 64 ? ~0ull : (uint64_t(1) << half) - 1;
  uint64_t round_key[4];
  for (int r = 0; r < 4; ++r) round_key[r] = mix64(key ^ (0xA5A5A5A5ull * uint64_t(r + 1)));
  do {
    uint64_t left = i >> half, right = i & mask;
    for (int r = 0; r < 4; ++r) {
      const uint64_t f = mix64(right ^ round_key[r]) & mask;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    i = (left << half) | right;
  } while (i >= n);
  return i;
}

}  // namespace

DataLoader::DataLoader(std::vector<DataSource> sources, int B, int T, uint64_t seed, int rank, int world,
                       int vocab_size)
    : B_(B), T_(T), seed_(seed), rank_(rank), world_(world), vocab_size_(vocab_size) {
  NURI_CHECK(world >= 1 && rank >= 0 && rank < world, internal, "DataLoader", "rank " << rank << " of " << world);
  NURI_CHECK(B >= 1 && T >= 1, internal, "DataLoader", "batch " << B << " x " << T);
  NURI_CHECK(!sources.empty(), config, "DataLoader", "no data sources; set data.train_files or data.datasets");
  double total_weight = 0;
  for (DataSource& s : sources) {
    NURI_CHECK(s.weight > 0 && std::isfinite(s.weight), config, "DataLoader",
               "the weight of '" << s.name << "' is " << s.weight << "; weights must be positive (data.weights)");
    Source src;
    uint64_t tokens = 0;
    for (const TokenView& v : s.shards) {
      src.first_window.push_back(src.windows);
      src.windows += v.size / (uint64_t(T) + 1);
      tokens += v.size;
    }
    NURI_CHECK(src.windows > 0, data, "DataLoader",
               "'" << s.name << "' has " << tokens << " tokens in " << s.shards.size()
                   << " shard(s) and no shard holds one sequence of " << T + 1
                   << " tokens; add data or lower train.seq_len");
    total_weight += s.weight;
    src.source = std::move(s);
    sources_.push_back(std::move(src));
  }
  double cumulative = 0;
  for (Source& s : sources_) {
    s.probability = s.source.weight / total_weight;
    cumulative += s.probability;
    s.cumulative = cumulative;
  }
  sources_.back().cumulative = 2.0;  // rounding never leaves a sample without a source
  state_.consumed.assign(sources_.size(), 0);
}

size_t DataLoader::pick_source(uint64_t sample) const {
  if (sources_.size() == 1) return 0;
  const double u = double(mix64(mix64(seed_ ^ 0x5eed5eed50c3ull) ^ sample) >> 11) * 0x1.0p-53;
  size_t i = 0;
  while (u >= sources_[i].cumulative) ++i;
  return i;
}

void DataLoader::read_window(size_t src, uint64_t counter, int32_t* inputs, int32_t* targets) const {
  const Source& s = sources_[src];
  const uint64_t epoch = counter / s.windows;
  const uint64_t key = mix64(mix64(seed_) ^ mix64((uint64_t(src) << 40) ^ epoch));
  const uint64_t window = permute_index(counter % s.windows, s.windows, key);
  const size_t shard = size_t(std::upper_bound(s.first_window.begin(), s.first_window.end(), window) -
                              s.first_window.begin()) - 1;
  const TokenView& view = s.source.shards[shard];
  const uint64_t start = (window - s.first_window[shard]) * (uint64_t(T_) + 1);
  // inputs = ids [start, start + T), targets = ids [start + 1, start + T + 1)
  view.copy(start, uint64_t(T_), inputs);
  std::memcpy(targets, inputs + 1, sizeof(int32_t) * size_t(T_ - 1));
  targets[T_ - 1] = view[start + uint64_t(T_)];
  if (vocab_size_ > 0) {
    for (int t = 0; t <= T_; ++t) {
      const int32_t id = t < T_ ? inputs[t] : targets[T_ - 1];
      NURI_CHECK(id >= 0 && id < vocab_size_, data, "DataLoader",
                 "'" << view.source << "' holds token id " << id << " at position " << start + uint64_t(t)
                     << ", outside the vocabulary (" << vocab_size_
                     << "); the file is corrupt or from another tokenizer: check it with "
                        "`nuri tokenize --verify DIR` or set data.verify_shards = true");
    }
  }
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  const uint64_t global = uint64_t(world_) * uint64_t(B_);
  const uint64_t mine = uint64_t(rank_) * uint64_t(B_);
  // Every rank walks the whole global batch so that all counters advance identically.
  for (uint64_t j = 0; j < global; ++j) {
    const size_t src = pick_source(state_.samples + j);
    const uint64_t counter = state_.consumed[src]++;
    if (j >= mine && j < mine + uint64_t(B_)) {
      const size_t row = size_t(j - mine) * size_t(T_);
      read_window(src, counter, inputs + row, targets + row);
    }
  }
  state_.samples += global;
  ++state_.batches;
}

void DataLoader::set_state(const LoaderState& state) {
  NURI_CHECK(state.consumed.size() == sources_.size(), data, "DataLoader",
             "the loader state '" << state.serialize() << "' counts " << state.consumed.size()
                                  << " data source(s) but this run has " << sources_.size()
                                  << "; resume with the same data.datasets");
  state_ = state;
}

}  // namespace nuri

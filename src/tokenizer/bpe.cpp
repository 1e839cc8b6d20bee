// BpeTokenizer: validation and tables, encoding (normalize -> pre-tokenize -> per-piece BPE),
// decoding, the content hash and batch encoding. File formats are in formats.cpp.
//
// Per-piece BPE works on token ids. A pair table maps (left, right) to (rank, merged id):
//   explicit merges: rank = position in the merge list;
//   tiktoken rule:   every split of a token T into two tokens (A, B) maps to (id(T), T), and a
//                    piece that is itself a token is that token (tiktoken's shortcut).
// Both then merge the lowest-ranked adjacent pair, leftmost on ties, until none is left; this is
// GPT-2's, tiktoken's and Hugging Face's rule for merge lists where a merge's parts come from
// earlier merges. Short pieces use a scan over a small array; long pieces (runs of spaces, digits,
// base64) a heap over a linked list, so no piece costs quadratic time.
#include <omp.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "nuri/error.hpp"
#include "nuri/tokenizer.hpp"
#include "tokenizer/bpe_impl.hpp"
#include "tokenizer/normalize.hpp"
#include "tokenizer/pretokenize.hpp"

namespace nuri {

const char* to_string(Normalization n) {
  switch (n) {
    case Normalization::none: return "none";
    case Normalization::nfc: return "nfc";
    case Normalization::nfkc: return "nfkc";
  }
  return "?";
}

Normalization parse_normalization(const std::string& name) {
  if (name == "none") return Normalization::none;
  if (name == "nfc") return Normalization::nfc;
  if (name == "nfkc") return Normalization::nfkc;
  NURI_THROW(config, "tokenizer.normalization",
             "unknown normalization '" << name << "'; choose one of: none, nfc, nfkc");
}

std::string pretokenize_pattern(const std::string& name_or_regex) {
  const std::string reference = bpe::reference_pattern(name_or_regex);
  if (!reference.empty()) return bpe::translate_pattern(reference);
  const std::string translated = bpe::translate_pattern(name_or_regex);
  bpe::check_pattern(translated);
  return translated;
}

namespace bpe {

void PairTable::reserve(size_t n) {
  size_t capacity = 16;
  int bits = 4;
  while (capacity < 2 * n) capacity *= 2, ++bits;
  slots_.assign(capacity, Entry{});
  mask_ = capacity - 1;
  shift_ = 64 - bits;
  size_ = 0;
}

bool PairTable::insert(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  if (2 * (size_ + 1) > slots_.size()) {
    std::vector<Entry> old = std::move(slots_);
    reserve(std::max<size_t>(size_ + 1, old.size()));
    for (const Entry& e : old)
      if (e.key != kEmpty) insert(int32_t(e.key >> 32), int32_t(uint32_t(e.key)), e.rank, e.merged);
  }
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  size_t slot = (key * 0x9E3779B97F4A7C15ull) >> shift_;
  while (slots_[slot].key != kEmpty) {
    if (slots_[slot].key == key) return false;
    slot = (slot + 1) & mask_;
  }
  slots_[slot] = Entry{key, rank, merged};
  ++size_;
  return true;
}

void TokenIndex::build(const std::vector<std::string>& tokens, const std::vector<bool>& is_special) {
  tokens_ = &tokens;
  size_t capacity = 16;
  while (capacity < 2 * tokens.size()) capacity *= 2;
  slots_.assign(capacity, -1);
  mask_ = capacity - 1;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (is_special[id]) continue;
    size_t slot = XXH3_64bits(tokens[id].data(), tokens[id].size()) & mask_;
    while (slots_[slot] >= 0) slot = (slot + 1) & mask_;
    slots_[slot] = int32_t(id);
  }
}

int32_t TokenIndex::find(std::string_view bytes) const {
  size_t slot = XXH3_64bits(bytes.data(), bytes.size()) & mask_;
  while (true) {
    const int32_t id = slots_[slot];
    if (id < 0) return -1;
    if ((*tokens_)[size_t(id)] == bytes) return id;
    slot = (slot + 1) & mask_;
  }
}

std::string read_file(const std::string& path, const char* op) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    NURI_THROW(io, op, "cannot open '" << path << "' for reading: " << std::strerror(errno)
                                       << "; check the path");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) NURI_THROW(io, op, "error reading '" << path << "'");
  return buffer.str();
}

void write_file(const std::string& path, const std::string& content, const char* op) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    NURI_THROW(io, op, "cannot open '" << path << "' for writing: " << std::strerror(errno)
                                       << "; check that the directory exists and is writable");
  }
  out.write(content.data(), std::streamsize(content.size()));
  out.close();
  if (!out) NURI_THROW(io, op, "error writing '" << path << "' (disk full?)");
}

namespace {

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
// Pieces longer than this use the heap-based merge loop.
constexpr size_t kShortPiece = 128;

// A direct-mapped cache of piece -> ids, one per thread and tokenizer. Pieces up to 30 bytes
// whose encoding has at most 8 ids; a slot is one cache line.
struct CacheSlot {
  uint8_t length = 0;  // 0 = empty (pieces are never empty)
  uint8_t n_ids = 0;
  char bytes[30];
  int32_t ids[8];
};
static_assert(sizeof(CacheSlot) == 64);
constexpr size_t kCacheSlots = size_t(1) << 15;  // 2 MiB per thread and tokenizer

struct PieceCache {
  uint64_t owner = 0;  // the tokenizer's instance number; 0 = unused
  uint64_t last_use = 0;
  std::vector<CacheSlot> slots;
};

std::atomic<uint64_t> next_instance{1};

// Scratch space for the merge loops, reused across pieces so the hot loop does not allocate.
struct MergeScratch {
  std::vector<int32_t> ids, ranks, merged;
  // Heap variant.
  struct Node {
    int32_t id;
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Node> nodes;
  std::vector<Candidate> heap;
};

MergeScratch& thread_scratch() {
  thread_local MergeScratch scratch;
  return scratch;
}

}  // namespace
}  // namespace bpe

struct BpeTokenizer::Impl {
  BpeModel model;
  std::string name;
  uint64_t instance = 0;
  uint64_t content_hash = 0;
  int32_t eot = -1;
  int32_t byte_id[256];
  std::vector<bool> is_special;
  bool tiktoken_rule = false;
  bpe::PairTable pairs;
  bpe::TokenIndex index;
  std::unique_ptr<bpe::Pretokenizer> pretokenizer;

  void validate_and_build();
  uint64_t compute_hash() const;
  bpe::PieceCache& cache() const;
  void encode_piece(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_short(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_long(const unsigned char* p, size_t n, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
};

void BpeTokenizer::Impl::validate_and_build() {
  const char* op = "tokenizer.bpe";
  const size_t n = model.tokens.size();
  NURI_CHECK(n >= 256 && n < size_t(std::numeric_limits<int32_t>::max()), data, op,
             "tokenizer '" << name << "' has " << n
                           << " tokens; a byte-level BPE needs at least the 256 byte tokens");
  is_special.assign(n, false);
  for (size_t k = 0; k < model.specials.size(); ++k) {
    const SpecialToken& s = model.specials[k];
    NURI_CHECK(s.id >= 0 && size_t(s.id) < n, data, op,
               "tokenizer '" << name << "': special token '" << s.text << "' has id " << s.id
                             << ", outside [0, " << n << ")");
    NURI_CHECK(!s.text.empty(), data, op,
               "tokenizer '" << name << "': special token with id " << s.id << " has empty text");
    NURI_CHECK(model.tokens[size_t(s.id)] == s.text, data, op,
               "tokenizer '" << name << "': special token '" << s.text << "' has id " << s.id
                             << " but token " << s.id << " holds different bytes");
    NURI_CHECK(!is_special[size_t(s.id)], data, op,
               "tokenizer '" << name << "': id " << s.id << " is listed twice as a special token");
    is_special[size_t(s.id)] = true;
  }
  std::fill(std::begin(byte_id), std::end(byte_id), -1);
  {
    std::unordered_map<std::string_view, int32_t> seen;
    seen.reserve(n);
    for (size_t id = 0; id < n; ++id) {
      if (is_special[id]) continue;
      const std::string& t = model.tokens[id];
      NURI_CHECK(!t.empty(), data, op, "tokenizer '" << name << "': token " << id << " is empty");
      const auto [it, inserted] = seen.emplace(t, int32_t(id));
      NURI_CHECK(inserted, data, op,
                 "tokenizer '" << name << "': tokens " << it->second << " and " << id
                               << " have the same bytes; every token must be distinct");
      if (t.size() == 1) byte_id[static_cast<unsigned char>(t[0])] = int32_t(id);
    }
  }
  for (int b = 0; b < 256; ++b) {
    NURI_CHECK(byte_id[b] >= 0, data, op,
               "tokenizer '" << name << "': no token for byte 0x" << std::hex << b << std::dec
                             << "; a byte-level BPE needs all 256 single-byte tokens");
  }
  index.build(model.tokens, is_special);

  tiktoken_rule = model.merges.empty();
  if (!tiktoken_rule) {
    pairs.reserve(model.merges.size());
    for (size_t r = 0; r < model.merges.size(); ++r) {
      const auto [left, right] = model.merges[r];
      NURI_CHECK(left >= 0 && size_t(left) < n && right >= 0 && size_t(right) < n, data, op,
                 "tokenizer '" << name << "': merge " << r << " (" << left << ", " << right
                               << ") names an id outside [0, " << n << ")");
      NURI_CHECK(!is_special[size_t(left)] && !is_special[size_t(right)], data, op,
                 "tokenizer '" << name << "': merge " << r << " (" << left << ", " << right
                               << ") uses a special token");
      const int32_t merged = index.find(model.tokens[size_t(left)] + model.tokens[size_t(right)]);
      NURI_CHECK(merged >= 0, data, op,
                 "tokenizer '" << name << "': merge " << r << " (" << left << ", " << right
                               << ") makes bytes that are not a token");
      pairs.insert(left, right, int32_t(r), merged);  // a repeated merge keeps its first rank
    }
  } else {
    // Every split of a token into two tokens, ranked by the token's id.
    size_t splits = 0;
    for (size_t id = 0; id < n; ++id)
      if (!is_special[id]) splits += model.tokens[id].size() - 1;
    pairs.reserve(splits / 2);
    for (size_t id = 0; id < n; ++id) {
      if (is_special[id]) continue;
      const std::string_view t = model.tokens[id];
      for (size_t k = 1; k < t.size(); ++k) {
        const int32_t left = index.find(t.substr(0, k));
        if (left < 0) continue;
        const int32_t right = index.find(t.substr(k));
        if (right < 0) continue;
        pairs.insert(left, right, int32_t(id), int32_t(id));
      }
    }
  }

  if (!model.eot.empty()) {
    for (const SpecialToken& s : model.specials)
      if (s.text == model.eot) eot = s.id;
    NURI_CHECK(eot >= 0, data, op,
               "tokenizer '" << name << "': end-of-text token '" << model.eot
                             << "' is not among its special tokens; add it or set eot to it");
  }
  pretokenizer = std::make_unique<bpe::Pretokenizer>(model.pattern);
  content_hash = compute_hash();
  instance = bpe::next_instance.fetch_add(1);
}

uint64_t BpeTokenizer::Impl::compute_hash() const {
  // Canonical serialization: each field length-prefixed, little-endian integers.
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  auto put_u64 = [&](uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    XXH64_update(state, b, 8);
  };
  auto put_str = [&](std::string_view s) {
    put_u64(s.size());
    XXH64_update(state, s.data(), s.size());
  };
  put_str("nuri-bpe-v1");
  put_u64(model.tokens.size());
  for (const std::string& t : model.tokens) put_str(t);
  put_u64(model.merges.size());
  for (const auto& [l, r] : model.merges) put_u64((uint64_t(uint32_t(l)) << 32) | uint32_t(r));
  put_str(model.pattern);
  put_str(to_string(model.normalization));
  put_u64(model.specials.size());
  for (const SpecialToken& s : model.specials) {
    put_str(s.text);
    put_u64(uint64_t(uint32_t(s.id)));
  }
  put_str(model.eot);
  const uint64_t h = XXH64_digest(state);
  XXH64_freeState(state);
  return h;
}

bpe::PieceCache& BpeTokenizer::Impl::cache() const {
  // A few caches per thread, one per tokenizer in use, least recently used evicted.
  thread_local bpe::PieceCache caches[4];
  thread_local uint64_t clock = 0;
  ++clock;
  bpe::PieceCache* victim = &caches[0];
  for (bpe::PieceCache& c : caches) {
    if (c.owner == instance) {
      c.last_use = clock;
      return c;
    }
    if (c.last_use < victim->last_use) victim = &c;
  }
  victim->owner = instance;
  victim->last_use = clock;
  victim->slots.assign(bpe::kCacheSlots, bpe::CacheSlot{});
  return *victim;
}

void BpeTokenizer::Impl::merge_short(const unsigned char* p, size_t n,
                                     std::vector<int32_t>& out) const {
  bpe::MergeScratch& s = bpe::thread_scratch();
  s.ids.resize(n);
  s.ranks.resize(n);
  s.merged.resize(n);
  int32_t* ids = s.ids.data();
  int32_t* ranks = s.ranks.data();  // ranks[i]: the pair (ids[i], ids[i+1])
  int32_t* merged = s.merged.data();
  for (size_t i = 0; i < n; ++i) ids[i] = byte_id[p[i]];
  auto set_pair = [&](size_t i) {
    const bpe::PairTable::Entry* e = pairs.find(ids[i], ids[i + 1]);
    ranks[i] = e ? e->rank : bpe::kNoRank;
    merged[i] = e ? e->merged : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) set_pair(i);
  size_t m = n;
  while (m > 1) {
    size_t best = 0;
    int32_t best_rank = ranks[0];
    for (size_t i = 1; i + 1 < m; ++i)
      if (ranks[i] < best_rank) best_rank = ranks[i], best = i;
    if (best_rank == bpe::kNoRank) break;
    ids[best] = merged[best];
    // Remove part best+1 and the pair (best+1, best+2) now absorbed.
    for (size_t i = best + 1; i + 1 < m; ++i) ids[i] = ids[i + 1];
    for (size_t i = best + 1; i + 2 < m; ++i) ranks[i] = ranks[i + 1], merged[i] = merged[i + 1];
    --m;
    if (best > 0) set_pair(best - 1);
    if (best + 1 < m) set_pair(best);
  }
  out.insert(out.end(), ids, ids + m);
}

void BpeTokenizer::Impl::merge_long(const unsigned char* p, size_t n,
                                    std::vector<int32_t>& out) const {
  using Candidate = bpe::MergeScratch::Candidate;
  bpe::MergeScratch& s = bpe::thread_scratch();
  auto& nodes = s.nodes;
  auto& heap = s.heap;
  nodes.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i)
    nodes[i] = {byte_id[p[i]], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1};
  auto push = [&](int32_t pos) {
    const int32_t next = nodes[size_t(pos)].next;
    if (next < 0) return;
    const int32_t left = nodes[size_t(pos)].id, right = nodes[size_t(next)].id;
    if (const bpe::PairTable::Entry* e = pairs.find(left, right)) {
      heap.push_back({e->rank, pos, left, right});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    auto& node = nodes[size_t(c.pos)];
    // Stale when the node was absorbed (id -1) or either side changed since the push.
    if (node.id != c.left || node.next < 0 || nodes[size_t(node.next)].id != c.right) continue;
    const int32_t absorbed = node.next;
    node.id = pairs.find(c.left, c.right)->merged;
    node.next = nodes[size_t(absorbed)].next;
    if (node.next >= 0) nodes[size_t(node.next)].prev = c.pos;
    nodes[size_t(absorbed)].id = -1;
    if (node.prev >= 0) push(node.prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = nodes[size_t(i)].next) out.push_back(nodes[size_t(i)].id);
}

void BpeTokenizer::Impl::encode_piece(const unsigned char* p, size_t n,
                                      std::vector<int32_t>& out) const {
  if (n == 1) {
    out.push_back(byte_id[p[0]]);
    return;
  }
  // The cache comes first: one hash and one cache line, where the token index (tiktoken's
  // whole-piece shortcut) would cost a probe and a compare against the token's heap bytes.
  bpe::CacheSlot* slot = nullptr;
  if (n <= sizeof(bpe::CacheSlot::bytes)) {
    slot = &cache().slots[XXH3_64bits(p, n) & (bpe::kCacheSlots - 1)];
    if (slot->length == n && std::memcmp(slot->bytes, p, n) == 0) {
      out.insert(out.end(), slot->ids, slot->ids + slot->n_ids);
      return;
    }
  }
  const size_t before = out.size();
  const int32_t whole =
      tiktoken_rule ? index.find(std::string_view(reinterpret_cast<const char*>(p), n)) : -1;
  if (whole >= 0) out.push_back(whole);
  else if (n <= bpe::kShortPiece) merge_short(p, n, out);
  else merge_long(p, n, out);
  const size_t produced = out.size() - before;
  if (slot != nullptr && produced <= 8) {
    slot->length = uint8_t(n);
    slot->n_ids = uint8_t(produced);
    std::memcpy(slot->bytes, p, n);
    std::memcpy(slot->ids, out.data() + before, produced * sizeof(int32_t));
  }
}

void BpeTokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  if (model.normalization != Normalization::none) {
    normalized = bpe::normalize(text, model.normalization);
    text = normalized;
  }
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const size_t run = bpe::valid_utf8_run(s, n, i);
    if (run == 0) {  // byte fallback: an invalid byte is a piece of its own
      out.push_back(byte_id[s[i]]);
      ++i;
      continue;
    }
    const unsigned char* base = s + i;
    pretokenizer->split(reinterpret_cast<const char*>(base), run,
                        [&](size_t offset, size_t length) { encode_piece(base + offset, length, out); });
    i += run;
  }
}

BpeTokenizer::BpeTokenizer(BpeModel model, std::string name) : impl_(std::make_unique<Impl>()) {
  impl_->model = std::move(model);
  impl_->name = std::move(name);
  impl_->validate_and_build();
}

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

std::string BpeTokenizer::name() const { return impl_->name; }
int BpeTokenizer::vocab_size() const { return int(impl_->model.tokens.size()); }
int BpeTokenizer::eot_id() const { return impl_->eot; }
uint64_t BpeTokenizer::hash() const { return impl_->content_hash; }
const BpeModel& BpeTokenizer::model() const { return impl_->model; }

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  impl_->encode_ordinary(text, out);
  return out;
}

std::vector<int32_t> BpeTokenizer::encode_with_specials(const std::string& text) const {
  const Impl& im = *impl_;
  std::string normalized;
  std::string_view t = text;
  if (im.model.normalization != Normalization::none) {
    normalized = bpe::normalize(text, im.model.normalization);
    t = normalized;
  }
  std::vector<int32_t> out;
  out.reserve(t.size() / 3 + 8);
  // Ordinary segments are already normalized; encode them without normalizing twice.
  auto encode_segment = [&](std::string_view segment) {
    const auto* s = reinterpret_cast<const unsigned char*>(segment.data());
    const size_t n = segment.size();
    for (size_t i = 0; i < n;) {
      const size_t run = bpe::valid_utf8_run(s, n, i);
      if (run == 0) {
        out.push_back(im.byte_id[s[i]]);
        ++i;
        continue;
      }
      const unsigned char* base = s + i;
      im.pretokenizer->split(reinterpret_cast<const char*>(base), run, [&](size_t o, size_t len) {
        im.encode_piece(base + o, len, out);
      });
      i += run;
    }
  };
  // Leftmost occurrence of any special token; the longest one where several start there.
  size_t pos = 0;
  while (pos < t.size()) {
    size_t best = std::string_view::npos;
    const SpecialToken* match = nullptr;
    for (const SpecialToken& s : im.model.specials) {
      const size_t at = t.find(s.text, pos);
      if (at == std::string_view::npos) continue;
      if (at < best || (at == best && s.text.size() > match->text.size())) best = at, match = &s;
    }
    if (match == nullptr) break;
    encode_segment(t.substr(pos, best - pos));
    out.push_back(match->id);
    pos = best + match->text.size();
  }
  encode_segment(t.substr(pos));
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  const auto& tokens = impl_->model.tokens;
  size_t total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    NURI_CHECK(id >= 0 && size_t(id) < tokens.size(), data, "tokenizer.decode",
               "id " << id << " at position " << i << " is outside the vocabulary [0, "
                     << tokens.size() << ") of tokenizer '" << impl_->name
                     << "'; were these ids made by another tokenizer?");
    total += tokens[size_t(id)].size();
  }
  std::string out;
  out.reserve(total);
  for (int32_t id : ids) out += tokens[size_t(id)];
  return out;
}

std::vector<std::vector<int32_t>> BpeTokenizer::encode_batch(const std::vector<std::string>& texts,
                                                             int threads) const {
  std::vector<std::vector<int32_t>> result(texts.size());
  const int n_threads = threads > 0 ? threads : omp_get_max_threads();
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (long i = 0; i < long(texts.size()); ++i) {
    try {
      result[size_t(i)] = encode(texts[size_t(i)]);
    } catch (...) {
#pragma omp critical(nuri_bpe_encode_batch)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return result;
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  const auto& tokens = impl_->model.tokens;
  NURI_CHECK(id >= 0 && size_t(id) < tokens.size(), data, "tokenizer.token_bytes",
             "id " << id << " is outside the vocabulary [0, " << tokens.size()
                   << ") of tokenizer '" << impl_->name << "'");
  return tokens[size_t(id)];
}

int32_t BpeTokenizer::special_id(const std::string& text) const {
  for (const SpecialToken& s : impl_->model.specials)
    if (s.text == text) return s.id;
  return -1;
}

namespace bpe {

std::vector<std::pair<int32_t, int32_t>> implied_merges(const BpeTokenizer& tokenizer) {
  const BpeModel& model = tokenizer.model();
  std::vector<bool> is_special(model.tokens.size(), false);
  for (const SpecialToken& s : model.specials) is_special[size_t(s.id)] = true;
  TokenIndex index;
  index.build(model.tokens, is_special);
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<size_t> starts;  // part boundaries of the token being split
  for (size_t id = 0; id < model.tokens.size(); ++id) {
    const std::string_view t = model.tokens[id];
    if (is_special[id] || t.size() < 2) continue;
    // tiktoken's merge loop on byte ranges, allowing only tokens ranked below this one.
    starts.resize(t.size() + 1);
    for (size_t i = 0; i <= t.size(); ++i) starts[i] = i;
    auto rank_of = [&](size_t i) {  // the pair (part i, part i+1)
      const int32_t r = index.find(t.substr(starts[i], starts[i + 2] - starts[i]));
      return r >= 0 && size_t(r) < id ? r : kNoRank;
    };
    while (starts.size() > 3) {
      int32_t best_rank = kNoRank;
      size_t best = 0;
      for (size_t i = 0; i + 2 < starts.size(); ++i) {
        const int32_t r = rank_of(i);
        if (r < best_rank) best_rank = r, best = i;
      }
      if (best_rank == kNoRank) break;
      starts.erase(starts.begin() + long(best) + 1);
    }
    if (starts.size() != 3) continue;  // not reachable as one merge of two lower-ranked tokens
    const int32_t left = index.find(t.substr(0, starts[1]));
    const int32_t right = index.find(t.substr(starts[1]));
    merges.emplace_back(left, right);
  }
  return merges;
}

}  // namespace bpe
}  // namespace nuri

// Token shards: the binary format, the writer, the memory-mapped reader, manifest.json, and the
// tokenizing pipeline behind `nuri tokenize` (work units, batched parallel encoding).
// docs/data-format.md specifies the bytes.
#include "nuri/shards.hpp"

#include <exception>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nuri/error.hpp"

#ifndef NURI_VERSION
#define NURI_VERSION "0.1.0"
#endif

namespace nuri {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and read in place; a big-endian port must byte-swap");

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'N', 'U', 'R', 'I', 'T', 'O', 'K', '\0'};

std::string hex(uint64_t v) {
  std::ostringstream o;
  o << "0x" << std::hex << std::setw(16) << std::setfill('0') << v;
  return o.str();
}

// Header bytes: magic[8] u32 version u32 dtype u64 vocab u64 tokens u64 documents
// u64 tokenizer_hash u64 content_xxh64 u64 header_xxh64 (of bytes 0..56).
void encode_header(const ShardHeader& h, unsigned char* out) {
  std::memcpy(out, kMagic, 8);
  std::memcpy(out + 8, &h.version, 4);
  std::memcpy(out + 12, &h.dtype, 4);
  std::memcpy(out + 16, &h.vocab_size, 8);
  std::memcpy(out + 24, &h.tokens, 8);
  std::memcpy(out + 32, &h.documents, 8);
  std::memcpy(out + 40, &h.tokenizer_hash, 8);
  std::memcpy(out + 48, &h.content_xxh64, 8);
  const uint64_t check = XXH64(out, 56, 0);
  std::memcpy(out + 56, &check, 8);
}

std::string what_to_do_for_shard() { return "re-run `nuri tokenize` to write the shards again"; }

}  // namespace

uint32_t shard_dtype_for_vocab(uint64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// TokenShard -------------------------------------------------------------------------------------

std::shared_ptr<TokenShard> TokenShard::open(const std::string& path, const ShardCheck& check) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  NURI_CHECK(fd >= 0, io, "shard", "cannot open token shard '" << path << "': " << std::strerror(errno)
                                    << "; check the path (shards are listed in the directory's manifest.json)");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    NURI_THROW(io, "shard", "token shard '" << path << "' is not a regular file");
  }
  const uint64_t bytes = uint64_t(st.st_size);
  std::shared_ptr<TokenShard> shard(new TokenShard());
  shard->path_ = path;
  if (bytes > 0) {
    void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);
    NURI_CHECK(map != MAP_FAILED, io, "shard", "cannot memory-map token shard '" << path << "': " << std::strerror(err));
    ::madvise(map, bytes, MADV_RANDOM);
    shard->map_ = static_cast<const unsigned char*>(map);
    shard->map_bytes_ = bytes;
  } else {
    ::close(fd);
  }
  const unsigned char* p = shard->map_;
  // A foreign file first: that is the likeliest mistake and says the most.
  NURI_CHECK(bytes >= 8 && std::memcmp(p, kMagic, 8) == 0, data, "shard",
             "'" << path << "' is not a nuri token shard (it does not start with \"NURITOK\"); pass a directory "
                 "written by `nuri tokenize` (data.datasets)");
  NURI_CHECK(bytes >= kShardHeaderBytes, io, "shard",
             "token shard '" << path << "' is truncated: " << bytes << " bytes, shorter than the "
                             << kShardHeaderBytes << "-byte header; " << what_to_do_for_shard());
  ShardHeader& h = shard->header_;
  std::memcpy(&h.version, p + 8, 4);
  std::memcpy(&h.dtype, p + 12, 4);
  std::memcpy(&h.vocab_size, p + 16, 8);
  std::memcpy(&h.tokens, p + 24, 8);
  std::memcpy(&h.documents, p + 32, 8);
  std::memcpy(&h.tokenizer_hash, p + 40, 8);
  std::memcpy(&h.content_xxh64, p + 48, 8);
  uint64_t stored_check = 0;
  std::memcpy(&stored_check, p + 56, 8);
  // The version before the checksum: a later version may define the header differently.
  NURI_CHECK(h.version == kShardFormatVersion, data, "shard",
             "token shard '" << path << "' has format version " << h.version << "; this nuri reads version "
                             << kShardFormatVersion << ". Re-tokenize with this nuri (`nuri tokenize`) or use "
                             << "the nuri that wrote it");
  NURI_CHECK(XXH64(p, 56, 0) == stored_check, data, "shard",
             "token shard '" << path << "' has a corrupt header (checksum mismatch); " << what_to_do_for_shard());
  NURI_CHECK(h.dtype == 2 || h.dtype == 4, data, "shard",
             "token shard '" << path << "' has token dtype " << h.dtype << " (bytes per token); only 2 and 4 exist");
  NURI_CHECK(h.vocab_size > 0 && h.vocab_size <= (uint64_t(1) << 31) && h.dtype >= shard_dtype_for_vocab(h.vocab_size),
             data, "shard",
             "token shard '" << path << "' declares vocab size " << h.vocab_size << " with " << h.dtype
                             << "-byte tokens, which cannot hold it; " << what_to_do_for_shard());
  // The byte count in 128 bits: a hostile token count must not wrap around in the message.
  const unsigned __int128 promised = (unsigned __int128)kShardHeaderBytes + (unsigned __int128)h.tokens * h.dtype;
  NURI_CHECK(promised <= bytes, io, "shard",
             "token shard '" << path << "' is truncated: the header promises " << h.tokens << " tokens ("
                             << (promised >> 64 ? std::string("more than 2^64") : std::to_string(uint64_t(promised)))
                             << " bytes) but the file has " << bytes << " bytes; the copy or "
                             << "the write was cut short: copy it again or " << what_to_do_for_shard());
  const uint64_t expected = uint64_t(promised);
  NURI_CHECK(bytes == expected, data, "shard",
             "token shard '" << path << "' has " << bytes - expected << " bytes after its " << h.tokens
                             << " tokens (expected " << expected << " bytes, found " << bytes << "); "
                             << what_to_do_for_shard());
  if (check.tokenizer) {
    NURI_CHECK(h.tokenizer_hash == check.tokenizer->hash(), data, "shard",
               "token shard '" << path << "' was made by a tokenizer with hash " << hex(h.tokenizer_hash)
                               << " but this run's tokenizer '" << check.tokenizer->name() << "' has hash "
                               << hex(check.tokenizer->hash())
                               << "; the ids would decode to other text. Set data.tokenizer to the tokenizer "
                                  "the shards were made with, or re-tokenize with `nuri tokenize --tokenizer "
                               << check.tokenizer->name() << "`");
  }
  if (check.max_vocab > 0) {
    NURI_CHECK(h.vocab_size <= check.max_vocab, config, "shard",
               "token shard '" << path << "' has vocab size " << h.vocab_size << ", larger than "
                               << check.vocab_key << " (" << check.max_vocab << "); set " << check.vocab_key
                               << " = " << h.vocab_size << " (or more)");
  }
  if (check.verify) shard->verify();
  return shard;
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

TokenView TokenShard::view() const {
  TokenView v;
  v.data = map_ + kShardHeaderBytes;
  v.size = header_.tokens;
  v.token_bytes = int(header_.dtype);
  v.source = path_;
  v.owner = shared_from_this();
  return v;
}

void TokenShard::verify() const {
  const uint64_t n = header_.tokens * header_.dtype;
  ::madvise(const_cast<unsigned char*>(map_), map_bytes_, MADV_SEQUENTIAL);
  const uint64_t got = XXH64(map_ + kShardHeaderBytes, n, 0);
  ::madvise(const_cast<unsigned char*>(map_), map_bytes_, MADV_RANDOM);
  NURI_CHECK(got == header_.content_xxh64, data, "shard",
             "token shard '" << path_ << "' is corrupt: the xxh64 of its tokens is " << hex(got)
                             << " but the header records " << hex(header_.content_xxh64) << "; "
                             << what_to_do_for_shard());
}

// ShardWriter ------------------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, uint64_t vocab_size, uint64_t tokenizer_hash)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  header_.vocab_size = vocab_size;
  header_.dtype = shard_dtype_for_vocab(vocab_size);
  header_.tokenizer_hash = tokenizer_hash;
  FILE* f = std::fopen(tmp_path_.c_str(), "wb");
  NURI_CHECK(f, io, "shard", "cannot create '" << tmp_path_ << "': " << std::strerror(errno)
                              << "; check that the output directory is writable");
  file_ = f;
  unsigned char zero[kShardHeaderBytes] = {};
  std::fwrite(zero, 1, sizeof zero, f);  // the header is written by finish()
  hash_state_ = XXH64_createState();
  XXH64_reset(static_cast<XXH64_state_t*>(hash_state_), 0);
  buffer_.reserve(size_t(1) << 20);
}

ShardWriter::~ShardWriter() {
  if (file_) std::fclose(static_cast<FILE*>(file_));
  if (hash_state_) XXH64_freeState(static_cast<XXH64_state_t*>(hash_state_));
  if (!finished_) std::remove(tmp_path_.c_str());
}

void ShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  XXH64_update(static_cast<XXH64_state_t*>(hash_state_), buffer_.data(), buffer_.size());
  const size_t wrote = std::fwrite(buffer_.data(), 1, buffer_.size(), static_cast<FILE*>(file_));
  NURI_CHECK(wrote == buffer_.size(), io, "shard", "cannot write '" << tmp_path_ << "': " << std::strerror(errno)
                                                   << " (disk full?)");
  buffer_.clear();
}

void ShardWriter::add_document(const int32_t* ids, size_t n, int32_t eot_id) {
  NURI_CHECK(!finished_, internal, "shard", "add_document after finish on '" << path_ << "'");
  // Range check first (a min/max reduction), then a branch-free conversion to the dtype.
  int32_t lo = eot_id, hi = eot_id;
  for (size_t i = 0; i < n; ++i) {
    lo = std::min(lo, ids[i]);
    hi = std::max(hi, ids[i]);
  }
  if (lo < 0 || uint64_t(hi) >= header_.vocab_size) {
    const int32_t bad = lo < 0 ? lo : hi;
    NURI_THROW(data, "shard", "the tokenizer produced id " << bad << ", outside its vocabulary of " << header_.vocab_size
                                                           << " (writing '" << path_ << "'); the tokenizer file is inconsistent");
  }
  const size_t width = header_.dtype;
  const size_t old = buffer_.size();
  buffer_.resize(old + (n + 1) * width);
  unsigned char* out = buffer_.data() + old;
  if (width == 2) {
    for (size_t i = 0; i < n; ++i) {
      out[2 * i] = uint8_t(ids[i]);
      out[2 * i + 1] = uint8_t(ids[i] >> 8);
    }
  } else {
    std::memcpy(out, ids, n * 4);  // little-endian int32 in [0, vocab) == uint32
  }
  const uint32_t eot = uint32_t(eot_id);
  std::memcpy(out + n * width, &eot, width);  // little-endian: the low bytes first
  header_.tokens += n + 1;
  header_.documents += 1;
  if (buffer_.size() >= (size_t(1) << 20)) flush_buffer();
}

ShardEntry ShardWriter::finish() {
  NURI_CHECK(!finished_, internal, "shard", "finish twice on '" << path_ << "'");
  flush_buffer();
  header_.content_xxh64 = XXH64_digest(static_cast<XXH64_state_t*>(hash_state_));
  unsigned char head[kShardHeaderBytes];
  encode_header(header_, head);
  FILE* f = static_cast<FILE*>(file_);
  const bool ok = std::fseek(f, 0, SEEK_SET) == 0 && std::fwrite(head, 1, sizeof head, f) == sizeof head &&
                  std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int err = errno;
  std::fclose(f);
  file_ = nullptr;
  NURI_CHECK(ok, io, "shard", "cannot write '" << tmp_path_ << "': " << std::strerror(err) << " (disk full?)");
  NURI_CHECK(std::rename(tmp_path_.c_str(), path_.c_str()) == 0, io, "shard",
             "cannot rename '" << tmp_path_ << "' to '" << path_ << "': " << std::strerror(errno));
  finished_ = true;
  return {fs::path(path_).filename().string(), header_.tokens, header_.documents};
}

// Manifest ---------------------------------------------------------------------------------------

uint64_t ShardSplit::tokens() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.tokens;
  return n;
}

uint64_t ShardSplit::documents() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.documents;
  return n;
}

namespace {

nlohmann::json split_json(const ShardSplit& s) {
  nlohmann::json shards = nlohmann::json::array();
  for (const auto& e : s.shards) shards.push_back({{"file", e.file}, {"tokens", e.tokens}, {"documents", e.documents}});
  return {{"tokens", s.tokens()}, {"documents", s.documents()}, {"shards", shards}};
}

}  // namespace

void write_manifest(const std::string& dir, const ShardManifest& m) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& f : m.sources) sources.push_back({{"path", f.path}, {"bytes", f.bytes}, {"jsonl", f.jsonl}});
  nlohmann::json j = {
      {"format", "nuri-token-shards"},
      {"version", m.version},
      {"tokenizer", {{"name", m.tokenizer_name}, {"hash", hex(m.tokenizer_hash)}, {"vocab_size", m.vocab_size},
                     {"eot_id", m.eot_id}}},
      {"dtype", m.dtype},
      {"documents", m.documents},
      {"jsonl_field", m.jsonl_field},
      {"val_fraction", m.val_fraction},
      {"sources", sources},
      {"splits", {{"train", split_json(m.train)}, {"val", split_json(m.val)}}},
      {"totals", {{"tokens", m.train.tokens() + m.val.tokens()},
                  {"documents", m.train.documents() + m.val.documents()},
                  {"shards", m.train.shards.size() + m.val.shards.size()}}},
      {"created", {{"at", m.created_at}, {"by", m.created_by}, {"ranks", m.ranks}, {"threads", m.threads}}},
  };
  const std::string path = dir + "/manifest.json", tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    out.flush();
    NURI_CHECK(out.good(), io, "manifest", "cannot write '" << tmp << "'; check that the directory is writable");
  }
  NURI_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io, "manifest",
             "cannot rename '" << tmp << "' to '" << path << "': " << std::strerror(errno));
}

ShardManifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  NURI_CHECK(fs::is_directory(dir), io, "manifest",
             "'" << dir << "' is not a directory; data.datasets lists directories written by `nuri tokenize -o DIR`");
  std::ifstream in(path);
  NURI_CHECK(in.good(), io, "manifest",
             "'" << dir << "' has no manifest.json; is it an output directory of `nuri tokenize`? (an "
                 "interrupted run writes no manifest: run it again)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    NURI_THROW(data, "manifest", "'" << path << "' is not valid JSON (" << e.what() << ")");
  }
  ShardManifest m;
  auto parse_hash = [&](const std::string& s) -> uint64_t {
    size_t used = 0;
    uint64_t v = 0;
    try {
      v = std::stoull(s, &used, 16);
    } catch (const std::exception&) {
      used = 0;
    }
    NURI_CHECK(used == s.size() && !s.empty(), data, "manifest", "'" << path << "': tokenizer.hash '" << s
                                                                 << "' is not a hexadecimal number");
    return v;
  };
  try {
    NURI_CHECK(j.value("format", "") == "nuri-token-shards", data, "manifest",
               "'" << path << "' is not a nuri token-shard manifest (no \"format\": \"nuri-token-shards\")");
    m.version = j.at("version").get<uint32_t>();
    NURI_CHECK(m.version == kShardFormatVersion, data, "manifest",
               "'" << path << "' has format version " << m.version << "; this nuri reads version "
                   << kShardFormatVersion << ". Re-tokenize with this nuri");
    const auto& t = j.at("tokenizer");
    m.tokenizer_name = t.at("name").get<std::string>();
    m.tokenizer_hash = parse_hash(t.at("hash").get<std::string>());
    m.vocab_size = t.at("vocab_size").get<uint64_t>();
    m.eot_id = t.at("eot_id").get<int32_t>();
    m.dtype = j.at("dtype").get<uint32_t>();
    m.documents = j.value("documents", "blank-line");
    m.jsonl_field = j.value("jsonl_field", "text");
    m.val_fraction = j.value("val_fraction", 0.0);
    for (const auto& s : j.at("sources"))
      m.sources.push_back({s.at("path").get<std::string>(), s.value("jsonl", false), s.at("bytes").get<uint64_t>()});
    for (auto [name, split] : {std::pair<const char*, ShardSplit*>{"train", &m.train}, {"val", &m.val}}) {
      for (const auto& e : j.at("splits").at(name).at("shards")) {
        ShardEntry entry{e.at("file").get<std::string>(), e.at("tokens").get<uint64_t>(),
                         e.at("documents").get<uint64_t>()};
        NURI_CHECK(!entry.file.empty() && entry.file.find('/') == std::string::npos, data, "manifest",
                   "'" << path << "' lists shard '" << entry.file << "'; shard names are plain file names");
        split->shards.push_back(entry);
      }
    }
    const auto& c = j.value("created", nlohmann::json::object());
    m.created_at = c.value("at", "");
    m.created_by = c.value("by", "");
    m.ranks = c.value("ranks", 1);
    m.threads = c.value("threads", 1);
  } catch (const nlohmann::json::exception& e) {
    NURI_THROW(data, "manifest", "'" << path << "' is not a valid manifest: " << e.what()
                                     << "; it is written by `nuri tokenize`, run it again");
  }
  return m;
}

std::vector<TokenView> ShardDataset::train_views() const {
  std::vector<TokenView> v;
  for (const auto& s : train) v.push_back(s->view());
  return v;
}

std::vector<TokenView> ShardDataset::val_views() const {
  std::vector<TokenView> v;
  for (const auto& s : val) v.push_back(s->view());
  return v;
}

ShardDataset open_shard_dataset(const std::string& dir, const ShardCheck& check) {
  ShardDataset ds;
  ds.dir = dir;
  ds.manifest = read_manifest(dir);
  const ShardManifest& m = ds.manifest;
  const std::string path = dir + "/manifest.json";
  if (check.tokenizer) {
    NURI_CHECK(m.tokenizer_hash == check.tokenizer->hash(), data, "manifest",
               "the shards in '" << dir << "' were made by tokenizer '" << m.tokenizer_name << "' (hash "
                                 << hex(m.tokenizer_hash) << ", " << path << ") but this run's tokenizer '"
                                 << check.tokenizer->name() << "' has hash " << hex(check.tokenizer->hash())
                                 << "; the ids would decode to other text. Set data.tokenizer to the tokenizer "
                                    "the shards were made with, or re-tokenize: `nuri tokenize --tokenizer "
                                 << check.tokenizer->name() << " -o " << dir << " ...`");
  }
  if (check.max_vocab > 0) {
    NURI_CHECK(m.vocab_size <= check.max_vocab, config, "manifest",
               "the shards in '" << dir << "' have vocab size " << m.vocab_size << " (tokenizer '"
                                 << m.tokenizer_name << "', " << path << "), larger than " << check.vocab_key
                                 << " (" << check.max_vocab << "); set " << check.vocab_key << " = "
                                 << m.vocab_size << " (or more)");
  }
  for (auto [split, out] : {std::pair<const ShardSplit*, std::vector<std::shared_ptr<TokenShard>>*>{&m.train, &ds.train},
                            {&m.val, &ds.val}}) {
    for (const ShardEntry& e : split->shards) {
      auto shard = TokenShard::open(dir + "/" + e.file, check);
      NURI_CHECK(shard->size() == e.tokens && shard->header().documents == e.documents, data, "manifest",
                 "token shard '" << shard->path() << "' holds " << shard->size() << " tokens in "
                                 << shard->header().documents << " documents but " << path << " lists "
                                 << e.tokens << " tokens in " << e.documents
                                 << " documents; the directory mixes two runs: run `nuri tokenize` again");
      NURI_CHECK(shard->header().tokenizer_hash == m.tokenizer_hash, data, "manifest",
                 "token shard '" << shard->path() << "' was made by tokenizer hash "
                                 << hex(shard->header().tokenizer_hash) << " but " << path << " records "
                                 << hex(m.tokenizer_hash) << "; run `nuri tokenize` again");
      out->push_back(std::move(shard));
    }
  }
  return ds;
}

uint64_t token_stream_xxh64(const std::vector<TokenView>& views) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  std::vector<int32_t> buf(size_t(1) << 16);
  for (const TokenView& v : views) {
    for (uint64_t pos = 0; pos < v.size; pos += buf.size()) {
      const uint64_t n = std::min<uint64_t>(buf.size(), v.size - pos);
      v.copy(pos, n, buf.data());
      XXH64_update(st, buf.data(), n * sizeof(int32_t));
    }
  }
  const uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

// Work units -------------------------------------------------------------------------------------

std::vector<WorkUnit> plan_work_units(const std::vector<TextFile>& files, const TextSourceOptions& sources,
                                      uint64_t unit_bytes) {
  NURI_CHECK(unit_bytes > 0, internal, "tokenize", "unit_bytes is 0");
  std::vector<WorkUnit> units;
  for (size_t f = 0; f < files.size(); ++f) {
    const uint64_t size = files[f].bytes;
    // One document per file cannot be cut; nor can an empty file.
    const bool whole = (!files[f].jsonl && sources.text_documents == DocumentSplit::file) || size <= unit_bytes;
    if (whole) {
      units.push_back({f, 0, size});
      continue;
    }
    for (uint64_t b = 0; b < size; b += unit_bytes) units.push_back({f, b, std::min(size, b + unit_bytes)});
  }
  return units;
}

std::pair<size_t, size_t> units_for_rank(const std::vector<WorkUnit>& units, int rank, int world) {
  NURI_CHECK(world >= 1 && rank >= 0 && rank < world, internal, "tokenize", "rank " << rank << " of " << world);
  uint64_t total = 0;
  for (const auto& u : units) total += u.end - u.begin;
  // Unit i goes to the rank r whose share [r*total/w, (r+1)*total/w) of the input bytes holds the
  // unit's first byte: owners never decrease, so each rank gets a contiguous run in stream order.
  size_t first = units.size(), last = units.size();
  uint64_t start = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    const int owner = total == 0 ? 0 : int(std::min<unsigned __int128>(
                                             unsigned(world - 1), (unsigned __int128)start * unsigned(world) / total));
    if (owner >= rank && first == units.size()) first = i;
    if (owner > rank) {
      last = i;
      break;
    }
    start += units[i].end - units[i].begin;
  }
  return {std::min(first, last), last};
}

namespace {

bool is_blank_text(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

// The 1-based line number of byte `offset` of `path` (for messages only: reads the prefix).
uint64_t line_of_offset(const std::string& path, uint64_t offset) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(size_t(1) << 20);
  uint64_t line = 1, pos = 0;
  while (pos < offset && in) {
    in.read(buf.data(), std::streamsize(std::min<uint64_t>(buf.size(), offset - pos)));
    const size_t got = size_t(in.gcount());
    if (got == 0) break;
    line += uint64_t(std::count(buf.data(), buf.data() + got, '\n'));
    pos += got;
  }
  return line;
}

// Reads lines of `path` from byte `from`: fn(line with its '\n', absolute offset) returns false to stop.
void read_lines_from(const std::string& path, uint64_t from, size_t chunk_bytes,
                     const std::function<bool(std::string_view, uint64_t)>& fn,
                     const std::function<void(uint64_t)>& on_bytes) {
  std::ifstream in(path, std::ios::binary);
  NURI_CHECK(in.good(), io, "read", "cannot open '" << path << "'; check the path and permissions");
  in.seekg(std::streamoff(from));
  NURI_CHECK(in.good(), io, "read", "cannot seek to byte " << from << " of '" << path << "'");
  std::string buf;
  std::vector<char> chunk(std::max<size_t>(chunk_bytes, 4096));
  uint64_t offset = from;  // of buf[0]
  while (true) {
    in.read(chunk.data(), std::streamsize(chunk.size()));
    const size_t got = size_t(in.gcount());
    NURI_CHECK(!in.bad(), io, "read", "error while reading '" << path << "' at byte " << offset + buf.size());
    if (got == 0) break;
    buf.append(chunk.data(), got);
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string_view line = std::string_view(buf).substr(start, nl + 1 - start);
      if (on_bytes) on_bytes(line.size());
      if (!fn(line, offset)) return;
      offset += line.size();
    }
    buf.erase(0, start);
  }
  if (!buf.empty()) {
    if (on_bytes) on_bytes(buf.size());
    fn(buf, offset);
  }
}

}  // namespace

void for_each_document_in_unit(const TextFile& file, const WorkUnit& unit, const TextSourceOptions& options,
                               const std::function<void(const Document&)>& fn,
                               const std::function<void(uint64_t)>& on_bytes) {
  // A whole file is read by text_source itself: the one definition of the rules.
  if (unit.begin == 0 && unit.end >= file.bytes) {
    for_each_document(file, options, fn, on_bytes);
    return;
  }
  // A cut file (never DocumentSplit::file). Cut points: for lines (line mode, JSONL), the first
  // line start at or after the nominal offset; for blank-line documents, just after the first
  // blank line that starts at or after it. Unit k covers [cut(begin), cut(end)), cut(0) = 0,
  // cut(file size) = end of file, so a file's units together read every line exactly once and
  // every document lies inside one unit.
  const bool by_line = file.jsonl || options.text_documents == DocumentSplit::line;
  const bool last_unit = unit.end >= file.bytes;
  uint64_t reported = 0;
  auto report = [&](uint64_t n) {
    // Progress counts the nominal range only, so a file's units add up to its size.
    const uint64_t room = (unit.end - unit.begin) - reported;
    const uint64_t take = std::min(room, n);
    reported += take;
    if (on_bytes && take) on_bytes(take);
  };

  auto emit_text = [&](std::string_view text, uint64_t offset) {
    if (is_blank_text(text)) return;
    if (options.strict_utf8) {
      const size_t bad = first_invalid_utf8(std::string(text));
      if (bad != std::string::npos) {
        NURI_THROW(data, "read", "'" << file.path << "' is not valid UTF-8: byte " << offset + bad << " (line "
                                     << line_of_offset(file.path, offset + bad)
                                     << ") starts no valid sequence. Convert the file to UTF-8 "
                                     << "(for legacy Korean text: iconv -f CP949 -t UTF-8)");
      }
    }
    fn(Document{text, is_validation_document(text, options.val_fraction), 0});
  };
  auto emit_jsonl = [&](std::string_view line, uint64_t offset) {
    if (is_blank_text(line)) return;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      NURI_THROW(data, "read", "'" << file.path << "' line " << line_of_offset(file.path, offset) << " is not valid JSON ("
                                   << e.what() << "); a JSONL file holds one JSON object per line");
    }
    const auto it = j.is_object() ? j.find(options.jsonl_field) : j.end();
    NURI_CHECK(j.is_object() && it != j.end() && it->is_string(), data, "read",
               "'" << file.path << "' line " << line_of_offset(file.path, offset) << " has no string field \""
                   << options.jsonl_field << "\"; choose the field with --jsonl-field");
    const std::string& text = it->get_ref<const std::string&>();
    if (!is_blank_text(text)) fn(Document{text, is_validation_document(text, options.val_fraction), 0});
  };

  // Start one byte early so that a cut exactly at a line start is seen as one.
  const uint64_t from = unit.begin == 0 ? 0 : unit.begin - 1;
  bool skipping = unit.begin > 0;  // before the unit's first line (or, blank-line mode, its cut)
  bool partial = unit.begin > 0;   // the first "line" from `from` is the tail of a line before the unit
  std::string doc;
  uint64_t doc_offset = 0;
  read_lines_from(file.path, from, options.chunk_bytes, [&](std::string_view line, uint64_t offset) {
    if (partial) {
      partial = false;
      return true;  // ends at the first '\n' at or after begin - 1
    }
    if (skipping) {
      if (by_line) {
        skipping = false;  // the first line start >= begin
      } else {
        if (is_blank_text(line)) {
          if (!last_unit && offset >= unit.end) {  // the cut of `end` is this very line: empty unit
            return false;
          }
          skipping = false;
        }
        return true;
      }
    }
    report(line.size());
    if (by_line) {
      if (!last_unit && offset >= unit.end) {
        return false;
      }
      if (file.jsonl) {
        emit_jsonl(line, offset);
      } else {
        emit_text(line, offset);
      }
      return true;
    }
    if (is_blank_text(line)) {
      emit_text(doc, doc_offset);
      doc.clear();
      if (!last_unit && offset >= unit.end) {
        return false;
      }
    } else {
      if (doc.empty()) doc_offset = offset;
      doc.append(line);
    }
    return true;
  }, {});
  if (!skipping) emit_text(doc, doc_offset);
  report(unit.end - unit.begin);  // the rest of the nominal range (skipped or past a cut)
}

// Tokenizing -------------------------------------------------------------------------------------

namespace {

// Writes one split's shards in order, closing a shard before a document would pass the limit.
class RollingShardWriter {
 public:
  RollingShardWriter(std::string dir, std::string split, int rank, const Tokenizer& tok, uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), rank_(rank), tok_(tok), shard_tokens_(shard_tokens),
        vocab_(uint64_t(tok.vocab_size())), hash_(tok.hash()), eot_(tok.eot_id()) {}

  void add(const std::vector<int32_t>& ids) {
    if (writer_ && writer_->tokens() > 0 && writer_->tokens() + ids.size() + 1 > shard_tokens_) close();
    if (!writer_) {
      char name[64];
      std::snprintf(name, sizeof name, "%s-%05d-%05zu.bin", split_.c_str(), rank_, done_.shards.size());
      writer_ = std::make_unique<ShardWriter>(dir_ + "/" + name, vocab_, hash_);
    }
    writer_->add_document(ids.data(), ids.size(), eot_);
  }
  void close() {
    if (writer_) done_.shards.push_back(writer_->finish());
    writer_.reset();
  }
  ShardSplit& done() { return done_; }
  uint64_t tokens() const { return done_.tokens() + (writer_ ? writer_->tokens() : 0); }

 private:
  std::string dir_, split_;
  int rank_;
  const Tokenizer& tok_;
  uint64_t shard_tokens_, vocab_, hash_;
  int32_t eot_;
  std::unique_ptr<ShardWriter> writer_;
  ShardSplit done_;
};

struct Batch {
  std::string text;                               // the documents, back to back
  std::vector<std::pair<size_t, size_t>> docs;    // (offset, length) in text
  std::vector<char> val;
  std::vector<std::vector<int32_t>> ids;          // filled by encoding
  void clear() {
    text.clear();
    docs.clear();
    val.clear();
    ids.clear();
  }
};

}  // namespace

TokenizeResult tokenize_to_shards(const std::vector<TextFile>& files, const Tokenizer& tokenizer,
                                  const TokenizeOptions& options, int rank, int world) {
  NURI_CHECK(!options.output_dir.empty(), config, "tokenize", "no output directory; give -o DIR");
  NURI_CHECK(options.shard_tokens >= 1, config, "tokenize", "--shard-tokens must be at least 1");
  std::error_code ec;
  fs::create_directories(options.output_dir, ec);
  NURI_CHECK(!ec && fs::is_directory(options.output_dir), io, "tokenize",
             "cannot create the output directory '" << options.output_dir << "': " << ec.message());
  const std::vector<WorkUnit> units = plan_work_units(files, options.sources, options.unit_bytes);
  const auto [first, last] = units_for_rank(units, rank, world);
  const size_t threads = size_t(std::max(1, options.threads));

  RollingShardWriter train(options.output_dir, "train", rank, tokenizer, options.shard_tokens);
  RollingShardWriter val(options.output_dir, "val", rank, tokenizer, options.shard_tokens);
  std::atomic<uint64_t> bytes_read{0};

  // Reads this rank's units in order, handing over batches of about batch_bytes of documents.
  auto read_all = [&](const std::function<void(Batch&&)>& emit) {
    Batch current;
    for (size_t u = first; u < last; ++u) {
      const WorkUnit& unit = units[u];
      for_each_document_in_unit(files[unit.file], unit, options.sources, [&](const Document& doc) {
        current.docs.emplace_back(current.text.size(), doc.text.size());
        current.text.append(doc.text);
        current.val.push_back(doc.val);
        if (current.text.size() >= options.batch_bytes) {
          emit(std::move(current));
          current = Batch();
        }
      }, [&](uint64_t n) { bytes_read += n; });
    }
    if (!current.docs.empty()) emit(std::move(current));
  };
  // Encodes a group of consecutive batches in parallel, then writes them in order.
  std::vector<Batch> group;
  auto encode_and_write = [&] {
    const int n = int(group.size());
    // An exception must not leave an OpenMP region (GCC terminates the process): keep the first
    // and rethrow it here, so the error reaches the user and the writers clean up their files.
    std::exception_ptr failure;
#pragma omp parallel for num_threads(int(threads)) schedule(dynamic, 1) if (threads > 1 && n > 1)
    for (int b = 0; b < n; ++b) {
      try {
        Batch& batch = group[size_t(b)];
        batch.ids.resize(batch.docs.size());
        for (size_t d = 0; d < batch.docs.size(); ++d)
          batch.ids[d] = tokenizer.encode(batch.text.substr(batch.docs[d].first, batch.docs[d].second));
      } catch (...) {
#pragma omp critical(nuri_tokenize_encode)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    for (Batch& batch : group)
      for (size_t d = 0; d < batch.ids.size(); ++d) (batch.val[d] ? val : train).add(batch.ids[d]);
    group.clear();
    if (options.progress) options.progress(bytes_read.load(), train.tokens() + val.tokens());
  };

  if (threads == 1) {
    read_all([&](Batch&& b) {
      group.push_back(std::move(b));
      encode_and_write();
    });
  } else {
    // One reader thread (text_source: reading, UTF-8 checks, the split hash) runs ahead while
    // this thread encodes up to `threads` batches at a time and writes them in order.
    struct Cancelled {};
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<Batch> queue;
    bool done = false, cancel = false;
    std::exception_ptr read_error;
    const size_t capacity = 2 * threads;
    std::thread reader([&] {
      try {
        read_all([&](Batch&& b) {
          std::unique_lock<std::mutex> lock(mutex);
          changed.wait(lock, [&] { return queue.size() < capacity || cancel; });
          if (cancel) throw Cancelled{};
          queue.push_back(std::move(b));
          changed.notify_all();
        });
      } catch (const Cancelled&) {
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        read_error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
      changed.notify_all();
    });
    try {
      while (true) {
        {
          std::unique_lock<std::mutex> lock(mutex);
          // A full group, so that every thread has a batch to encode (or whatever is left).
          changed.wait(lock, [&] { return queue.size() >= threads || done; });
          while (!queue.empty() && group.size() < threads) {
            group.push_back(std::move(queue.front()));
            queue.pop_front();
          }
          changed.notify_all();
          if (group.empty()) break;  // done and drained
        }
        encode_and_write();
      }
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        cancel = true;
      }
      changed.notify_all();
      reader.join();
      throw;
    }
    reader.join();
    if (read_error) std::rethrow_exception(read_error);
  }
  train.close();
  val.close();
  TokenizeResult result;
  result.train = train.done();
  result.val = val.done();
  result.bytes_read = bytes_read.load();
  return result;
}

ShardManifest make_manifest(const Tokenizer& tokenizer, const TokenizeOptions& options,
                            const std::vector<TextFile>& files, const std::vector<TokenizeResult>& ranks) {
  ShardManifest m;
  m.tokenizer_name = tokenizer.name();
  m.tokenizer_hash = tokenizer.hash();
  m.vocab_size = uint64_t(tokenizer.vocab_size());
  m.eot_id = tokenizer.eot_id();
  m.dtype = shard_dtype_for_vocab(m.vocab_size);
  m.sources = files;
  m.documents = to_string(options.sources.text_documents);
  m.jsonl_field = options.sources.jsonl_field;
  m.val_fraction = options.sources.val_fraction;
  for (const auto& r : ranks) {
    m.train.shards.insert(m.train.shards.end(), r.train.shards.begin(), r.train.shards.end());
    m.val.shards.insert(m.val.shards.end(), r.val.shards.begin(), r.val.shards.end());
  }
  const std::time_t now = std::time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  m.created_at = when;
  m.created_by = "nuri tokenize (nuri " NURI_VERSION ")";
  m.ranks = int(ranks.size());
  m.threads = options.threads;
  return m;
}

}  // namespace nuri

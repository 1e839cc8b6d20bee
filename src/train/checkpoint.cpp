// Training checkpoints: sharded save with an atomic commit, manifest checks, and loading at any
// layout. See include/nuri/checkpoint.hpp for the design and docs/checkpoints.md for the format.
//
// Rank file (little-endian):
//   "NURICKR1"          8 bytes
//   world_rank          u64
//   num_runs            u64
//   runs                num_runs x {u32 tensor, u32 kind, u64 full_offset, u64 count, u64 data}
//                       tensor: index in parameter_layout(model); kind: 0 param, 1 exp_avg,
//                       2 exp_avg_sq; full_offset: element of the full (one-process) tensor;
//                       data: float index into the data section
//   data                floats
#include "nuri/checkpoint.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "comm/agree.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/optim.hpp"
#include "nuri/timer.hpp"
#include "nuri/version.hpp"
#include "train/model_json.hpp"


namespace nuri {

namespace fs = std::filesystem;

namespace {

constexpr char kRankMagic[8] = {'N', 'U', 'R', 'I', 'C', 'K', 'R', '1'};
constexpr const char* kKinds[3] = {"parameters", "exp_avg", "exp_avg_sq"};

struct Run {
  uint32_t tensor, kind;
  uint64_t full_offset, count, data;
};
static_assert(sizeof(Run) == 32, "Run must be packed as the file has it");

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank-%05d.bin", rank);
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// fsync of a file or directory by path; false (errno set) on failure.
bool fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// The moment index of local flat element p, given the optimizer's owned ranges (in order).
size_t moment_index(const std::vector<ParamRange>& owned, size_t p) {
  size_t base = 0;
  for (const ParamRange& r : owned) {
    if (p >= r.offset && p < r.offset + r.count) return base + (p - r.offset);
    base += r.count;
  }
  NURI_THROW(internal, "checkpoint", "element " << p << " is not in the optimizer's owned ranges");
}

// Writes a file, hashing what it writes; finish() flushes and fsyncs. Throws Error(io) naming
// the file, with "disk full" when the system says so.
class HashedWriter {
 public:
  explicit HashedWriter(const std::string& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "wb");
    NURI_CHECK(file_, io, "save checkpoint", "cannot create '" << path << "': " << std::strerror(errno));
    std::setvbuf(file_, nullptr, _IOFBF, 1 << 22);
    hash_ = XXH64_createState();
    XXH64_reset(hash_, 0);
  }
  ~HashedWriter() {
    if (file_) std::fclose(file_);
    XXH64_freeState(hash_);
  }
  HashedWriter(const HashedWriter&) = delete;
  HashedWriter& operator=(const HashedWriter&) = delete;
  // In chunks of 8 MiB: one write() of a gigabyte ran at a fifth of the disk's rate here (the
  // kernel copies and throttles it as one unit); chunks keep the page cache and the hash flowing.
  void write(const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    constexpr size_t kChunk = size_t(8) << 20;
    while (bytes > 0) {
      const size_t n = std::min(bytes, kChunk);
      if (std::fwrite(c, 1, n, file_) != n) fail("writing");
      XXH64_update(hash_, c, n);
      bytes_ += n;
      c += n;
      bytes -= n;
    }
  }
  CheckpointFile finish(const std::string& name) {
    if (std::fflush(file_) != 0) fail("flushing");
    if (::fsync(::fileno(file_)) != 0) fail("syncing");
    const int rc = std::fclose(file_);
    file_ = nullptr;
    if (rc != 0) fail("closing");
    return {name, bytes_, XXH64_digest(hash_)};
  }

 private:
  [[noreturn]] void fail(const char* what) {
    const int e = errno;
    NURI_THROW(io, "save checkpoint", what << " '" << path_ << "' failed after " << bytes_ << " bytes: "
                                           << std::strerror(e)
                                           << (e == ENOSPC || e == EFBIG || e == EDQUOT ? " (disk full or over quota)" : ""));
  }
  std::string path_;
  std::FILE* file_ = nullptr;
  XXH64_state_t* hash_ = nullptr;
  uint64_t bytes_ = 0;
};

// Checkpoint phases run on every rank and agree on failure (src/comm/agree.hpp).
template <class Fn>
void all_or_none(Communicator* world, const std::string& what, Fn&& fn) {
  run_agreed(world, "checkpoint", what, std::forward<Fn>(fn));
}

nlohmann::json manifest_json(const Model& model, const AdamW& optimizer, const TrainerState& s,
                             const CheckpointLayout& layout, const std::vector<CheckpointFile>& files) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const ParamTensor& t : parameter_layout(model.config()))
    tensors.push_back({{"name", t.name}, {"shape", t.full_shape}});
  nlohmann::json jf = nlohmann::json::array();
  for (const CheckpointFile& f : files) jf.push_back({{"name", f.name}, {"bytes", f.bytes}, {"xxh64", hex64(f.xxh64)}});
  return {{"format", "nuri-checkpoint"},
          {"version", 1},
          {"nuri_version", version()},
          {"model", model_config_to_json(model.config())},
          {"tensors", tensors},
          {"step", s.step},
          {"tokens", s.tokens},
          {"loader", s.loader},
          {"seed", s.seed},
          {"tokenizer_hash", hex64(s.tokenizer_hash)},
          {"skipped_steps", s.skipped_steps},
          {"skips_in_row", s.skips_in_row},
          {"optimizer", {{"type", "adamw"}, {"step", optimizer.step_count()}}},
          {"layout", {{"tp", layout.tp_size}, {"dp", layout.dp_size}, {"zero1", layout.zero1}}},
          {"files", jf}};
}

// Writes `text` to `path` through a temporary file, fsynced, renamed (an atomic replace).
void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    HashedWriter w(tmp);
    w.write(text.data(), text.size());
    w.finish(tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  NURI_CHECK(!ec, io, "save checkpoint", "cannot rename '" << tmp << "' to '" << path << "': " << ec.message());
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(5));
}

// Removes the checkpoints the policy does not keep, and stale temporary directories (rank 0).
// Only checkpoints up to `latest` count: after a resume from an older checkpoint, the newer ones
// of the abandoned run are left alone (never deleted for you). Best effort, never throws: the
// save it follows has succeeded already.
void prune(const std::string& dir, const std::string& latest, const CheckpointPolicy& policy) noexcept {
  try {
    const int64_t latest_step = step_of(latest);
    std::vector<std::pair<int64_t, std::string>> steps;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      std::error_code rm;
      if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0) {
        fs::remove_all(it->path(), rm);
        continue;
      }
      const int64_t s = step_of(name);
      if (s >= 0 && s <= latest_step && it->is_directory(rm)) steps.push_back({s, name});
    }
    std::sort(steps.begin(), steps.end());
    const size_t keep_last = size_t(std::max(1, policy.keep_last));
    for (size_t i = 0; i < steps.size(); ++i) {
      const bool recent = i + keep_last >= steps.size();
      const bool milestone = policy.keep_every > 0 && steps[i].first % policy.keep_every == 0;
      if (recent || milestone || steps[i].second == latest) continue;
      std::error_code rm;
      fs::remove_all(fs::path(dir) / steps[i].second, rm);  // a failure keeps one more
    }
  } catch (...) {
    // (allocation failure listing a directory): keep everything
  }
}

// Moves the complete directory `tmp` to `final_dir`, which may exist (the same step saved again
// by a resumed run). The two are swapped in one step (renameat2 RENAME_EXCHANGE), so `final_dir`
// always names a complete checkpoint; where the file system cannot, the earlier one is moved
// aside and moved back if the second rename fails.
void commit_directory(const std::string& tmp, const std::string& final_dir, const std::string& aside) {
  std::error_code ec;
  if (!fs::exists(final_dir)) {
    fs::rename(tmp, final_dir, ec);
    NURI_CHECK(!ec, io, "save checkpoint", "cannot rename '" << tmp << "' to '" << final_dir << "': " << ec.message());
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now the earlier checkpoint
    return;
  }
  fs::remove_all(aside, ec);
  fs::rename(final_dir, aside, ec);
  NURI_CHECK(!ec, io, "save checkpoint", "cannot move the earlier '" << final_dir << "' aside: " << ec.message());
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    std::error_code back;
    fs::rename(aside, final_dir, back);
    NURI_THROW(io, "save checkpoint", "cannot rename '" << tmp << "' to '" << final_dir << "': " << ec.message()
                                      << (back ? "; and the earlier checkpoint is left at '" + aside + "'" : ""));
  }
  fs::remove_all(aside, ec);
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    NURI_CHECK(fd_ >= 0, io, "load checkpoint", "cannot open '" << path << "': " << std::strerror(errno));
    struct stat st;
    NURI_CHECK(::fstat(fd_, &st) == 0, io, "load checkpoint", "cannot stat '" << path << "': " << std::strerror(errno));
    size_ = size_t(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      NURI_CHECK(p != MAP_FAILED, io, "load checkpoint", "cannot map '" << path << "': " << std::strerror(errno));
      data_ = static_cast<const char*>(p);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// Every rank file of a checkpoint, mapped, with an index of its runs by (tensor, kind).
class Reader {
 public:
  explicit Reader(const CheckpointManifest& m) : m_(m), full_(parameter_layout(m.model)) {
    NURI_CHECK(m.tensors.size() == full_.size(), io, "load checkpoint",
               "'" << m.dir << "' lists " << m.tensors.size() << " tensors, but its model has " << full_.size());
    for (size_t i = 0; i < full_.size(); ++i)
      NURI_CHECK(m.tensors[i].first == full_[i].name && m.tensors[i].second == full_[i].full_shape, io,
                 "load checkpoint",
                 "'" << m.dir << "' tensor " << i << " is '" << m.tensors[i].first << "'; its model's is '"
                     << full_[i].name << "' (written by another version of nuri?)");
    index_.resize(full_.size() * 3);
    for (const CheckpointFile& f : m.files) open((fs::path(m.dir) / f.name).string());
    for (auto& v : index_)
      std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.full_offset < b.full_offset; });
  }

  // Copies full elements [full_offset, + count) of (tensor, kind) into dst; all must be there.
  void fetch(size_t tensor, uint32_t kind, size_t full_offset, size_t count, float* dst) const {
    const std::vector<Entry>& v = index_[tensor * 3 + kind];
    auto it = std::upper_bound(v.begin(), v.end(), full_offset,
                               [](size_t off, const Entry& e) { return off < e.full_offset; });
    if (it != v.begin()) --it;
    size_t at = full_offset;
    const size_t end = full_offset + count;
    for (; it != v.end() && at < end; ++it) {
      if (it->full_offset + it->count <= at) continue;
      if (it->full_offset > at) break;  // a gap
      const size_t n = std::min<size_t>(end, it->full_offset + it->count) - at;
      std::memcpy(dst + (at - full_offset), it->data + (at - it->full_offset), n * sizeof(float));
      at += n;
    }
    NURI_CHECK(at == end, io, "load checkpoint",
               "'" << m_.dir << "' does not hold elements [" << at << ", " << end << ") of the " << kKinds[kind]
                   << " of '" << full_[tensor].name << "': a rank file is missing or incomplete");
  }
  const std::vector<ParamTensor>& full() const { return full_; }

 private:
  struct Entry {
    uint64_t full_offset, count;
    const float* data;
  };

  void open(const std::string& path) {
    maps_.push_back(std::make_unique<MappedFile>(path));
    const char* p = maps_.back()->data();
    const size_t size = maps_.back()->size();
    NURI_CHECK(size >= 24 && std::memcmp(p, kRankMagic, 8) == 0, io, "load checkpoint",
               "'" << path << "' is not a nuri checkpoint rank file (bad magic, or shorter than its header)");
    uint64_t num_runs = 0;
    std::memcpy(&num_runs, p + 16, 8);
    NURI_CHECK(num_runs <= (size - 24) / sizeof(Run), io, "load checkpoint",
               "'" << path << "' is truncated: its header lists " << num_runs << " runs");
    const size_t data_start = 24 + num_runs * sizeof(Run);
    const auto* data = reinterpret_cast<const float*>(p + data_start);
    const uint64_t data_floats = (size - data_start) / sizeof(float);
    for (uint64_t i = 0; i < num_runs; ++i) {
      Run r;
      std::memcpy(&r, p + 24 + i * sizeof(Run), sizeof r);
      NURI_CHECK(r.tensor < full_.size() && r.kind < 3 && r.count <= full_[r.tensor].numel &&
                     r.full_offset <= full_[r.tensor].numel - r.count && r.count <= data_floats &&
                     r.data <= data_floats - r.count,
                 io, "load checkpoint",
                 "'" << path << "' run " << i << " points outside its tensor or the file (corrupt or truncated)");
      index_[r.tensor * 3 + r.kind].push_back({r.full_offset, r.count, data + r.data});
    }
  }

  const CheckpointManifest& m_;
  std::vector<ParamTensor> full_;
  std::vector<std::unique_ptr<MappedFile>> maps_;
  std::vector<std::vector<Entry>> index_;
};

// What one rank writes: the rank file's runs, where their floats are (in file order), and the
// manifest's fields. A blocking save points into the model and optimizer; a background save
// copies the floats into `buffer` first (kept between saves: first-touching gigabytes of fresh
// memory cost more than the copy itself on the machines measured).
struct CheckpointSnapshot {
  int64_t step = 0;
  std::vector<Run> runs;
  std::vector<std::pair<const float*, size_t>> pieces;  // (floats, count) in file order
  std::vector<float> buffer;                            // the copies of a background save
  nlohmann::json manifest;                              // without "files" (added at the commit)
};

// Fills `snap` for this rank; copy: the floats are copied into snap.buffer (reused).
void snapshot_checkpoint(CheckpointSnapshot& snap, const Model& model, const AdamW& optimizer,
                         const TrainerState& state, const CheckpointLayout& layout, bool copy) {
  snap.step = state.step;
  snap.manifest = manifest_json(model, optimizer, state, layout, {});
  snap.runs.clear();
  snap.pieces.clear();
  // This rank's share of the flat buffer, as runs of full-tensor elements.
  std::vector<ParamRange> share;
  if (layout.zero1) {
    share = optimizer.owned();
  } else {
    const BlockRange b = block_range(model.num_params(), layout.dp_size, layout.dp_rank);
    share.push_back({b.offset, b.count});
  }
  std::vector<Run>& runs = snap.runs;  // parameters first; the moments' runs follow below
  std::vector<size_t> locals;          // the local flat offset of each parameter run
  const std::vector<ParamTensor>& tensors = model.tensors();
  for (const ParamRange& r : share) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const ParamTensor& t = tensors[i];
      const size_t lo = std::max(r.offset, t.offset), hi = std::min(r.offset + r.count, t.offset + t.numel);
      if (lo >= hi) continue;
      for_each_full_run(t, lo - t.offset, hi - t.offset, layout.tp_size > 1 ? layout.tp_rank : 0,
                   [&](size_t full, size_t local, size_t count) {
                     runs.push_back({uint32_t(i), 0, full, count, 0});
                     locals.push_back(t.offset + local);
                   });
    }
  }
  const size_t n = runs.size();
  uint64_t floats = 0;
  const std::vector<ParamRange>& owned = optimizer.owned();
  for (uint32_t kind = 0; kind < 3; ++kind) {
    for (size_t i = 0; i < n; ++i) {
      Run r = runs[i];
      r.kind = kind;
      r.data = floats;
      floats += r.count;
      if (kind == 0) {
        runs[i] = r;
      } else {
        runs.push_back(r);
      }
      const size_t p = locals[i];
      const float* src = kind == 0 ? model.params() + p
                                   : (kind == 1 ? optimizer.exp_avg() : optimizer.exp_avg_sq()) + moment_index(owned, p);
      snap.pieces.push_back({src, r.count});
    }
  }
  if (!copy) return;
  snap.buffer.resize(floats);
  float* dst = snap.buffer.data();
  for (auto& piece : snap.pieces) {
    std::memcpy(dst, piece.first, piece.second * sizeof(float));
    piece.first = dst;
    dst += piece.second;
  }
}

// Writes a snapshot and commits it (the I/O half of a save; any thread, collective over comm).
std::string write_checkpoint(const std::string& checkpoints_dir, const CheckpointSnapshot& snap, Communicator* comm,
                             const CheckpointPolicy& policy) {
  Communicator* world = comm && comm->size() > 1 ? comm : nullptr;
  const int rank = world ? world->rank() : 0, ranks = world ? world->size() : 1;
  const std::string name = step_name(snap.step);
  const std::string tmp = (fs::path(checkpoints_dir) / (".tmp-" + name)).string();
  const std::string final_dir = (fs::path(checkpoints_dir) / name).string();

  all_or_none(world, "creating " + tmp, [&] {
    if (rank != 0) return;
    std::error_code ec;
    fs::create_directories(checkpoints_dir, ec);
    NURI_CHECK(!ec, io, "save checkpoint", "cannot create '" << checkpoints_dir << "': " << ec.message());
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp, ec);
    NURI_CHECK(!ec, io, "save checkpoint", "cannot create '" << tmp << "': " << ec.message());
  });

  std::vector<int64_t> info(2 * size_t(ranks), 0);  // (bytes, xxh64) of every rank's file
  try {
    all_or_none(world, "writing the rank files of " + tmp, [&] {
      const std::string file = rank_file_name(rank);
      HashedWriter w((fs::path(tmp) / file).string());
      const uint64_t header[2] = {uint64_t(rank), uint64_t(snap.runs.size())};
      w.write(kRankMagic, 8);
      w.write(header, sizeof header);
      w.write(snap.runs.data(), snap.runs.size() * sizeof(Run));
      for (const auto& piece : snap.pieces) w.write(piece.first, piece.second * sizeof(float));
      const CheckpointFile f = w.finish(file);
      info[2 * size_t(rank)] = int64_t(f.bytes);
      info[2 * size_t(rank) + 1] = int64_t(f.xxh64);
    });
    if (world) world->all_gather(info.data() + 2 * rank, info.data(), info.size());

    // Commit: the manifest, the directory rename, then `latest`.
    all_or_none(world, "committing " + final_dir, [&] {
      if (rank != 0) return;
      nlohmann::json manifest = snap.manifest;
      nlohmann::json& files = manifest["files"] = nlohmann::json::array();
      for (int r = 0; r < ranks; ++r)
        files.push_back({{"name", rank_file_name(r)}, {"bytes", info[2 * size_t(r)]},
                         {"xxh64", hex64(uint64_t(info[2 * size_t(r) + 1]))}});
      write_file_atomic((fs::path(tmp) / "manifest.json").string(), manifest.dump(1) + "\n");
      NURI_CHECK(fsync_path(tmp), io, "save checkpoint", "cannot sync '" << tmp << "': " << std::strerror(errno));
      commit_directory(tmp, final_dir, (fs::path(checkpoints_dir) / (".old-" + name)).string());
      NURI_CHECK(fsync_path(checkpoints_dir), io, "save checkpoint",
                 "cannot sync '" << checkpoints_dir << "': " << std::strerror(errno));
      write_file_atomic((fs::path(checkpoints_dir) / "latest").string(), name + "\n");
      NURI_CHECK(fsync_path(checkpoints_dir), io, "save checkpoint",
                 "cannot sync '" << checkpoints_dir << "': " << std::strerror(errno));
      prune(checkpoints_dir, name, policy);
    });
  } catch (...) {
    // Every rank is here (all_or_none): the partial directory goes; `latest` was not touched.
    std::error_code ec;
    if (rank == 0) fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir;
}

}  // namespace

// ---- save -------------------------------------------------------------------------------------

std::string save_checkpoint(const std::string& checkpoints_dir, const Model& model, const AdamW& optimizer,
                            const TrainerState& state, const CheckpointLayout& layout,
                            const CheckpointPolicy& policy) {
  CheckpointSnapshot snap;  // pointing into the model and optimizer: no copy
  snapshot_checkpoint(snap, model, optimizer, state, layout, /*copy=*/false);
  return write_checkpoint(checkpoints_dir, snap, layout.world, policy);
}

class AsyncCheckpointer::Impl {
 public:
  CheckpointSnapshot snapshot;  // reused: its buffer stays allocated between saves
  std::thread thread;
  std::exception_ptr error;
  std::string last_dir;
  double last_write_s = 0;
};

AsyncCheckpointer::AsyncCheckpointer(std::string checkpoints_dir, std::shared_ptr<Communicator> comm,
                                     CheckpointPolicy policy)
    : dir_(std::move(checkpoints_dir)), comm_(std::move(comm)), policy_(policy), impl_(std::make_unique<Impl>()) {}

AsyncCheckpointer::~AsyncCheckpointer() {
  if (impl_->thread.joinable()) impl_->thread.join();  // errors are lost here: call wait() first
}

double AsyncCheckpointer::save(const Model& model, const AdamW& optimizer, const TrainerState& state,
                               const CheckpointLayout& layout) {
  Timer t;
  wait();  // one save at a time: the comm's collectives must come in the same order on every rank
  // All ranks agree that their snapshot exists (bad_alloc on one must not leave the others
  // waiting in the writer's collectives).
  all_or_none(comm_.get(), "taking the checkpoint snapshot",
              [&] { snapshot_checkpoint(impl_->snapshot, model, optimizer, state, layout, /*copy=*/true); });
  impl_->thread = std::thread([this] {
    try {
      Timer w;
      impl_->last_dir = write_checkpoint(dir_, impl_->snapshot, comm_.get(), policy_);
      impl_->last_write_s = w.seconds();
    } catch (...) {
      impl_->error = std::current_exception();
    }
  });
  return t.seconds();
}

void AsyncCheckpointer::reserve(size_t floats) {
  wait();
  impl_->thread = std::thread([this, floats] {
    try {
      impl_->snapshot.buffer.resize(std::max(impl_->snapshot.buffer.size(), floats));  // touches every page
    } catch (...) {
      // Only a speed-up: a failure here leaves the allocation to save(), where all ranks agree on it.
    }
  });
}

std::string AsyncCheckpointer::wait() {
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->error) {
    std::exception_ptr e = impl_->error;
    impl_->error = nullptr;
    std::rethrow_exception(e);
  }
  std::string dir = impl_->last_dir;
  impl_->last_dir.clear();
  return dir;
}

double AsyncCheckpointer::last_write_seconds() const { return impl_->last_write_s; }

// ---- find and read ----------------------------------------------------------------------------

std::string latest_checkpoint(const std::string& checkpoints_dir) {
  const fs::path pointer = fs::path(checkpoints_dir) / "latest";
  std::ifstream in(pointer);
  if (!in) return "";
  std::string name;
  std::getline(in, name);
  const fs::path dir = fs::path(checkpoints_dir) / name;
  NURI_CHECK(!name.empty() && fs::is_directory(dir), io, "checkpoint",
             "'" << pointer.string() << "' names '" << name << "', which is not a directory in " << checkpoints_dir
                 << "; point it at an existing step-* directory, or resume from one with --resume");
  return dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  NURI_CHECK(fs::exists(path), io, "checkpoint", "'" << path << "' does not exist");
  if (fs::exists(fs::path(path) / "manifest.json")) return path;
  std::string dir = latest_checkpoint(path);
  if (dir.empty()) dir = latest_checkpoint((fs::path(path) / "checkpoints").string());
  NURI_CHECK(!dir.empty(), io, "checkpoint",
             "'" << path << "' is not a checkpoint (no manifest.json) and has no 'latest' pointer (nor does "
                 << path << "/checkpoints)");
  return dir;
}

CheckpointManifest read_checkpoint(const std::string& dir, bool verify) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  std::ifstream in(path);
  NURI_CHECK(in.good(), io, "load checkpoint", "cannot read '" << path << "': the checkpoint is incomplete or missing");
  CheckpointManifest m;
  m.dir = dir;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    NURI_CHECK(j.at("format") == "nuri-checkpoint" && j.at("version") == 1, io, "load checkpoint",
               "'" << path << "' is not a version-1 nuri checkpoint manifest");
    m.nuri_version = j.at("nuri_version").get<std::string>();
    m.model = model_config_from_json(j.at("model"));
    for (const auto& t : j.at("tensors")) m.tensors.push_back({t.at("name"), t.at("shape").get<std::vector<int64_t>>()});
    m.state.step = j.at("step").get<int64_t>();
    m.state.tokens = j.at("tokens").get<int64_t>();
    m.state.loader = j.at("loader").get<std::string>();
    m.state.seed = j.at("seed").get<uint64_t>();
    m.state.tokenizer_hash = std::stoull(j.at("tokenizer_hash").get<std::string>(), nullptr, 16);
    m.state.skipped_steps = j.at("skipped_steps").get<int>();
    m.state.skips_in_row = j.at("skips_in_row").get<int>();
    m.optimizer_step = j.at("optimizer").at("step").get<int>();
    m.tp = j.at("layout").at("tp").get<int>();
    m.dp = j.at("layout").at("dp").get<int>();
    m.zero1 = j.at("layout").at("zero1").get<bool>();
    for (const auto& f : j.at("files"))
      m.files.push_back({f.at("name"), f.at("bytes").get<uint64_t>(), std::stoull(f.at("xxh64").get<std::string>(), nullptr, 16)});
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    NURI_THROW(io, "load checkpoint", "'" << path << "' is unreadable: " << e.what());
  }
  NURI_CHECK(!m.files.empty(), io, "load checkpoint", "'" << path << "' lists no rank files");
  for (const CheckpointFile& f : m.files) {
    const std::string file = (fs::path(dir) / f.name).string();
    std::error_code ec;
    const uintmax_t size = fs::file_size(file, ec);
    NURI_CHECK(!ec, io, "load checkpoint",
               "'" << file << "' is missing (" << ec.message() << "); the manifest lists " << m.files.size()
                   << " rank files. Restore it, or resume from an earlier checkpoint with --resume");
    NURI_CHECK(size == f.bytes, io, "load checkpoint",
               "'" << file << "' is truncated or was overwritten: " << size << " bytes, the manifest says " << f.bytes);
    if (verify) {
      MappedFile map(file);
      const uint64_t h = XXH64(map.data(), map.size(), 0);
      NURI_CHECK(h == f.xxh64, io, "load checkpoint",
                 "'" << file << "' fails its checksum (xxh64 " << hex64(h) << ", the manifest says " << hex64(f.xxh64)
                     << "): the file is corrupt. Resume from an earlier checkpoint with --resume");
    }
  }
  return m;
}

void check_checkpoint_model(const CheckpointManifest& m, const ModelConfig& c) {
  const ModelConfig& k = m.model;
  auto same = [&](const char* key, const auto& theirs, const auto& ours) {
    NURI_CHECK(theirs == ours, config, "load checkpoint",
               "'" << m.dir << "' holds another model: model." << key << " is " << theirs << " there and " << ours
                   << " in this run; set model." << key << " = " << theirs
                   << " to continue it, or start afresh with --no-resume");
  };
  same("family", k.family, c.family);
  same("n_layer", k.n_layer, c.n_layer);
  same("d_model", k.d_model, c.d_model);
  same("n_head", k.n_head, c.n_head);
  same("n_kv_head", k.n_kv_head, c.n_kv_head);
  same("d_ff", k.d_ff, c.d_ff);
  same("vocab_size", k.vocab_size, c.vocab_size);
  same("max_seq_len", k.max_seq_len, c.max_seq_len);
  same("tied_embeddings", k.tied_embeddings, c.tied_embeddings);
  same("norm_eps", k.norm_eps, c.norm_eps);
  same("rope_theta", k.rope_theta, c.rope_theta);
}

// ---- load -------------------------------------------------------------------------------------

void load_checkpoint(const CheckpointManifest& m, Model& model, AdamW* optimizer) {
  check_checkpoint_model(m, model.config());
  const Reader reader(m);
  const std::vector<ParamTensor>& local = model.tensors();
  // Parameters: every element of this rank's slices.
  for (size_t i = 0; i < local.size(); ++i) {
    const ParamTensor& t = local[i];
    for_each_full_run(t, 0, t.numel, -1,
                 [&](size_t f, size_t l, size_t n) { reader.fetch(i, 0, f, n, model.params() + t.offset + l); });
  }
  if (!optimizer) return;
  // Moments: the optimizer's owned ranges (all, or this rank's ZeRO-1 blocks), in order.
  size_t base = 0;
  for (const ParamRange& r : optimizer->owned()) {
    for (size_t i = 0; i < local.size(); ++i) {
      const ParamTensor& t = local[i];
      const size_t lo = std::max(r.offset, t.offset), hi = std::min(r.offset + r.count, t.offset + t.numel);
      if (lo >= hi) continue;
      for_each_full_run(t, lo - t.offset, hi - t.offset, -1, [&](size_t f, size_t l, size_t n) {
        const size_t mi = base + (t.offset + l - r.offset);
        reader.fetch(i, 1, f, n, optimizer->exp_avg() + mi);
        reader.fetch(i, 2, f, n, optimizer->exp_avg_sq() + mi);
      });
    }
    base += r.count;
  }
  optimizer->set_step_count(m.optimizer_step);
}

std::vector<float> read_checkpoint_parameters(const CheckpointManifest& m) {
  const Reader reader(m);
  const std::vector<ParamTensor>& full = reader.full();
  std::vector<float> out(full.back().offset + full.back().numel);
  for (size_t i = 0; i < full.size(); ++i) reader.fetch(i, 0, 0, full[i].numel, out.data() + full[i].offset);
  return out;
}

}  // namespace nuri

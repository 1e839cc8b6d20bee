// The MPI communicator, the MPI environment and abort_job.
//
// Execution. Each communicator runs its collectives one at a time in issue order. A blocking
// call runs on the caller's thread when nothing is queued; asynchronous calls are queued to the
// communicator's communication thread, which makes the blocking MPI call while the caller goes on
// computing. (Open MPI 4.1 over shared memory or TCP progresses MPI_I* collectives only inside MPI
// calls, so a nonblocking collective without a thread that calls MPI overlaps almost nothing.)
//
// Timeouts and missing ranks. Every communicator has a second MPI communicator, the side
// channel, used only by the process's watchdog thread (watchdog.hpp). Nothing is sent on it while
// collectives complete in time, so the healthy path costs nothing. When a rank's collective #s
// has been in flight longer than the timeout:
//   - a rank other than the group's rank 0 sends rank 0 a notice (s and the op) and waits a grace
//     period for rank 0 to abort the job; if it is still alive after that, it aborts by itself
//     with what it knows;
//   - rank 0 (on its own timeout, or on the first notice, even when rank 0 is the one missing
//     from #s) asks every rank for its status - how many collectives it has started and
//     completed on this group, and whether it is in one now. Each rank's watchdog thread answers
//     even while its main thread is busy elsewhere. Ranks that have not started #s did not
//     arrive; ranks that do not answer are named too. Rank 0 prints the op, the group, the
//     sequence number and those ranks, then MPI_Abort ends the job.
#include <mpi.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "comm/op_state.hpp"
#include "comm/watchdog.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"

namespace nuri {

// ---------------------------------------------------------------------------------------------
// Small public helpers
// ---------------------------------------------------------------------------------------------

const char* to_string(DataType type) {
  switch (type) {
    case DataType::f32: return "float";
    case DataType::f64: return "double";
    case DataType::i32: return "int32";
    case DataType::i64: return "int64";
  }
  return "unknown";
}

size_t size_of(DataType type) {
  switch (type) {
    case DataType::f32: return 4;
    case DataType::f64: return 8;
    case DataType::i32: return 4;
    case DataType::i64: return 8;
  }
  return 0;
}

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "unknown";
}

const char* to_string(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::all_reduce: return "all_reduce";
    case CollectiveKind::reduce_scatter: return "reduce_scatter";
    case CollectiveKind::all_gather: return "all_gather";
    case CollectiveKind::broadcast: return "broadcast";
    case CollectiveKind::barrier: return "barrier";
  }
  return "unknown";
}

BlockRange block_range(size_t total, int parts, int index) {
  NURI_CHECK(parts >= 1, config, "block_range", "parts must be >= 1, got " << parts);
  NURI_CHECK(index >= 0 && index < parts, config, "block_range",
             "index " << index << " is outside [0, " << parts << ")");
  const size_t p = static_cast<size_t>(parts), i = static_cast<size_t>(index);
  const size_t base = total / p, extra = total % p;
  BlockRange r;
  r.count = base + (i < extra ? 1 : 0);
  r.offset = i * base + std::min(i, extra);
  return r;
}

std::string describe(const Collective& c) {
  std::ostringstream s;
  s << to_string(c.kind);
  switch (c.kind) {
    case CollectiveKind::barrier: break;
    case CollectiveKind::broadcast:
      s << " (" << to_string(c.type) << " x " << c.count << ", root " << c.root << ")";
      break;
    case CollectiveKind::all_gather:
      s << " (" << to_string(c.type) << " x " << c.count << " in all)";
      break;
    case CollectiveKind::reduce_scatter:
      s << " (" << to_string(c.type) << " x " << c.count << " in all, " << to_string(c.op) << ")";
      break;
    case CollectiveKind::all_reduce:
      s << " (" << to_string(c.type) << " x " << c.count << ", " << to_string(c.op) << ")";
      break;
  }
  return s.str();
}

std::string Communicator::describe() const {
  std::ostringstream s;
  s << "group '" << name() << "' (rank " << rank() << " of " << size() << ")";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------------------

// CommOpState: src/comm/op_state.hpp (shared with the NCCL communicator).
CommHandle::CommHandle(std::shared_ptr<detail::CommOpState> state) : state_(std::move(state)) {}

void CommHandle::wait() {
  if (!state_) return;
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->done_cv.wait(lock, [this] { return state_->done; });
  if (state_->error) std::rethrow_exception(state_->error);
}

bool CommHandle::test() {
  if (!state_) return true;
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (state_->done && state_->error) std::rethrow_exception(state_->error);
  return state_->done;
}

uint64_t CommHandle::sequence() const { return state_ ? state_->sequence : 0; }

namespace {

using comm::Clock;

// ---------------------------------------------------------------------------------------------
// Options and MPI helpers
// ---------------------------------------------------------------------------------------------

CommOptions resolve(const CommOptions& in) {
  CommOptions o = in;
  if (o.timeout_s <= 0) {
    o.timeout_s = 300;
    if (const char* v = std::getenv("NURI_COMM_TIMEOUT")) {
      char* end = nullptr;
      const double t = std::strtod(v, &end);
      NURI_CHECK(end != v && *end == '\0' && t > 0, config, "comm",
                 "NURI_COMM_TIMEOUT='" << v << "' is not a positive number of seconds");
      o.timeout_s = t;
    }
  }
  if (o.grace_s <= 0) o.grace_s = std::clamp(o.timeout_s / 2, 2.0, 30.0);
  if (o.check_args < 0) {
    const char* v = std::getenv("NURI_COMM_CHECK");
    o.check_args = (v && std::strcmp(v, "0") != 0 && *v != '\0') ? 1 : 0;
  }
  return o;
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len)) + " (MPI error " + std::to_string(code) + ")";
}

MPI_Datatype mpi_type(DataType t) {
  switch (t) {
    case DataType::f32: return MPI_FLOAT;
    case DataType::f64: return MPI_DOUBLE;
    case DataType::i32: return MPI_INT32_T;
    case DataType::i64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// "0-2, 5, 7-9"
std::string rank_list(const std::vector<int>& ranks, size_t max_items = 32) {
  std::ostringstream s;
  size_t items = 0;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (items == max_items) {
      s << ", ...";
      break;
    }
    if (items) s << ", ";
    s << ranks[i];
    if (j > i) s << "-" << ranks[j];
    ++items;
    i = j + 1;
  }
  return s.str();
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string format_seconds(double s) {
  std::ostringstream o;
  o.precision(s < 10 ? 2 : 4);
  o << s << " s";
  return o.str();
}

// Side-channel tags (on the watch communicator only).
constexpr int kTagNotice = 11;         // rank r -> rank 0: "my collective #s timed out"
constexpr int kTagStatusRequest = 12;  // rank 0 -> rank r
constexpr int kTagStatusReply = 13;    // rank r -> rank 0
constexpr int kMsgLen = 8;             // int64 words per side-channel message

// All-reduce and broadcast are chunked below MPI's int counts.
constexpr size_t kMaxChunk = size_t(1) << 30;

std::atomic<bool> g_finalizing{false};  // this process is in MpiEnvironment's destructor

using Message = std::array<int64_t, kMsgLen>;

// Receives the next message waiting on a side channel, if any; never blocks.
bool receive_side_message(MPI_Comm comm, Message& m, MPI_Status& st) {
  int flag = 0;
  if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &st) != MPI_SUCCESS || !flag) return false;
  MPI_Recv(m.data(), kMsgLen, MPI_INT64_T, st.MPI_SOURCE, st.MPI_TAG, comm, MPI_STATUS_IGNORE);
  return true;
}

// Side-channel sends in flight (MPI_Isend needs its buffer until done). Watchdog thread only.
class Outbox {
 public:
  void send(MPI_Comm comm, const Message& m, int dest, int tag) {
    sends_.emplace_back();
    Pending& p = sends_.back();
    p.data = m;
    if (MPI_Isend(p.data.data(), kMsgLen, MPI_INT64_T, dest, tag, comm, &p.request) !=
        MPI_SUCCESS)
      sends_.pop_back();
  }
  void reap() {
    while (!sends_.empty()) {
      int done = 0;
      MPI_Test(&sends_.front().request, &done, MPI_STATUS_IGNORE);
      if (!done) return;
      sends_.pop_front();
    }
  }
  void release() {  // before freeing the communicator: let the sends finish on their own
    for (auto& p : sends_) MPI_Request_free(&p.request);
    sends_.clear();
  }

 private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    Message data{};
  };
  std::deque<Pending> sends_;  // a deque: elements never move
};

// Status-reply fields (kTagStatusReply).
enum StatusField {
  kStarted = 0,     // collectives started on this group
  kCompleted = 1,   // collectives completed
  kInFlight = 2,    // sequence number of the one running now, 0 if none
  kInFlightKind = 3,
  kFinalizing = 4,  // the process is in MpiEnvironment's destructor
  kIsSplit = 5,     // the running op is a split, not a collective
  kDestroyed = 6,   // this rank has destroyed its communicator
};

// What remains of a communicator this rank has destroyed while MPI runs on: its side channel,
// so that the other ranks' timeouts can still learn where this rank is (it has left).
class RetiredChannel final : public comm::Watched {
 public:
  RetiredChannel(MPI_Comm watch_comm, const Message& status, Outbox&& outbox)
      : watch_comm_(watch_comm), status_(status), outbox_(std::move(outbox)) {
    status_[kDestroyed] = 1;
    status_[kInFlight] = 0;
  }
  Clock::duration tick() const override { return std::chrono::milliseconds(100); }
  void watch(Clock::time_point) override {
    outbox_.reap();
    for (;;) {
      MPI_Status st;
      Message m{};
      if (!receive_side_message(watch_comm_, m, st)) return;
      if (st.MPI_TAG != kTagStatusRequest) continue;
      Message reply = status_;
      reply[kFinalizing] = g_finalizing.load() ? 1 : 0;
      outbox_.send(watch_comm_, reply, st.MPI_SOURCE, kTagStatusReply);
    }
  }
  void free() {
    outbox_.release();
    MPI_Comm_free(&watch_comm_);
  }

 private:
  MPI_Comm watch_comm_;
  Message status_;
  Outbox outbox_;
};
std::mutex g_retired_mutex;
std::vector<std::unique_ptr<RetiredChannel>> g_retired;

class MpiCommunicator;
std::mutex g_registry_mutex;
std::set<MpiCommunicator*> g_registry;  // live communicators, shut down before MPI_Finalize

// ---------------------------------------------------------------------------------------------
// MpiCommunicator
// ---------------------------------------------------------------------------------------------

class MpiCommunicator final : public Communicator, public comm::Watched {
 public:
  // Takes ownership of `comm` (a communicator made for this object: a dup or a split).
  MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options)
      : comm_(comm), name_(std::move(name)), options_(resolve(options)) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
    mpi_check(MPI_Comm_dup(comm_, &watch_comm_), "MPI_Comm_dup", "creating the side channel");
    MPI_Comm_set_errhandler(watch_comm_, MPI_ERRORS_RETURN);
    // World ranks of the group's members, for messages.
    MPI_Group group, world_group;
    MPI_Comm_group(comm_, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    std::vector<int> mine(static_cast<size_t>(size_));
    for (int i = 0; i < size_; ++i) mine[static_cast<size_t>(i)] = i;
    world_ranks_.resize(static_cast<size_t>(size_));
    MPI_Group_translate_ranks(group, size_, mine.data(), world_group, world_ranks_.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);

    timeout_ = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(options_.timeout_s));
    grace_ = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(options_.grace_s));
    tick_ = std::clamp<Clock::duration>(timeout_ / 10, std::chrono::milliseconds(1),
                                        std::chrono::milliseconds(100));
    {
      std::lock_guard<std::mutex> lock(g_registry_mutex);
      g_registry.insert(this);
    }
    if (size_ > 1) comm::Watchdog::instance().add(this);
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(g_registry_mutex);
      g_registry.erase(this);
    }
    shutdown(/*retire=*/true);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const CommOptions& options() const override { return options_; }
  uint64_t issued() const override { return issued_.load(); }
  uint64_t completed() const override { return completed_.load(); }

  CommHandle start(const Collective& c, bool async) override {
    validate(c);
    std::unique_lock<std::mutex> lock(mutex_);
    check_usable(c);
    const uint64_t seq = ++issued_;
    if (!async && queue_.empty() && !busy_) {
      // Nothing ahead of us: run on this thread (no hand-off latency for blocking calls).
      busy_ = true;
      lock.unlock();
      std::exception_ptr error = run_guarded(c, seq);
      lock.lock();
      release_locked();
      lock.unlock();
      if (error) std::rethrow_exception(error);
      return {};
    }
    auto state = std::make_shared<detail::CommOpState>();
    state->collective = c;
    state->sequence = seq;
    queue_.push_back(state);
    if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
    work_cv_.notify_one();
    lock.unlock();
    CommHandle handle(state);
    if (!async) handle.wait();
    return handle;
  }

  void synchronize() override {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t target = issued_.load();
    wait_done(lock, [&] { return finished_ >= target || shut_down_; });
  }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    MPI_Comm child = MPI_COMM_NULL;
    run_exclusive("split into '" + name + "'", [&] {
      mpi_check(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child),
                "MPI_Comm_split", "splitting into '" + name + "'");
    });
    if (child == MPI_COMM_NULL) return nullptr;
    return std::make_shared<MpiCommunicator>(child, name, options_);
  }

  std::shared_ptr<Communicator> split_node(const std::string& name) override {
    MPI_Comm child = MPI_COMM_NULL;
    run_exclusive("split into '" + name + "'", [&] {
      mpi_check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &child),
                "MPI_Comm_split_type", "splitting into the ranks of each node ('" + name + "')");
    });
    return std::make_shared<MpiCommunicator>(child, name, options_);
  }

  // Drains the queue, stops the thread, frees the MPI communicators. Idempotent. retire: keep
  // answering the other ranks' status requests until MPI is finalized (see RetiredChannel).
  void shutdown(bool retire = false) {
    std::lock_guard<std::mutex> once(shutdown_mutex_);
    if (shut_down_) return;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      stop_ = true;
      work_cv_.notify_all();
    }
    if (worker_.joinable()) worker_.join();
    {
      // An inline blocking call on another thread must end before the communicator goes.
      std::unique_lock<std::mutex> lock(mutex_);
      wait_done(lock, [&] { return !busy_; });
    }
    if (size_ > 1) comm::Watchdog::instance().remove(this);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      if (retire && size_ > 1) {
        auto channel =
            std::make_unique<RetiredChannel>(watch_comm_, my_status(), std::move(outbox_));
        comm::Watchdog::instance().add(channel.get());
        std::lock_guard<std::mutex> lock(g_retired_mutex);
        g_retired.push_back(std::move(channel));
      } else {
        outbox_.release();
        MPI_Comm_free(&watch_comm_);
      }
      MPI_Comm_free(&comm_);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
    done_cv_.notify_all();
  }

  // ---- watchdog (watchdog thread only) ----------------------------------------------------

  Clock::duration tick() const override { return tick_; }

  void watch(Clock::time_point now) override {
    reap_sends();
    drain_side_channel(now);
    InFlight f = in_flight();
    if (!f.active || f.seq <= reported_seq_) return;
    if (now - f.since < timeout_) return;
    if (rank_ == 0) {
      judge(f.seq, f.collective, f.label);
      return;
    }
    if (notice_seq_ != f.seq) {
      notice_seq_ = f.seq;
      notice_time_ = now;
      Message m{};
      m[0] = static_cast<int64_t>(f.seq);
      encode(f.collective, m);
      m[6] = f.label.empty() ? 0 : 1;
      send(m, 0, kTagNotice);
      return;
    }
    if (now - notice_time_ >= grace_) {
      reported_seq_ = f.seq;
      std::ostringstream s;
      s << "comm timeout: " << op_name(f) << " #" << f.seq << " on group '" << name_ << "' (size "
        << size_ << ") has not completed within " << format_seconds(options_.timeout_s)
        << " on this rank (" << rank_label(rank_) << "), and the group's rank 0 (world rank "
        << world_ranks_[0] << ") did not name the missing ranks within a further "
        << format_seconds(options_.grace_s)
        << " (it may be stuck or dead itself). Aborting the job.";
      fire(s.str());
    }
  }

 private:
  struct InFlight {
    bool active = false;
    uint64_t seq = 0;
    Collective collective;
    std::string label;  // non-empty for non-collective ops (split)
    Clock::time_point since;
  };

  // ---- execution -----------------------------------------------------------------------------

  // The message is built only on failure: the success path stays cheap for small messages.
  void mpi_check(int rc, const char* call, const Collective& c) const {
    if (rc == MPI_SUCCESS) return;
    mpi_check(rc, call, "in " + nuri::describe(c));
  }
  void mpi_check(int rc, const char* call, const std::string& what) const {
    if (rc == MPI_SUCCESS) return;
    NURI_THROW(backend, "comm", call << " failed " << what << " on group '" << name_ << "' (size "
                                     << size_ << ", rank " << rank_ << "): "
                                     << mpi_error_string(rc));
  }

  void check_usable(const Collective& c) const {
    NURI_CHECK(!stop_ && !shut_down_, internal, "comm",
               nuri::describe(c) << " on group '" << name_
                           << "' after the communicator was shut down (MPI finalized?)");
    NURI_CHECK(broken_.empty(), backend, "comm",
               nuri::describe(c) << " on group '" << name_
                           << "': the communicator is unusable after an earlier failure: "
                           << broken_);
  }

  // Argument checks on the caller's thread, before anything is queued.
  void validate(const Collective& c) const {
    auto fail = [&](const std::string& why) {
      NURI_THROW(config, "comm", nuri::describe(c) << " on group '" << name_ << "' (size " << size_
                                             << ", rank " << rank_ << "): " << why);
    };
    const size_t es = size_of(c.type);
    if ((c.op == ReduceOp::avg) &&
        (c.kind == CollectiveKind::all_reduce || c.kind == CollectiveKind::reduce_scatter) &&
        (c.type == DataType::i32 || c.type == DataType::i64))
      fail("avg is defined for float and double only; use sum and divide");
    switch (c.kind) {
      case CollectiveKind::barrier: return;
      case CollectiveKind::broadcast:
        if (c.root < 0 || c.root >= size_)
          fail("root " + std::to_string(c.root) + " is not a rank of the group");
        [[fallthrough]];
      case CollectiveKind::all_reduce:
        if (c.count > 0 && !c.recv) fail("the buffer is null");
        return;
      case CollectiveKind::reduce_scatter:
      case CollectiveKind::all_gather: {
        const BlockRange b = block_range(c.count, size_, rank_);
        const bool rs_kind = c.kind == CollectiveKind::reduce_scatter;
        // The full buffer (total elements) and this rank's block buffer (b.count elements).
        if (c.count > 0 && !(rs_kind ? c.send : c.recv))
          fail(rs_kind ? "the send buffer is null" : "the receive buffer is null");
        if (b.count > 0 && !(rs_kind ? c.recv : c.send))
          fail(rs_kind ? "the receive buffer is null" : "the send buffer is null");
        const bool even = c.count % static_cast<size_t>(size_) == 0;
        if (block_range(c.count, size_, 0).count > static_cast<size_t>(INT_MAX) ||
            (!even && c.kind == CollectiveKind::all_gather &&
             c.count > static_cast<size_t>(INT_MAX)))
          fail("the blocks or their offsets exceed MPI's int counts (2^31-1 elements); split "
               "the call");
        const bool rs = c.kind == CollectiveKind::reduce_scatter;
        // Full buffer and block buffer; the only overlap allowed is the rank's own slot.
        const char* full = static_cast<const char*>(rs ? c.send : c.recv);
        const char* part = static_cast<const char*>(rs ? c.recv : c.send);
        if (!full || !part || b.count == 0) return;
        const bool overlap = part < full + c.count * es && full < part + b.count * es;
        if (overlap && part != full + b.offset * es)
          fail(rs ? "recv overlaps send but is not send + this rank's block offset (the in-place "
                    "form)"
                  : "send overlaps recv but is not recv + this rank's block offset (the in-place "
                    "form)");
        return;
      }
    }
  }

  // Runs c (or, for a non-collective ordered op such as split, `body`, named by `label`) as
  // operation #seq, recorded for the watchdog; returns the error, if any.
  std::exception_ptr run_guarded(const Collective& c, uint64_t seq,
                                 const std::string* label = nullptr,
                                 const std::function<void()>* body = nullptr) {
    {
      std::lock_guard<std::mutex> lock(status_mutex_);
      flight_.active = true;
      flight_.seq = seq;
      flight_.collective = c;
      flight_.label = label ? *label : std::string();
      flight_.since = Clock::now();
      started_ = seq;
    }
    std::exception_ptr error;
    try {
      if (body) {
        (*body)();
      } else {
        if (options_.check_args && size_ > 1) check_agreement(c, seq);
        execute(c);
      }
    } catch (const Error& e) {
      error = std::current_exception();
      if (e.kind() == ErrorKind::backend) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (broken_.empty()) broken_ = e.what();
      }
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(status_mutex_);
      flight_.active = false;
    }
    completed_ = seq;
    return error;
  }

  // Runs fn as an ordered, watched operation on the caller's thread, after everything queued.
  void run_exclusive(const std::string& label, const std::function<void()>& fn) {
    std::unique_lock<std::mutex> lock(mutex_);
    Collective c;
    check_usable(c);
    const uint64_t seq = ++issued_;
    wait_done(lock, [&] { return queue_.empty() && !busy_; });
    busy_ = true;
    lock.unlock();
    std::exception_ptr error = run_guarded(c, seq, &label, &fn);
    lock.lock();
    release_locked();
    lock.unlock();
    if (error) std::rethrow_exception(error);
  }

  // After an op (mutex_ held): wake the worker only if work waits, and the waiters of
  // synchronize()/split() only if there are any. Blocking calls on the caller's thread thus make
  // no syscall and do not wake the communication thread.
  void release_locked() {
    busy_ = false;
    ++finished_;
    if (!queue_.empty()) work_cv_.notify_one();
    if (done_waiters_ > 0) done_cv_.notify_all();
  }

  template <class Pred>
  void wait_done(std::unique_lock<std::mutex>& lock, Pred pred) {
    ++done_waiters_;
    done_cv_.wait(lock, pred);
    --done_waiters_;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_cv_.wait(lock,
                    [&] { return (!queue_.empty() && !busy_) || (stop_ && queue_.empty()); });
      if (queue_.empty()) return;  // stop_ and drained
      std::shared_ptr<detail::CommOpState> op = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      const std::string broken = broken_;
      lock.unlock();
      std::exception_ptr error;
      if (!broken.empty()) {
        try {
          NURI_THROW(backend, "comm", nuri::describe(op->collective)
                                          << " #" << op->sequence << " on group '" << name_
                                          << "' was not run: an earlier collective failed: "
                                          << broken);
        } catch (...) {
          error = std::current_exception();
        }
      } else {
        error = run_guarded(op->collective, op->sequence);
      }
      op->finish(error);
      lock.lock();
      release_locked();
    }
  }

  void execute(const Collective& c) {
    const MPI_Datatype type = mpi_type(c.type);
    const size_t es = size_of(c.type);
    const std::string what = nuri::describe(c);
    switch (c.kind) {
      case CollectiveKind::barrier:
        mpi_check(MPI_Barrier(comm_), "MPI_Barrier", c);
        return;
      case CollectiveKind::all_reduce: {
        char* p = static_cast<char*>(c.recv);
        for (size_t done = 0; done < c.count;) {
          const size_t n = std::min(kMaxChunk, c.count - done);
          mpi_check(MPI_Allreduce(MPI_IN_PLACE, p + done * es, static_cast<int>(n), type,
                                  mpi_op(c.op), comm_),
                    "MPI_Allreduce", c);
          done += n;
        }
        if (c.op == ReduceOp::avg) scale(c.recv, c.count, c.type);
        return;
      }
      case CollectiveKind::broadcast: {
        char* p = static_cast<char*>(c.recv);
        for (size_t done = 0; done < c.count;) {
          const size_t n = std::min(kMaxChunk, c.count - done);
          mpi_check(MPI_Bcast(p + done * es, static_cast<int>(n), type, c.root, comm_),
                    "MPI_Bcast", c);
          done += n;
        }
        return;
      }
      case CollectiveKind::reduce_scatter: {
        const BlockRange b = block_range(c.count, size_, rank_);
        const char* send = static_cast<const char*>(c.send);
        char* recv = static_cast<char*>(c.recv);
        const bool in_place = recv && recv == send + b.offset * es && b.count > 0;
        char* out = recv;
        if (in_place) {  // MPI forbids aliased buffers: reduce into scratch, then copy
          scratch_.resize(b.count * es);
          out = scratch_.data();
        }
        if (c.count % static_cast<size_t>(size_) == 0) {
          mpi_check(MPI_Reduce_scatter_block(send, out, static_cast<int>(b.count), type,
                                             mpi_op(c.op), comm_),
                    "MPI_Reduce_scatter_block", c);
        } else {
          std::vector<int> counts(static_cast<size_t>(size_));
          for (int r = 0; r < size_; ++r)
            counts[static_cast<size_t>(r)] = static_cast<int>(block_range(c.count, size_, r).count);
          mpi_check(MPI_Reduce_scatter(send, out, counts.data(), type, mpi_op(c.op), comm_),
                    "MPI_Reduce_scatter", c);
        }
        if (in_place) std::memcpy(recv, out, b.count * es);
        if (c.op == ReduceOp::avg) scale(recv, b.count, c.type);
        return;
      }
      case CollectiveKind::all_gather: {
        const BlockRange b = block_range(c.count, size_, rank_);
        char* recv = static_cast<char*>(c.recv);
        const char* send = static_cast<const char*>(c.send);
        const void* sendbuf = (send && send == recv + b.offset * es) ? MPI_IN_PLACE : c.send;
        if (c.count % static_cast<size_t>(size_) == 0) {
          const int n = static_cast<int>(b.count);
          mpi_check(MPI_Allgather(sendbuf, n, type, recv, n, type, comm_), "MPI_Allgather", c);
        } else {
          std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
          for (int r = 0; r < size_; ++r) {
            const BlockRange rb = block_range(c.count, size_, r);
            counts[static_cast<size_t>(r)] = static_cast<int>(rb.count);
            displs[static_cast<size_t>(r)] = static_cast<int>(rb.offset);
          }
          mpi_check(MPI_Allgatherv(sendbuf, static_cast<int>(b.count), type, recv, counts.data(),
                                   displs.data(), type, comm_),
                    "MPI_Allgatherv", c);
        }
        return;
      }
    }
  }

  void scale(void* data, size_t n, DataType type) const {
    if (type == DataType::f32) {
      float* p = static_cast<float*>(data);
      const float d = static_cast<float>(size_);
      for (size_t i = 0; i < n; ++i) p[i] /= d;
    } else if (type == DataType::f64) {
      double* p = static_cast<double*>(data);
      const double d = static_cast<double>(size_);
      for (size_t i = 0; i < n; ++i) p[i] /= d;
    }
  }

  // check_args: every rank must be in the same collective with the same arguments. (No
  // sequence number: MPI matches the n-th collective of every rank, which is #n everywhere by
  // construction; a skipped collective shows as a different op or count here, or as a timeout.)
  void check_agreement(const Collective& c, uint64_t seq) {
    constexpr int kFields = 4;
    const int64_t mine[kFields] = {static_cast<int64_t>(c.kind), static_cast<int64_t>(c.count),
                                   static_cast<int64_t>(c.type),
                                   static_cast<int64_t>(c.kind == CollectiveKind::broadcast
                                                            ? c.root
                                                            : static_cast<int>(c.op))};
    std::vector<int64_t> all(static_cast<size_t>(kFields * size_));
    mpi_check(MPI_Allgather(mine, kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, comm_),
              "MPI_Allgather", "checking the arguments of " + nuri::describe(c));
    static const char* const field_names[kFields] = {"collective", "count", "element type",
                                                     "reduction or root"};
    std::ostringstream s;
    bool count_only = true, any = false;
    for (int f = 0; f < kFields; ++f) {
      std::map<int64_t, std::vector<int>> by_value;
      for (int r = 0; r < size_; ++r)
        by_value[all[static_cast<size_t>(r * kFields + f)]].push_back(r);
      if (by_value.size() < 2) continue;
      any = true;
      if (f != 1) count_only = false;
      s << (s.tellp() > 0 ? "; " : "") << field_names[f] << ": ";
      bool first = true;
      for (const auto& [value, ranks] : by_value) {
        s << (first ? "" : ", ");
        first = false;
        if (f == 0)
          s << to_string(static_cast<CollectiveKind>(value));
        else if (f == 2)
          s << to_string(static_cast<DataType>(value));
        else
          s << value;
        s << " on rank" << (ranks.size() > 1 ? "s " : " ") << rank_list(ranks);
      }
    }
    if (!any) return;
    if (count_only)
      NURI_THROW(shape, "comm", nuri::describe(c) << " #" << seq << " on group '" << name_
                                                  << "' (size "
                                           << size_ << "): the ranks disagree on the " << s.str()
                                           << ". Every rank must pass the same count.");
    NURI_THROW(internal, "comm",
               nuri::describe(c) << " #" << seq << " on group '" << name_ << "' (size " << size_
                           << "): the ranks are not in the same collective: " << s.str()
                           << ". Every rank must issue the same collectives in the same order.");
  }

  // ---- watchdog helpers ----------------------------------------------------------------------

  InFlight in_flight() {
    std::lock_guard<std::mutex> lock(status_mutex_);
    return flight_;
  }

  static void encode(const Collective& c, Message& m) {
    m[1] = static_cast<int64_t>(c.kind);
    m[2] = static_cast<int64_t>(c.type);
    m[3] = static_cast<int64_t>(c.count);
    m[4] = static_cast<int64_t>(c.op);
    m[5] = c.root;
  }
  static Collective decode(const Message& m) {
    Collective c;
    c.kind = static_cast<CollectiveKind>(m[1]);
    c.type = static_cast<DataType>(m[2]);
    c.count = static_cast<size_t>(m[3]);
    c.op = static_cast<ReduceOp>(m[4]);
    c.root = static_cast<int>(m[5]);
    return c;
  }

  std::string op_name(const InFlight& f) const {
    return f.label.empty() ? nuri::describe(f.collective) : f.label;
  }

  std::string rank_label(int r) const {
    std::ostringstream s;
    s << "rank " << r;
    if (world_ranks_[static_cast<size_t>(r)] != r)
      s << " (world rank " << world_ranks_[static_cast<size_t>(r)] << ")";
    return s.str();
  }

  void send(const Message& m, int dest, int tag) { outbox_.send(watch_comm_, m, dest, tag); }
  void reap_sends() { outbox_.reap(); }

  Message my_status() {
    const InFlight f = in_flight();
    Message m{};
    {
      std::lock_guard<std::mutex> lock(status_mutex_);
      m[kStarted] = static_cast<int64_t>(started_);
    }
    m[kCompleted] = static_cast<int64_t>(completed_.load());
    m[kInFlight] = f.active ? static_cast<int64_t>(f.seq) : 0;
    m[kInFlightKind] = f.active ? static_cast<int64_t>(f.collective.kind) : -1;
    m[kFinalizing] = g_finalizing.load() ? 1 : 0;
    m[kIsSplit] = f.active && !f.label.empty() ? 1 : 0;
    return m;
  }

  // Answers status requests; rank 0 judges on a notice.
  void drain_side_channel(Clock::time_point) {
    for (;;) {
      MPI_Status st;
      Message m{};
      if (!receive_side_message(watch_comm_, m, st)) return;
      if (st.MPI_TAG == kTagStatusRequest) {
        send(my_status(), st.MPI_SOURCE, kTagStatusReply);
      } else if (st.MPI_TAG == kTagNotice && rank_ == 0) {
        const uint64_t seq = static_cast<uint64_t>(m[0]);
        if (seq > reported_seq_)
          judge(seq, decode(m), m[6] ? std::string("a communicator split") : std::string());
      }
      // Stale status replies (after a judgement) are dropped.
    }
  }

  // Rank 0: collective #seq has timed out somewhere. Ask every rank where it is, name the ranks
  // that did not arrive, and end the job.
  void judge(uint64_t seq, const Collective& c, const std::string& label) {
    reported_seq_ = seq;
    std::vector<Message> status(static_cast<size_t>(size_));
    std::vector<bool> answered(static_cast<size_t>(size_), false);
    status[0] = my_status();
    answered[0] = true;
    Message request{};
    request[0] = static_cast<int64_t>(seq);
    for (int r = 1; r < size_; ++r) send(request, r, kTagStatusRequest);
    const auto wait = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(std::clamp(options_.grace_s / 2, 0.5, 10.0)));
    const auto deadline = Clock::now() + wait;
    int missing_answers = size_ - 1;
    while (missing_answers > 0 && Clock::now() < deadline) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kTagStatusReply, watch_comm_, &flag, &st);
      if (!flag) {
        reap_sends();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      Message m{};
      MPI_Recv(m.data(), kMsgLen, MPI_INT64_T, st.MPI_SOURCE, kTagStatusReply, watch_comm_,
               MPI_STATUS_IGNORE);
      const size_t r = static_cast<size_t>(st.MPI_SOURCE);
      if (!answered[r]) --missing_answers;
      answered[r] = true;
      status[r] = m;
    }

    // A late collective that has completed everywhere by now (the notice crossed the last
    // arrival): it was slow, not stuck. Say so and let the job go on.
    const bool all_done = std::all_of(status.begin(), status.end(), [&](const Message& m) {
      return static_cast<uint64_t>(m[kCompleted]) >= seq;
    });
    if (missing_answers == 0 && all_done) {
      std::fprintf(stderr,
                   "nuri: [rank %d] warning: %s #%llu on group '%s' took longer than the %s "
                   "timeout on some rank, but has completed everywhere\n",
                   process_rank(), (label.empty() ? nuri::describe(c) : label).c_str(),
                   static_cast<unsigned long long>(seq), name_.c_str(),
                   format_seconds(options_.timeout_s).c_str());
      return;
    }
    std::vector<int> absent, arrived, silent;
    for (int r = 0; r < size_; ++r) {
      const size_t i = static_cast<size_t>(r);
      if (!answered[i])
        silent.push_back(r);
      else if (static_cast<uint64_t>(status[i][kStarted]) < seq)
        absent.push_back(r);
      else
        arrived.push_back(r);
    }
    const std::string op = label.empty() ? nuri::describe(c) : label;
    std::ostringstream s;
    s << "comm timeout: " << op << " #" << seq << " on group '" << name_ << "' (size " << size_
      << ") did not complete within " << format_seconds(options_.timeout_s) << ". ";
    std::vector<int> not_arrived = absent;
    not_arrived.insert(not_arrived.end(), silent.begin(), silent.end());
    std::sort(not_arrived.begin(), not_arrived.end());
    if (!not_arrived.empty()) {
      s << "Ranks that did not arrive (world ranks): " << rank_list(to_world(not_arrived))
        << "; arrived: " << arrived.size() << " of " << size_ << ".";
      size_t lines = 0;
      for (int r : not_arrived) {
        if (++lines > 16) {
          s << "\n  ... and " << not_arrived.size() - 16 << " more";
          break;
        }
        const Message& m = status[static_cast<size_t>(r)];
        s << "\n  " << rank_label(r) << ": ";
        if (!answered[static_cast<size_t>(r)]) {
          s << "did not answer the status request within " << format_seconds(seconds(wait))
            << " (dead, or its process is stuck)";
          continue;
        }
        s << "has started " << m[kStarted] << " collectives on this group (completed "
          << m[kCompleted] << "); ";
        if (m[kInFlight] > 0)
          s << "it is in #" << m[kInFlight] << " ("
            << (m[kIsSplit] ? std::string("split")
                            : to_string(static_cast<CollectiveKind>(m[kInFlightKind])))
            << ")";
        else
          s << "it is not in a collective on this group";
        if (m[kDestroyed]) s << "; it has destroyed its communicator";
        if (m[kFinalizing]) s << "; it is waiting to finalize (it left its loop early)";
      }
    } else {
      s << "Every rank arrived at #" << seq
        << ", so the collective is stuck inside MPI: the ranks may be in different collectives "
           "(run with NURI_COMM_CHECK=1 to check every call) or the network is failing.";
      for (int r = 0; r < size_; ++r) {
        const Message& m = status[static_cast<size_t>(r)];
        if (m[kInFlight] > 0 && static_cast<uint64_t>(m[kInFlight]) != seq)
          s << "\n  " << rank_label(r) << " is in #" << m[kInFlight];
      }
    }
    s << "\nAborting the job.";
    fire(s.str());
  }

  std::vector<int> to_world(const std::vector<int>& ranks) const {
    std::vector<int> w;
    for (int r : ranks) w.push_back(world_ranks_[static_cast<size_t>(r)]);
    std::sort(w.begin(), w.end());
    return w;
  }

  void fire(const std::string& message) {
    std::string text = message;
    if (process_rank() >= 0) text = "[rank " + std::to_string(process_rank()) + "] " + text;
    if (options_.on_timeout) {
      options_.on_timeout(text);
      return;
    }
    std::fprintf(stderr, "nuri: %s\n", text.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }

  // ---- state ---------------------------------------------------------------------------------

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm watch_comm_ = MPI_COMM_NULL;
  std::string name_;
  CommOptions options_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  std::vector<int> world_ranks_;
  Clock::duration timeout_{}, grace_{}, tick_{};

  // Queue and execution (mutex_).
  std::mutex mutex_;
  std::condition_variable work_cv_;  // the worker waits for queued work
  std::condition_variable done_cv_;  // synchronize(), split(), shutdown() wait for ops to end
  int done_waiters_ = 0;
  std::deque<std::shared_ptr<detail::CommOpState>> queue_;
  bool busy_ = false;  // a collective is running (on the worker or inline)
  bool stop_ = false;
  bool shut_down_ = false;
  uint64_t finished_ = 0;
  std::string broken_;  // the first MPI failure
  std::thread worker_;
  std::mutex shutdown_mutex_;
  std::vector<char> scratch_;  // used only by the running collective

  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> completed_{0};

  // What is running now, for the watchdog (status_mutex_).
  std::mutex status_mutex_;
  InFlight flight_;
  uint64_t started_ = 0;

  // Watchdog thread only.
  Outbox outbox_;
  uint64_t reported_seq_ = 0;
  uint64_t notice_seq_ = 0;
  Clock::time_point notice_time_{};
};

// The environment's own world communicator: the finalize barrier.
MpiCommunicator* g_env_world = nullptr;  // not a static object: no destruction at exit
std::atomic<bool> g_env_active{false};

}  // namespace

// ---------------------------------------------------------------------------------------------
// MpiEnvironment and abort_job
// ---------------------------------------------------------------------------------------------

MpiEnvironment::MpiEnvironment(int* argc, char*** argv, const CommOptions& options) {
  bool expected = false;
  NURI_CHECK(g_env_active.compare_exchange_strong(expected, true), internal, "mpi_init",
             "a second MpiEnvironment was created; make one, in main()");
  try {
    int initialized = 0, finalized = 0, provided = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    NURI_CHECK(!finalized, backend, "mpi_init", "MPI has already been finalized in this process");
    if (!initialized) {
      const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
      NURI_CHECK(rc == MPI_SUCCESS, backend, "mpi_init",
                 "MPI_Init_thread failed: " << mpi_error_string(rc));
      owns_mpi_ = true;
    } else {
      MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_MULTIPLE) {
      if (owns_mpi_) MPI_Finalize();
      NURI_THROW(backend, "mpi_init",
                 "this MPI provides thread level "
                     << provided << " but nuri needs MPI_THREAD_MULTIPLE (" << MPI_THREAD_MULTIPLE
                     << "): its communication and watchdog threads call MPI beside the main "
                        "thread. Use an MPI built with thread support (Open MPI has it by "
                        "default)"
                     << (owns_mpi_ ? "" : ", and initialize it with MPI_Init_thread"));
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
    // "[rank r]" in every message of a multi-rank job; a single process keeps plain messages.
    if (world_size_ > 1) set_process_rank(world_rank_);
    options_ = resolve(options);
    // The finalize barrier waits longer than the user's collectives, so that a rank which left
    // its loop early is named by the timeout of the collective the others are stuck in.
    CommOptions finalize_options = options_;
    finalize_options.timeout_s = options_.timeout_s + 2 * options_.grace_s;
    MPI_Comm dup = MPI_COMM_NULL;
    const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    NURI_CHECK(rc == MPI_SUCCESS, backend, "mpi_init",
               "MPI_Comm_dup(MPI_COMM_WORLD) failed: " << mpi_error_string(rc));
    g_env_world = new MpiCommunicator(dup, "finalize", finalize_options);
  } catch (...) {
    g_env_active = false;
    throw;
  }
}

MpiEnvironment::~MpiEnvironment() {
  if (std::uncaught_exceptions() > 0)
    abort_job(
        "an exception is leaving main() past the MPI environment (catch it and call "
        "nuri::abort_job); aborting the job so that the other ranks do not hang");
  g_finalizing = true;
  try {
    // Drain every communicator (still watched), then meet the other ranks before finalizing.
    std::vector<MpiCommunicator*> live;
    {
      std::lock_guard<std::mutex> lock(g_registry_mutex);
      live.assign(g_registry.begin(), g_registry.end());
    }
    for (MpiCommunicator* c : live) c->synchronize();
    if (g_env_world) g_env_world->barrier();
  } catch (const std::exception& e) {
    abort_job(e);
  }
  {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    for (MpiCommunicator* c : g_registry) c->shutdown();
  }
  {
    std::lock_guard<std::mutex> lock(g_retired_mutex);
    for (auto& channel : g_retired) {
      comm::Watchdog::instance().remove(channel.get());
      channel->free();
    }
    g_retired.clear();
  }
  delete g_env_world;
  g_env_world = nullptr;
  comm::Watchdog::instance().stop();
  if (owns_mpi_) MPI_Finalize();
  g_finalizing = false;
  g_env_active = false;
}

std::shared_ptr<Communicator> MpiEnvironment::world(const CommOptions& options) const {
  MPI_Comm dup = MPI_COMM_NULL;
  const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  NURI_CHECK(rc == MPI_SUCCESS, backend, "comm",
             "MPI_Comm_dup(MPI_COMM_WORLD) failed: " << mpi_error_string(rc));
  return std::make_shared<MpiCommunicator>(dup, "world", options);
}

bool MpiEnvironment::active() { return g_env_active.load(); }

void abort_job(const std::string& message, int exit_code) {
  std::string text = message;
  if (process_rank() >= 0 && text.rfind("[rank ", 0) != 0)
    text = "[rank " + std::to_string(process_rank()) + "] " + text;
  std::fflush(stdout);
  std::fprintf(stderr, "nuri: fatal: %s\n", text.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  std::_Exit(exit_code);
}

void abort_job(const std::exception& error, int exit_code) {
  abort_job(std::string(error.what()), exit_code);
}

}  // namespace nuri

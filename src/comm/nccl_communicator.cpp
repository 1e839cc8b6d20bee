// The NCCL communicator: the Communicator interface (comm.hpp) for GPU buffers.
//
//   bootstrap  an MPI communicator of the same ranks: rank 0 makes the NCCL unique id and
//              broadcasts it over MPI, then every rank joins with ncclCommInitRank.
//   stream     the communicator's own non-blocking CUDA stream: collectives run on it in issue
//              order, beside whatever the compute streams do; each one records an event.
//   handles    a completion thread polls the events in issue order and finishes each handle; a
//              blocking call is an asynchronous one followed by wait().
//   timeout    an operation in flight longer than options().timeout_s aborts the NCCL
//              communicator (ncclCommAbort), fails every pending handle with a message naming
//              the group, the operation and its sequence number, and ends the job (or calls the
//              on_timeout hook). Unlike the MPI communicator it cannot name the ranks that did
//              not arrive: NCCL does not say.
//   uneven     reduce_scatter and all_gather use block_range (comm.hpp) like the MPI one: equal
//              blocks go to ncclReduceScatter / ncclAllGather; uneven ones become one grouped
//              ncclReduce / ncclBroadcast per block.
//   split      splits the bootstrap group over MPI and builds a new NCCL communicator from it.
//
// Buffers must be device memory of this rank's device (or managed memory), and READY: the
// collectives run on this communicator's own stream, which does not wait for the caller's compute
// stream, so the caller synchronizes it (or records an event and waits on it) before issuing.
// options().check_args is not supported here (it would need a host copy of every call's arguments on a side channel).
// Built only with CUDA and NCCL (NURI_WITH_NCCL); otherwise make_nccl_communicator throws.
#include <sstream>

#include "nuri/comm.hpp"
#include "nuri/error.hpp"

#if NURI_WITH_NCCL
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "comm/op_state.hpp"
#endif

namespace nuri {

#if NURI_WITH_NCCL
namespace {

using Clock = std::chrono::steady_clock;

#define NURI_CUDA_CHECK(call, op, where)                                                         \
  do {                                                                                           \
    const cudaError_t e_ = (call);                                                               \
    NURI_CHECK(e_ == cudaSuccess, backend, op,                                                   \
               where << ": " #call " failed: " << cudaGetErrorString(e_) << " (" << int(e_) << ")"); \
  } while (0)

#define NURI_NCCL_CHECK(call, op, where)                                                         \
  do {                                                                                           \
    const ncclResult_t r_ = (call);                                                              \
    NURI_CHECK(r_ == ncclSuccess, backend, op,                                                   \
               where << ": " #call " failed: " << ncclGetErrorString(r_) << " (" << int(r_) << ")"); \
  } while (0)

ncclDataType_t nccl_type(DataType t) {
  switch (t) {
    case DataType::f32: return ncclFloat32;
    case DataType::f64: return ncclFloat64;
    case DataType::i32: return ncclInt32;
    case DataType::i64: return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Communicator> bootstrap, int device)
      : bootstrap_(std::move(bootstrap)), device_(device), options_(bootstrap_->options()) {
    name_ = bootstrap_->name();
    const std::string where = describe();
    NURI_CUDA_CHECK(cudaSetDevice(device_), "make_nccl_communicator", where);
    ncclUniqueId id;
    if (bootstrap_->rank() == 0) NURI_NCCL_CHECK(ncclGetUniqueId(&id), "make_nccl_communicator", where);
    static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0, "ncclUniqueId is not a whole number of int64s");
    bootstrap_->broadcast(reinterpret_cast<int64_t*>(&id), sizeof(id) / sizeof(int64_t), 0);
    NURI_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap_->size(), id, bootstrap_->rank()), "make_nccl_communicator",
                    where);
    NURI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "make_nccl_communicator", where);
    NURI_CUDA_CHECK(cudaMalloc(&barrier_buf_, sizeof(int32_t)), "make_nccl_communicator", where);
    poller_ = std::thread([this] { poll(); });
  }

  ~NcclCommunicator() override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      idle_cv_.wait(lock, [this] { return pending_.empty() || broken_; });
      stop_ = true;
    }
    wake_cv_.notify_all();
    if (poller_.joinable()) poller_.join();
    if (comm_) {
      if (broken_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
    if (barrier_buf_) cudaFree(barrier_buf_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return bootstrap_->rank(); }
  int size() const override { return bootstrap_->size(); }
  const std::string& name() const override { return name_; }
  const CommOptions& options() const override { return options_; }
  uint64_t issued() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return issued_;
  }
  uint64_t completed() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return completed_;
  }

  CommHandle start(const Collective& c, bool async) override {
    check(c);
    auto state = std::make_shared<detail::CommOpState>();
    state->collective = c;
    // issue_mutex_ orders the NCCL calls (issue order = stream order). mutex_ is not held across
    // them: a blocking NCCL call (a peer that never connects) must not stop the poller's timeout.
    std::lock_guard<std::mutex> issue(issue_mutex_);
    Pending p;
    p.state = state;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      NURI_CHECK(!broken_, backend, to_string(c.kind),
                 describe() << ": the NCCL communicator is broken by an earlier error (" << broken_reason_ << ")");
      state->sequence = ++issued_;
      p.started = Clock::now();
      enqueuing_ = p.started;  // the poller times the enqueue too
      enqueuing_op_ = state;
    }
    std::exception_ptr error;
    try {
      NURI_CUDA_CHECK(cudaSetDevice(device_), to_string(c.kind), where(*state));
      enqueue(c, *state);
      NURI_CUDA_CHECK(cudaEventCreateWithFlags(&p.event, cudaEventDisableTiming), to_string(c.kind), where(*state));
      NURI_CUDA_CHECK(cudaEventRecord(p.event, stream_), to_string(c.kind), where(*state));
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      enqueuing_op_.reset();
      if (error) {
        if (p.event) cudaEventDestroy(p.event);
        broken_ = true;
        broken_reason_ = "enqueueing " + nuri::describe(c);
        state->finish(error);
        ++completed_;
        idle_cv_.notify_all();
        std::rethrow_exception(error);
      }
      pending_.push_back(p);
    }
    wake_cv_.notify_all();
    CommHandle h(state);
    if (!async) h.wait();
    return h;
  }

  void synchronize() override {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_cv_.wait(lock, [this] { return pending_.empty(); });
  }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    std::shared_ptr<Communicator> group = bootstrap_->split(color, key, name);
    if (!group) return nullptr;
    return std::make_shared<NcclCommunicator>(std::move(group), device_);
  }

  std::shared_ptr<Communicator> split_node(const std::string& name) override {
    return std::make_shared<NcclCommunicator>(bootstrap_->split_node(name), device_);
  }

 private:
  struct Pending {
    std::shared_ptr<detail::CommOpState> state;
    cudaEvent_t event = nullptr;
    Clock::time_point started;
  };

  std::string where(const detail::CommOpState& s) const {
    std::ostringstream o;
    o << describe() << ", " << nuri::describe(s.collective) << ", collective #" << s.sequence;
    return o.str();
  }

  void check(const Collective& c) const {
    const char* op = to_string(c.kind);
    const bool needs_data = c.kind != CollectiveKind::barrier && c.count > 0;
    NURI_CHECK(!needs_data || c.recv != nullptr, config, op, describe() << ": the output buffer is null");
    NURI_CHECK(!needs_data || c.send != nullptr ||
                   c.kind == CollectiveKind::all_reduce || c.kind == CollectiveKind::broadcast,
               config, op, describe() << ": the input buffer is null");
    NURI_CHECK(c.kind != CollectiveKind::broadcast || (c.root >= 0 && c.root < size()), config, op,
               describe() << ": root " << c.root << " is outside the group");
    NURI_CHECK(c.op != ReduceOp::avg || c.type == DataType::f32 || c.type == DataType::f64, config, op,
               describe() << ": avg needs a floating-point type, got " << to_string(c.type));
  }

  // Runs fn between ncclGroupStart and ncclGroupEnd; the group is ended on an error too.
  template <class Fn>
  void grouped(const char* op, const std::string& at, Fn&& fn) {
    NURI_NCCL_CHECK(ncclGroupStart(), op, at);
    try {
      fn();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    NURI_NCCL_CHECK(ncclGroupEnd(), op, at);
  }

  // Enqueues c on the stream (issue_mutex_ held: issue order = stream order).
  void enqueue(const Collective& c, const detail::CommOpState& s) {
    const char* op = to_string(c.kind);
    const std::string at = where(s);
    const ncclDataType_t t = nccl_type(c.type);
    const size_t bytes = size_of(c.type);
    const int p = size(), r = rank();
    auto* recv = static_cast<char*>(c.recv);
    const auto* send = static_cast<const char*>(c.send);
    switch (c.kind) {
      case CollectiveKind::all_reduce:
        NURI_NCCL_CHECK(ncclAllReduce(recv, recv, c.count, t, nccl_op(c.op), comm_, stream_), op, at);
        break;
      case CollectiveKind::broadcast:
        NURI_NCCL_CHECK(ncclBroadcast(recv, recv, c.count, t, c.root, comm_, stream_), op, at);
        break;
      case CollectiveKind::barrier:
        NURI_NCCL_CHECK(ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclInt32, ncclSum, comm_, stream_), op, at);
        break;
      case CollectiveKind::reduce_scatter: {
        const BlockRange mine = block_range(c.count, p, r);
        if (c.count % size_t(p) == 0) {
          NURI_NCCL_CHECK(ncclReduceScatter(send, recv, mine.count, t, nccl_op(c.op), comm_, stream_), op, at);
        } else {
          // Uneven blocks: block i is reduced to rank i. (In place: recv is send + mine.offset.)
          grouped(op, at, [&] {
            for (int i = 0; i < p; ++i) {
              const BlockRange b = block_range(c.count, p, i);
              if (b.count == 0) continue;
              NURI_NCCL_CHECK(ncclReduce(send + b.offset * bytes, i == r ? recv : nullptr, b.count, t, nccl_op(c.op),
                                         i, comm_, stream_),
                              op, at);
            }
          });
        }
        break;
      }
      case CollectiveKind::all_gather: {
        const BlockRange mine = block_range(c.count, p, r);
        if (c.count % size_t(p) == 0) {
          NURI_NCCL_CHECK(ncclAllGather(send, recv, mine.count, t, comm_, stream_), op, at);
        } else {
          // Uneven blocks: rank i broadcasts its block into place on every rank.
          grouped(op, at, [&] {
            for (int i = 0; i < p; ++i) {
              const BlockRange b = block_range(c.count, p, i);
              if (b.count == 0) continue;
              NURI_NCCL_CHECK(ncclBroadcast(i == r ? send : nullptr, recv + b.offset * bytes, b.count, t, i, comm_,
                                            stream_),
                              op, at);
            }
          });
        }
        break;
      }
    }
  }

  // The completion thread: finishes operations in issue order as their events complete, and
  // watches the oldest one's age.
  void poll() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_cv_.wait_for(lock, std::chrono::milliseconds(pending_.empty() ? 100 : 0),
                        [this] { return stop_ || !pending_.empty(); });
      if (pending_.empty()) {
        if (stop_) return;
        if (enqueuing_op_ &&
            std::chrono::duration<double>(Clock::now() - enqueuing_).count() > options_.timeout_s) {
          // An NCCL call itself has not returned: a peer never connected. ncclCommAbort makes it
          // return (with an error the issuing thread reports); the job ends here in any case.
          std::ostringstream m;
          m << where(*enqueuing_op_) << ": the NCCL call did not return within " << options_.timeout_s
            << " s (a rank of the group never joined it); aborting the NCCL communicator";
          fail_all(m.str());
          lock.unlock();
          fire();
          return;
        }
        continue;
      }
      Pending p = pending_.front();
      const cudaError_t q = cudaEventQuery(p.event);
      if (q == cudaErrorNotReady) {
        const double age = std::chrono::duration<double>(Clock::now() - p.started).count();
        ncclResult_t async_error = ncclSuccess;
        ncclCommGetAsyncError(comm_, &async_error);
        if (async_error != ncclSuccess && async_error != ncclInProgress) {
          std::ostringstream m;
          m << where(*p.state) << ": NCCL reported " << ncclGetErrorString(async_error)
            << " while it was in flight (a rank died or the network failed)";
          fail_all(m.str());
          lock.unlock();
          fire();
          return;
        }
        if (age > options_.timeout_s) {
          std::ostringstream m;
          m << where(*p.state) << " did not complete within " << options_.timeout_s
            << " s (NURI_COMM_TIMEOUT / parallel.comm_timeout_s): a rank of the group did not call it, is stuck, or "
            << "died; NCCL cannot say which. Aborting the NCCL communicator";
          fail_all(m.str());
          lock.unlock();
          fire();
          return;
        }
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        lock.lock();
        continue;
      }
      pending_.pop_front();
      cudaEventDestroy(p.event);
      std::exception_ptr error;
      if (q != cudaSuccess) {
        try {
          NURI_THROW(backend, to_string(p.state->collective.kind),
                     where(*p.state) << ": the CUDA stream failed: " << cudaGetErrorString(q));
        } catch (...) {
          error = std::current_exception();
        }
        broken_ = true;
        broken_reason_ = cudaGetErrorString(q);
      }
      p.state->finish(error);
      ++completed_;
      idle_cv_.notify_all();
    }
  }

  // mutex_ held: fails every pending operation with `message` and marks the communicator broken.
  void fail_all(const std::string& message) {
    broken_ = true;
    broken_reason_ = message;
    std::ostringstream m;  // (not string +: GCC 12 warns falsely of -Wrestrict on it)
    m << "[" << describe() << "] " << message;
    timeout_message_ = m.str();
    ncclCommAbort(comm_);
    comm_ = nullptr;
    for (Pending& p : pending_) {
      try {
        NURI_THROW(backend, to_string(p.state->collective.kind), message);
      } catch (...) {
        p.state->finish(std::current_exception());
      }
      cudaEventDestroy(p.event);
      ++completed_;
    }
    pending_.clear();
    idle_cv_.notify_all();
  }

  void fire() {
    if (options_.on_timeout) {
      options_.on_timeout(timeout_message_);
      return;
    }
    abort_job(timeout_message_, 3);
  }

  std::shared_ptr<Communicator> bootstrap_;
  int device_ = 0;
  CommOptions options_;
  std::string name_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int32_t* barrier_buf_ = nullptr;

  std::mutex issue_mutex_;   // held by start() across the NCCL calls
  mutable std::mutex mutex_;  // the queue, counters and flags below
  std::condition_variable wake_cv_, idle_cv_;
  Clock::time_point enqueuing_;                        // when the current start() began its NCCL calls
  std::shared_ptr<detail::CommOpState> enqueuing_op_;  // ... and for which operation (null: none)
  std::deque<Pending> pending_;
  std::thread poller_;
  uint64_t issued_ = 0, completed_ = 0;
  bool stop_ = false, broken_ = false;
  std::string broken_reason_, timeout_message_;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator(std::shared_ptr<Communicator> bootstrap, int device) {
  NURI_CHECK(bootstrap != nullptr, config, "make_nccl_communicator", "the bootstrap communicator is null");
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  NURI_CHECK(e == cudaSuccess && devices > 0, backend, "make_nccl_communicator",
             "rank " << bootstrap->rank() << " of " << bootstrap->describe() << ": no CUDA device ("
                     << (e == cudaSuccess ? std::string("0 devices") : std::string(cudaGetErrorString(e)))
                     << "); NCCL needs a GPU per rank. Use the MPI communicator for CPU training");
  NURI_CHECK(device >= 0 && device < devices, config, "make_nccl_communicator",
             "device " << device << " does not exist (this node has " << devices << " CUDA devices)");
  return std::make_shared<NcclCommunicator>(std::move(bootstrap), device);
}

bool nccl_available() { return true; }

#else

std::shared_ptr<Communicator> make_nccl_communicator(std::shared_ptr<Communicator> bootstrap, int /*device*/) {
  NURI_THROW(backend, "make_nccl_communicator",
             (bootstrap ? "rank " + std::to_string(bootstrap->rank()) + ": " : std::string())
                 << "nuri was built without NCCL (no nvcc or no nccl.h/libnccl when it was configured); rebuild on a "
                    "machine with the CUDA toolkit and NCCL, or use the MPI communicator");
}

bool nccl_available() { return false; }

#endif

}  // namespace nuri

#pragma once
// \file
// Communication: the MPI environment, the Communicator interface (collectives with asynchronous
// handles and a timeout that names the ranks that did not arrive) and the ProcessGrid that builds
// the tensor-parallel (TP) and data-parallel (DP) groups from the world.
//
// A tour:
//
//   int main(int argc, char** argv) {
//     nuri::MpiEnvironment mpi(&argc, &argv);      // MPI_Init_thread; errors say "[rank r]"
//     try {
//       nuri::ProcessGrid grid(mpi.world(), /*tp=*/2, /*dp=*/0);   // dp 0: world size / tp
//       grid.print();                              // rank 0 prints the layout table
//       std::vector<float> grads(n);
//       nuri::CommHandle h = grid.dp().all_reduce_async(grads.data(), n, nuri::ReduceOp::avg);
//       ...                                        // compute while the all-reduce runs
//       h.wait();                                  // grads now hold the mean over DP ranks
//     } catch (const std::exception& e) {
//       nuri::abort_job(e);                        // prints, then MPI_Abort: no rank hangs
//     }
//   }
//
// Ordering: the collectives of one communicator run one at a time, in the order they were
// issued (blocking and asynchronous calls alike), so every rank must issue the same collectives
// on a communicator in the same order, as MPI requires. Different communicators progress
// independently (each has its own communication thread).
//
// Timeouts: a collective that has not completed after CommOptions::timeout_s ends the whole job
// (MPI_Abort) with a message naming the op, the group, the sequence number and the ranks that did
// not arrive. See CommOptions.
//
// This header does not include <mpi.h>: MPI stays an implementation detail of the library.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// ---------------------------------------------------------------------------------------------
// Element types and reductions
// ---------------------------------------------------------------------------------------------

// The element types a collective moves.
enum class DataType { f32, f64, i32, i64 };
const char* to_string(DataType type);  // "float", "double", "int32", "int64"
size_t size_of(DataType type);         // bytes per element

// DataTypeOf<T>::value: the DataType of T (float, double, int32_t, int64_t); defined for those
// four only, so a typed collective on another T does not compile.
template <class T>
struct DataTypeOf;
// \cond
// The specializations; hidden from the API docs, which show DataTypeOf's comment above.
template <>
struct DataTypeOf<float> { static constexpr DataType value = DataType::f32; };
template <>
struct DataTypeOf<double> { static constexpr DataType value = DataType::f64; };
template <>
struct DataTypeOf<int32_t> { static constexpr DataType value = DataType::i32; };
template <>
struct DataTypeOf<int64_t> { static constexpr DataType value = DataType::i64; };
// \endcond

// avg = sum / group size, for f32 and f64 only (an Error(config) on integers).
enum class ReduceOp { sum, avg, max, min };
const char* to_string(ReduceOp op);  // "sum", "avg", "max", "min"

// Which collective a Collective describes.
enum class CollectiveKind { all_reduce, reduce_scatter, all_gather, broadcast, barrier };
const char* to_string(CollectiveKind kind);  // the enumerator's name, e.g. "all_reduce"

// The block partition that reduce_scatter and all_gather use for `total` elements over `parts`
// ranks: block i has total / parts elements, plus one for the first total % parts blocks, and the
// blocks are contiguous in rank order. So no padding is needed and no count is refused:
// block_range(10, 4, i) = {0,3} {3,3} {6,2} {8,2}. Throws Error(config) when parts < 1 or index
// is outside [0, parts).
struct BlockRange {
  size_t offset = 0;  // first element of the block
  size_t count = 0;   // elements in the block (may be 0 when total < parts)
};
BlockRange block_range(size_t total, int parts, int index);  // block `index` of the partition

// One collective call as a communicator sees it. Pointers are borrowed: they must stay valid
// until the call returns (blocking) or its handle is done (asynchronous).
struct Collective {
  CollectiveKind kind = CollectiveKind::barrier;  // which collective; the default is a barrier
  const void* send = nullptr;  // input (all_reduce and broadcast: unused, data is `recv`)
  void* recv = nullptr;        // output (all_reduce and broadcast: the in-place buffer)
  size_t count = 0;            // all_reduce/broadcast: elements; reduce_scatter/all_gather: total
  DataType type = DataType::f32;  // element type of send and recv
  ReduceOp op = ReduceOp::sum;  // all_reduce and reduce_scatter
  int root = 0;                 // broadcast
};
// One line for messages: "all_reduce (float x 1000, sum)".
std::string describe(const Collective& c);

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

struct CommOptions {
  // Seconds a collective may take before the job is aborted with a message that names the
  // ranks that did not arrive. <= 0 picks the default: $NURI_COMM_TIMEOUT, else 300 s.
  double timeout_s = 0;
  // After a non-root rank's timeout fires it waits this long for the group's rank 0 to name the
  // missing ranks and abort, then aborts itself with what it knows. <= 0: timeout / 2, clamped
  // to [2 s, 30 s].
  double grace_s = 0;
  // Before every collective, check that all ranks call the same op with the same count, type,
  // root and sequence number (one extra small all-gather per collective; for debugging and
  // tests). Mismatches throw Error(shape) or Error(internal) on every rank, naming the ranks and
  // their values. -1 picks the default: $NURI_COMM_CHECK=1 turns it on, otherwise off.
  int check_args = -1;
  // Test hook: called (on the watchdog thread) with the timeout message instead of aborting the
  // job. Must not call into the communicator. Leave empty outside tests.
  std::function<void(const std::string& message)> on_timeout;
};

// ---------------------------------------------------------------------------------------------
// Handles
// ---------------------------------------------------------------------------------------------

namespace detail {
struct CommOpState;  // defined by the implementation
}

// The handle of an asynchronous collective. Copies share the same operation. A
// default-constructed handle is already done. Thread-safe: wait() and test() may be called from
// any thread. Dropping a handle does not cancel the operation (collectives cannot be cancelled):
// its buffers must stay valid until it completes (Communicator::synchronize() waits for all).
class CommHandle {
 public:
  CommHandle() = default;
  // A handle on `state`; made by Communicator implementations, not by users.
  explicit CommHandle(std::shared_ptr<detail::CommOpState> state);
  // Blocks until the collective has completed; throws its nuri::Error (every later wait() on a
  // copy throws it again).
  void wait();
  // True when the collective has completed (throws its error, like wait()); never blocks.
  bool test();
  // The collective's sequence number on its communicator (1 for the first); 0 for an empty
  // handle.
  uint64_t sequence() const;

 private:
  std::shared_ptr<detail::CommOpState> state_;
};

// ---------------------------------------------------------------------------------------------
// Communicator
// ---------------------------------------------------------------------------------------------

// A group of ranks and the collectives among them. Obtained from MpiEnvironment::world(),
// split()/split_node(), or a ProcessGrid. Owned by shared_ptr; must be destroyed (or MPI
// finalized by MpiEnvironment, which shuts every communicator down) before the process exits.
//
// Threads: any thread may issue collectives; the issue order on one communicator is the
// execution order. A blocking call runs on the calling thread when nothing is queued, otherwise
// it queues behind the asynchronous calls and waits. Asynchronous calls run on the
// communicator's communication thread (started on first use), which calls MPI while the caller
// computes: that is what makes the overlap real (Open MPI makes little progress on
// nonblocking collectives unless some thread calls into it).
//
// Errors: bad arguments (null buffers, a root outside the group, avg on integers, overlapping
// buffers other than the documented in-place forms) throw Error(config) at the call. MPI
// failures throw Error(backend) with MPI_Error_string, naming the rank, op, group (name and
// size) and counts; after one the communicator is broken and every later call throws.
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;  // in [0, size())
  virtual int size() const = 0;  // ranks in the group, >= 1
  virtual const std::string& name() const = 0;  // "world", "tp", "dp", ...
  virtual const CommOptions& options() const = 0;  // with the defaults resolved
  // Collectives issued so far (the next one gets sequence issued() + 1).
  virtual uint64_t issued() const = 0;
  // Collectives completed so far (issued() - completed() are queued or running).
  virtual uint64_t completed() const = 0;
  // "group 'dp' (rank 1 of 4)".
  std::string describe() const;

  // Starts `c`. async = false: runs it and returns a done handle (throws its error). async =
  // true: queues it and returns its handle. The typed calls below are the usual way in.
  virtual CommHandle start(const Collective& c, bool async) = 0;
  // Waits until every collective issued so far has completed (errors stay with their handles).
  virtual void synchronize() = 0;

  // Sub-communicators (collective over this group): ranks with the same color form a group,
  // ordered by key, then by rank here. color < 0: this rank joins no group (returns nullptr).
  // The child inherits options().
  virtual std::shared_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
  // The ranks of this group that share memory with this one (one group per node).
  virtual std::shared_ptr<Communicator> split_node(const std::string& name) = 0;

  // ---- typed collectives; the *_async forms return a handle -------------------------------

  // In place: data[i] = op over ranks of data[i], count elements on every rank.
  template <class T>
  void all_reduce(T* data, size_t count, ReduceOp op = ReduceOp::sum) {
    start(make<T>(CollectiveKind::all_reduce, nullptr, data, count, op, 0), false);
  }
  // all_reduce without waiting; data must stay valid until the handle is done.
  template <class T>
  CommHandle all_reduce_async(T* data, size_t count, ReduceOp op = ReduceOp::sum) {
    return start(make<T>(CollectiveKind::all_reduce, nullptr, data, count, op, 0), true);
  }

  // send holds `total` elements on every rank; recv (block_range(total, size(), rank()).count
  // elements) receives this rank's block of the reduction. In place: recv may point into send
  // at exactly send + block_range(...).offset (the rank's own slot of the full buffer).
  template <class T>
  void reduce_scatter(const T* send, T* recv, size_t total, ReduceOp op = ReduceOp::sum) {
    start(make<T>(CollectiveKind::reduce_scatter, send, recv, total, op, 0), false);
  }
  // reduce_scatter without waiting; send and recv must stay valid until the handle is done.
  template <class T>
  CommHandle reduce_scatter_async(const T* send, T* recv, size_t total,
                                  ReduceOp op = ReduceOp::sum) {
    return start(make<T>(CollectiveKind::reduce_scatter, send, recv, total, op, 0), true);
  }

  // send holds this rank's block (block_range(total, size(), rank()).count elements); recv
  // (`total` elements) receives every rank's block at its offset. In place: send may be
  // recv + block_range(...).offset.
  template <class T>
  void all_gather(const T* send, T* recv, size_t total) {
    start(make<T>(CollectiveKind::all_gather, send, recv, total, ReduceOp::sum, 0), false);
  }
  // all_gather without waiting; send and recv must stay valid until the handle is done.
  template <class T>
  CommHandle all_gather_async(const T* send, T* recv, size_t total) {
    return start(make<T>(CollectiveKind::all_gather, send, recv, total, ReduceOp::sum, 0), true);
  }

  // Copies root's `count` elements of data to every rank's data.
  template <class T>
  void broadcast(T* data, size_t count, int root) {
    start(make<T>(CollectiveKind::broadcast, nullptr, data, count, ReduceOp::sum, root), false);
  }
  // broadcast without waiting; data must stay valid until the handle is done.
  template <class T>
  CommHandle broadcast_async(T* data, size_t count, int root) {
    return start(make<T>(CollectiveKind::broadcast, nullptr, data, count, ReduceOp::sum, root),
                 true);
  }

  // Returns when every rank of the group has called barrier (or barrier_async).
  void barrier() { start(Collective{}, false); }
  // barrier without waiting: the handle is done once every rank has arrived.
  CommHandle barrier_async() { return start(Collective{}, true); }

 private:
  template <class T>
  static Collective make(CollectiveKind kind, const T* send, T* recv, size_t count, ReduceOp op,
                         int root) {
    Collective c;
    c.kind = kind;
    c.send = send;
    c.recv = recv;
    c.count = count;
    c.type = DataTypeOf<T>::value;
    c.op = op;
    c.root = root;
    return c;
  }
};

// ---------------------------------------------------------------------------------------------
// MPI environment
// ---------------------------------------------------------------------------------------------

// Initializes MPI (MPI_THREAD_MULTIPLE: the communication and watchdog threads call MPI beside
// the caller) and finalizes it on destruction. One per process, normally a local in main().
// Works when the program was not started by mpirun (a world of one rank). Calls
// set_process_rank(world rank) so every nuri::Error says "[rank r]". If MPI was already
// initialized by the application it is adopted (thread level checked) and not finalized here.
// Throws Error(backend) when MPI cannot give MPI_THREAD_MULTIPLE or a second environment is made.
// The destructor shuts down every live communicator (draining its queue), then waits, as a
// watched barrier, for all ranks to reach finalize (so a rank that leaves early is named by the
// timeout instead of hanging the job), then finalizes. If the destructor runs while an
// exception is propagating it aborts the job instead (the other ranks would hang otherwise).
class MpiEnvironment {
 public:
  // argc/argv (may be null) go to MPI_Init_thread; options (defaults resolved) are world()'s.
  explicit MpiEnvironment(int* argc = nullptr, char*** argv = nullptr,
                          const CommOptions& options = {});
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  int world_rank() const { return world_rank_; }  // this process's rank in MPI_COMM_WORLD
  int world_size() const { return world_size_; }  // ranks in MPI_COMM_WORLD (1 without mpirun)
  // A new communicator over all ranks, named "world". Collective: every rank must call it, and
  // from one thread at a time.
  std::shared_ptr<Communicator> world(const CommOptions& options) const;
  // world() with the options given to the constructor.
  std::shared_ptr<Communicator> world() const { return world(options_); }
  // True between construction and destruction of the (one) environment.
  static bool active();

 private:
  int world_rank_ = 0;
  int world_size_ = 1;
  bool owns_mpi_ = false;
  CommOptions options_;
};

// Prints "nuri: fatal: <what>" (with the rank, if the message lacks it) to stderr and ends the
// whole job: MPI_Abort when MPI is running with more than one rank (so the other ranks do not
// hang in a collective), otherwise std::_Exit. For main()'s catch block.
[[noreturn]] void abort_job(const std::exception& error, int exit_code = 1);
// abort_job with a message instead of an exception: prints "nuri: fatal: <message>".
[[noreturn]] void abort_job(const std::string& message, int exit_code = 1);

// ---------------------------------------------------------------------------------------------
// NCCL
// ---------------------------------------------------------------------------------------------

// A Communicator over NCCL for GPU buffers (device memory of `device`), with the same ranks,
// order and name as `bootstrap` (an MPI communicator: rank 0's NCCL unique id is broadcast over
// it). Collective over `bootstrap`. The communicator runs every collective on its own CUDA
// stream in issue order; handles complete when the stream passes them. That stream does not wait
// for the caller's: the data must be ready (its producing stream synchronized) before a call.
// Timeouts abort the NCCL communicator and the job (options() are the bootstrap's), naming the
// operation but not the missing ranks (NCCL does not report them); check_args is ignored.
// split() splits the bootstrap group and builds a new NCCL communicator. Throws Error(backend)
// when nuri was built without NCCL or there is no CUDA device, Error(config) for a device that
// does not exist.
// (src/comm/nccl_communicator.cpp)
std::shared_ptr<Communicator> make_nccl_communicator(std::shared_ptr<Communicator> bootstrap, int device);
// True when nuri was built with NCCL (make_nccl_communicator can work where there is a GPU).
bool nccl_available();

// ---------------------------------------------------------------------------------------------
// Process grid
// ---------------------------------------------------------------------------------------------

// Where one rank sits.
struct RankPlacement {
  int world_rank = 0;  // rank in the world communicator
  int tp_rank = 0;     // rank in its TP group: world_rank % tp
  int dp_rank = 0;     // rank in its DP group: world_rank / tp
  int node = 0;        // node index: nodes numbered in order of their lowest world rank
  int local_rank = 0;  // rank among the ranks on its node
  std::string host;    // host name (gethostname, at most 64 bytes)
};

// The (tp, dp) pairs whose product is world_size, tp ascending.
std::vector<std::pair<int, int>> grid_factorizations(int world_size);

// The TP x DP layout of the world: world rank = tp_rank + tp * dp_rank (TP innermost, so a TP
// group sits inside one node when tp <= ranks per node). Construction is collective over
// `world`. Throws Error(config) when tp * dp != world size, naming the sizes and the valid
// factorizations. dp <= 0 means world size / tp. The grid owns its sub-communicators; the
// accessors return references valid for the grid's lifetime. Not thread-safe to construct
// concurrently with other collectives on `world`.
class ProcessGrid {
 public:
  // Splits `world` (shared, kept alive by the grid) into tp x dp; see the class comment.
  ProcessGrid(std::shared_ptr<Communicator> world, int tp, int dp = 0);

  int world_rank() const { return world_->rank(); }  // this rank in the world
  int world_size() const { return world_->size(); }  // tp_size() * dp_size()
  int tp_size() const { return tp_size_; }           // ranks per TP group
  int dp_size() const { return dp_size_; }           // ranks per DP group (number of TP groups)
  int tp_rank() const { return tp_->rank(); }        // world_rank() % tp_size()
  int dp_rank() const { return dp_->rank(); }        // world_rank() / tp_size()
  int node() const { return node_index_; }  // this rank's node index
  int num_nodes() const { return num_nodes_; }       // nodes the world spans
  int local_rank() const { return node_->rank(); }   // this rank among those on its node
  int local_size() const { return node_->size(); }  // ranks on this node
  // CPU threads this rank should use by default: the node's cores / ranks on this node, >= 1.
  int threads_per_rank() const { return threads_per_rank_; }

  Communicator& world() const { return *world_; }  // all ranks (the communicator given)
  Communicator& tp() const { return *tp_; }    // the ranks with this rank's dp_rank
  Communicator& dp() const { return *dp_; }    // the ranks with this rank's tp_rank
  Communicator& node_group() const { return *node_; }  // the ranks on this node ("node")
  std::shared_ptr<Communicator> world_ptr() const { return world_; }  // world(), shared
  std::shared_ptr<Communicator> tp_ptr() const { return tp_; }        // tp(), shared
  std::shared_ptr<Communicator> dp_ptr() const { return dp_; }        // dp(), shared

  // Every rank's placement, indexed by world rank (the same on every rank).
  const std::vector<RankPlacement>& placements() const { return placements_; }
  // The layout: a summary line and a table of ranks (the first 64; then a count).
  std::string describe() const;
  // Rank 0 prints describe() to stdout (through the log).
  void print() const;

 private:
  std::shared_ptr<Communicator> world_, tp_, dp_, node_;
  int tp_size_ = 1, dp_size_ = 1;
  int node_index_ = 0, num_nodes_ = 1, threads_per_rank_ = 1;
  std::vector<RankPlacement> placements_;
};

}  // namespace nuri
NURI_API_END

// Data parallelism: bucketed gradient reduction started from the model's grad-ready hook during
// backward, the DP loss mean and gradient norm, and ZeRO-1 (sharded AdamW moments, reduce-scatter
// of gradients, all-gather of parameters). See include/nuri/parallel.hpp for the design.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/parallel.hpp"

namespace nuri {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

// The completion clock: a thread that waits on the asynchronous handles in issue order and
// stamps each completion, so the time every collective was in flight is known without a hook in
// the communicator. A communicator runs its collectives one at a time in issue order, so an
// operation's busy time is from max(its launch, the previous completion) to its completion.
class DataParallel::Impl {
 public:
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Tracks `h`, started at `launched`; the training thread keeps a copy to wait on.
  void track(CommHandle h, Clock::time_point launched) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
      queue_.push_back({std::move(h), launched});
      ++outstanding_;
    }
    cv_.notify_all();
  }

  // Waits until every tracked handle is stamped; returns the busy seconds since the last call.
  double drain() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return outstanding_ == 0; });
    const double busy = busy_s_;
    busy_s_ = 0;
    return busy;
  }

  std::vector<CommHandle> handles;  // this step's bucket (or all-gather) handles, in issue order

 private:
  struct Pending {
    CommHandle handle;
    Clock::time_point launched;
  };

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      try {
        p.handle.wait();
      } catch (...) {
        // The training thread's own wait() rethrows it; here only the time matters.
      }
      const Clock::time_point done = Clock::now();
      lock.lock();
      busy_s_ += seconds_between(std::max(p.launched, last_done_), done);
      last_done_ = done;
      if (--outstanding_ == 0) done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::deque<Pending> queue_;
  std::thread thread_;
  bool stop_ = false;
  size_t outstanding_ = 0;
  double busy_s_ = 0;
  Clock::time_point last_done_{};
};

DataParallel::DataParallel(Trainable& model, Backend& backend, const OptimConfig& optim,
                           std::shared_ptr<Communicator> dp, const DataParallelOptions& options)
    : model_(model), backend_(backend), comm_(std::move(dp)), impl_(std::make_unique<Impl>()) {
  NURI_CHECK(std::isfinite(options.bucket_mb) && options.bucket_mb >= 0, config, "DataParallel",
             "parallel.bucket_mb must be a non-negative number of MiB, got " << options.bucket_mb);
  if (comm_) {
    size_ = comm_->size();
    rank_ = comm_->rank();
  }
  grad_comm_ = options.grad_comm ? options.grad_comm : comm_;
  if (options.grad_comm) {
    NURI_CHECK(comm_ && grad_comm_->size() == size_ && grad_comm_->rank() == rank_, config, "DataParallel",
               "the gradient communicator (" << grad_comm_->describe() << ") must have the DP group's ranks");
  }
  zero1_ = options.zero1 && size_ > 1;
  if (options.tp && options.tp->size() > 1) {
    NURI_CHECK(model_.tp_size() == options.tp->size(), config, "DataParallel",
               "the TP group has " << options.tp->size() << " ranks but the model was built for tp = "
                                   << model_.tp_size());
    tp_ = options.tp;
    for (const ParamTensor& t : model_.tensors()) {
      for (const ShardPiece& pc : t.pieces) {
        if (pc.replicas <= 1) continue;
        NURI_CHECK(t.dim == 0, internal, "DataParallel", "a replicated piece along columns in " << t.name);
        const size_t inner = t.numel / size_t(t.shape[0]);
        const size_t begin = t.offset + size_t(pc.local_start) * inner;
        replicated_.push_back({begin, begin + size_t(pc.length) * inner, 1.0 / pc.replicas});
      }
    }
    std::sort(replicated_.begin(), replicated_.end(),
              [](const Replicated& a, const Replicated& b) { return a.begin < b.begin; });
  }

  // Buckets along the backward order: whole layers, closed once they reach bucket_mb.
  const std::vector<ParamRange>& order = model_.grad_ready_order();
  const double bucket_floats = options.bucket_mb * 1048576.0 / sizeof(float);
  bucket_closed_by_.assign(order.size(), -1);
  size_t first = 0, floats = 0;
  for (size_t l = 0; l < order.size(); ++l) {
    floats += order[l].count;
    if (double(floats) >= bucket_floats || l + 1 == order.size()) {
      GradBucket b;
      b.offset = order[l].offset;  // descending order: the last layer starts the range
      b.count = floats;
      b.first_layer = first;
      b.last_layer = l;
      b.owned = block_range(b.count, size_, rank_);
      NURI_CHECK(b.offset + b.count == order[first].offset + order[first].count, internal,
                 "DataParallel", "the model's grad-ready ranges are not contiguous in backward order");
      bucket_closed_by_[l] = int(buckets_.size());
      buckets_.push_back(b);
      first = l + 1;
      floats = 0;
    }
  }

  if (zero1_) {
    std::vector<ParamRange> owned;
    for (const GradBucket& b : buckets_) owned.push_back({b.offset + b.owned.offset, b.owned.count});
    optimizer_ = std::make_unique<AdamW>(optim, model_, backend_, std::move(owned));
  } else {
    optimizer_ = std::make_unique<AdamW>(optim, model_, backend_);
  }
  if (size_ > 1) model_.set_grad_ready_hook([this](size_t offset, size_t count) { on_grads_ready(offset, count); });
}

DataParallel::~DataParallel() {
  if (size_ > 1) model_.set_grad_ready_hook({});
  // Collectives may still be in flight on the model's buffers (an exception left a step early):
  // let them finish before the buffers can go away. The communicator's watchdog ends a hang.
  try {
    if (comm_ && size_ > 1) {
      grad_comm_->synchronize();
      comm_->synchronize();
    }
  } catch (...) {
  }
  impl_.reset();
}

void DataParallel::broadcast_parameters() {
  if (size_ > 1) grad_comm_->broadcast(model_.params(), model_.num_params(), 0);
}

void DataParallel::zero_grads() {
  model_.zero_grads();
  next_bucket_ = 0;
  impl_->handles.clear();
}

void DataParallel::on_grads_ready(size_t offset, size_t count) {
  if (!armed_) return;
  const std::vector<ParamRange>& order = model_.grad_ready_order();
  NURI_CHECK(next_layer_ < order.size() && order[next_layer_].offset == offset &&
                 order[next_layer_].count == count,
             internal, "DataParallel",
             "the model reported gradients [" << offset << ", " << offset + count
                                              << ") out of its grad_ready_order() at position " << next_layer_);
  const int b = bucket_closed_by_[next_layer_++];
  // "In backward": layers remain to be computed while this bucket's reduction runs.
  if (b >= 0) start_bucket(size_t(b), next_layer_ < order.size());
}

void DataParallel::start_bucket(size_t b, bool in_backward) {
  NURI_CHECK(b == next_bucket_, internal, "DataParallel",
             "bucket " << b << " started out of order (expected " << next_bucket_ << ")");
  const GradBucket& k = buckets_[b];
  float* g = model_.grads() + k.offset;
  backend_.synchronize();  // the backward's queued kernels must have written the bucket (cuda)
  const Clock::time_point now = Clock::now();
  CommHandle h = zero1_ ? grad_comm_->reduce_scatter_async(g, g + k.owned.offset, k.count, ReduceOp::avg)
                        : grad_comm_->all_reduce_async(g, k.count, ReduceOp::avg);
  impl_->handles.push_back(h);
  impl_->track(h, now);
  ++next_bucket_;
  ++stats_.buckets_started;
  if (in_backward) ++stats_.buckets_started_in_backward;
}

float DataParallel::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                                     float grad_scale, bool last_micro_batch) {
  if (size_ == 1) return model_.forward_backward(tokens, targets, B, T, grad_scale);
  NURI_CHECK(next_bucket_ == 0, internal, "DataParallel",
             "forward_backward after the step's last micro-batch; call zero_grads() to begin a step");
  armed_ = last_micro_batch;
  next_layer_ = 0;
  float loss = 0;
  try {
    loss = model_.forward_backward(tokens, targets, B, T, grad_scale);
  } catch (...) {
    armed_ = false;
    throw;
  }
  if (armed_) {
    armed_ = false;
    NURI_CHECK(next_layer_ == model_.grad_ready_order().size(), internal, "DataParallel",
               "backward reported " << next_layer_ << " of " << model_.grad_ready_order().size()
                                    << " gradient ranges");
    // The last bucket (the embeddings) is complete only now; the others ran beside backward.
    for (CommHandle& h : impl_->handles) stats_.buckets_done_in_backward += h.test() ? 1 : 0;
  }
  return loss;
}

// Sum of squares of grads()[offset, offset + count), a piece replicated over r TP ranks weighted 1/r.
double DataParallel::norm_sum_squares(size_t offset, size_t count) const {
  const float* g = model_.grads();
  double sum = 0;
  size_t at = offset;
  const size_t end = offset + count;
  for (const Replicated& r : replicated_) {
    if (r.end <= at) continue;
    if (r.begin >= end) break;
    if (r.begin > at) sum += backend_.sum_squares(g + at, r.begin - at);
    const size_t b = std::max(at, r.begin), e = std::min(end, r.end);
    sum += r.weight * backend_.sum_squares(g + b, e - b);
    at = e;
  }
  if (at < end) sum += backend_.sum_squares(g + at, end - at);
  return sum;
}

DataParallel::Reduced DataParallel::reduce(double local_loss) {
  if (size_ == 1 && !tp_) return {local_loss, optimizer_->grad_norm()};
  if (size_ == 1) {  // tensor parallel only: the loss is the same on every TP rank
    double sum = norm_sum_squares(0, model_.num_params());
    tp_->all_reduce(&sum, 1, ReduceOp::sum);
    return {local_loss, std::sqrt(sum)};
  }
  ++stats_.steps;
  const Clock::time_point wait_start = Clock::now();
  while (next_bucket_ < buckets_.size()) start_bucket(next_bucket_, false);
  for (CommHandle& h : impl_->handles) h.wait();
  impl_->handles.clear();
  double sums[2] = {local_loss, 0.0};
  const Clock::time_point waited = Clock::now();
  // The norm of the averaged gradient: each rank's blocks (all it holds reduced under ZeRO-1;
  // a disjoint cover in both modes), summed over ranks with the loss in one all-reduce.
  for (const GradBucket& b : buckets_) sums[1] += norm_sum_squares(b.offset + b.owned.offset, b.owned.count);
  const Clock::time_point summed = Clock::now();
  comm_->all_reduce(sums, 2, ReduceOp::sum);
  if (tp_) tp_->all_reduce(&sums[1], 1, ReduceOp::sum);  // every TP rank's slices
  const Clock::time_point end = Clock::now();
  stats_.exposed_s += seconds_between(wait_start, waited) + seconds_between(summed, end);
  stats_.comm_s += impl_->drain() + seconds_between(summed, end);
  return {sums[0] / size_, std::sqrt(sums[1])};
}

void DataParallel::step(double lr, double grad_norm) {
  optimizer_->step(lr, grad_norm);
  if (!zero1_) return;
  // Every rank updated its blocks; gather each bucket's parameters (in place).
  const Clock::time_point start = Clock::now();
  for (const GradBucket& b : buckets_) {
    float* p = model_.params() + b.offset;
    CommHandle h = grad_comm_->all_gather_async(p + b.owned.offset, p, b.count);
    impl_->handles.push_back(h);
    impl_->track(h, Clock::now());
  }
  for (CommHandle& h : impl_->handles) h.wait();
  impl_->handles.clear();
  stats_.exposed_s += seconds_between(start, Clock::now());
  stats_.comm_s += impl_->drain();
}

}  // namespace nuri

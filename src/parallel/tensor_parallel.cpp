// Tensor parallelism: the conjugate primitives and the column/row-parallel linear layers. See
// include/nuri/tensor_parallel.hpp for the math.
#include "nuri/tensor_parallel.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "nuri/backend.hpp"
#include "nuri/error.hpp"
#include "nuri/timer.hpp"

namespace nuri {

namespace {

void check_buffer(const void* p, size_t count, const char* op, const char* what) {
  NURI_CHECK(p != nullptr || count == 0, config, op,
             what << " is null but " << count << " elements were asked for");
}

void check_split(int features, int tp, int rank, const char* op, const char* what) {
  NURI_CHECK(features >= 1, config, op, what << " must be >= 1, got " << features);
  NURI_CHECK(tp >= 1, config, op, "the TP size must be >= 1, got " << tp);
  NURI_CHECK(rank >= 0 && rank < tp, config, op,
             "TP rank " << rank << " is outside [0, " << tp << ")");
}

void check_rows(int N, const char* op) {
  NURI_CHECK(N >= 0, config, op, "the row count N (B*T) must be >= 0, got " << N);
}

// Backend allocations of at least one float, so an empty shard (OUT < p) still has a valid pointer.
float* alloc_at_least_one(Backend& backend, size_t count) {
  return backend.alloc(std::max<size_t>(count, 1));
}

}  // namespace

// ---- the model's collectives --------------------------------------------------------------------

namespace {
class CommTensorParallelOps final : public TensorParallelOps {
 public:
  explicit CommTensorParallelOps(std::shared_ptr<Communicator> tp) : tp_(std::move(tp)) {}
  int size() const override { return tp_->size(); }
  int rank() const override { return tp_->rank(); }
  void all_reduce_sum(float* x, size_t count) override {
    timed(count, [&] { tp_->all_reduce(x, count, ReduceOp::sum); });
  }
  void all_reduce_max(float* x, size_t count) override {
    timed(count, [&] { tp_->all_reduce(x, count, ReduceOp::max); });
  }
  void all_gather(float* full, const float* part, size_t count) override {
    const size_t total = count * size_t(tp_->size());
    timed(total, [&] { tp_->all_gather(part, full, total); });
  }
  void reduce_scatter(float* part, const float* full, size_t count) override {
    const size_t total = count * size_t(tp_->size());
    timed(total, [&] { tp_->reduce_scatter(full, part, total, ReduceOp::sum); });
  }
  Stats stats() const override { return stats_; }
  void reset_stats() override { stats_ = {}; }

 private:
  template <class Fn>
  void timed(size_t count, Fn&& fn) {
    Timer t;
    fn();
    stats_.seconds += t.seconds();
    stats_.bytes += double(count) * sizeof(float);
    ++stats_.calls;
  }
  std::shared_ptr<Communicator> tp_;
  Stats stats_;
};
}  // namespace

std::shared_ptr<TensorParallelOps> make_tensor_parallel_ops(std::shared_ptr<Communicator> tp) {
  NURI_CHECK(tp != nullptr, config, "make_tensor_parallel_ops", "the TP communicator is null");
  return std::make_shared<CommTensorParallelOps>(std::move(tp));
}

std::vector<float> gather_full_parameters(const Model& model) { return gather_full(model, model.params()); }

std::vector<float> gather_full(const Model& model, const float* local_buffer) {
  const std::vector<ParamTensor> full_layout = parameter_layout(model.config());
  const ParamTensor& last = full_layout.back();
  std::vector<float> full(last.offset + last.numel, 0.0f);
  const std::vector<ParamTensor>& local = model.tensors();
  NURI_CHECK(local.size() == full_layout.size(), internal, "gather_full",
             "the model has " << local.size() << " tensors but its full layout " << full_layout.size());
  TensorParallelOps* tp = model.tp_ops();
  for (size_t i = 0; i < local.size(); ++i) {
    // Every rank writes the pieces it is the first holder of into zeros; the sum is the tensor.
    place_into_full(local[i], local_buffer + local[i].offset, full.data() + full_layout[i].offset,
                    tp ? model.tp_rank() : -1);
  }
  if (tp) tp->all_reduce_sum(full.data(), full.size());
  return full;
}

void load_full_parameters(Model& model, const float* full, size_t count) {
  const std::vector<ParamTensor> full_layout = parameter_layout(model.config());
  const size_t want = full_layout.back().offset + full_layout.back().numel;
  NURI_CHECK(count == want, shape, "load_full_parameters",
             "got " << count << " parameters but the full " << model.config().family << " model has " << want);
  const std::vector<ParamTensor>& local = model.tensors();
  for (size_t i = 0; i < local.size(); ++i)
    slice_from_full(local[i], full + full_layout[i].offset, model.params() + local[i].offset);
}

// ---- primitives ---------------------------------------------------------------------------------

const float* copy_to_tp_region_forward(Communicator& /*tp*/, const float* x, size_t count) {
  check_buffer(x, count, "copy_to_tp_region_forward", "the input");
  return x;  // identity: the input is replicated
}

void copy_to_tp_region_backward(Communicator& tp, float* grad, size_t count) {
  check_buffer(grad, count, "copy_to_tp_region_backward", "the gradient");
  if (tp.size() > 1) tp.all_reduce(grad, count, ReduceOp::sum);
}

void reduce_from_tp_region_forward(Communicator& tp, float* x, size_t count) {
  check_buffer(x, count, "reduce_from_tp_region_forward", "the input");
  if (tp.size() > 1) tp.all_reduce(x, count, ReduceOp::sum);
}

const float* reduce_from_tp_region_backward(Communicator& /*tp*/, const float* grad,
                                            size_t count) {
  check_buffer(grad, count, "reduce_from_tp_region_backward", "the gradient");
  return grad;  // identity: d(sum)/d(term) = 1
}

// ---- shard helpers ------------------------------------------------------------------------------

void slice_column_parallel_weight(float* shard, const float* full, int in_features,
                                  int out_features, int tp, int rank) {
  const char* op = "slice_column_parallel_weight";
  check_split(out_features, tp, rank, op, "out_features");
  NURI_CHECK(in_features >= 1, config, op, "in_features must be >= 1, got " << in_features);
  const BlockRange r = block_range(size_t(out_features), tp, rank);
  const size_t n = r.count * size_t(in_features);
  check_buffer(full, n, op, "the full weight");
  check_buffer(shard, n, op, "the shard");
  if (n) std::memcpy(shard, full + r.offset * size_t(in_features), n * sizeof(float));
}

void slice_column_parallel_bias(float* shard, const float* full, int out_features, int tp,
                                int rank) {
  const char* op = "slice_column_parallel_bias";
  check_split(out_features, tp, rank, op, "out_features");
  const BlockRange r = block_range(size_t(out_features), tp, rank);
  check_buffer(full, r.count, op, "the full bias");
  check_buffer(shard, r.count, op, "the shard");
  if (r.count) std::memcpy(shard, full + r.offset, r.count * sizeof(float));
}

void slice_last_dim(float* shard, const float* full, int rows, int cols, int tp, int rank) {
  const char* op = "slice_last_dim";
  check_split(cols, tp, rank, op, "the column count");
  NURI_CHECK(rows >= 0, config, op, "the row count must be >= 0, got " << rows);
  const BlockRange r = block_range(size_t(cols), tp, rank);
  check_buffer(full, size_t(rows) * size_t(cols), op, "the full tensor");
  check_buffer(shard, size_t(rows) * r.count, op, "the shard");
  if (r.count == 0) return;
  for (size_t i = 0; i < size_t(rows); ++i)
    std::memcpy(shard + i * r.count, full + i * size_t(cols) + r.offset, r.count * sizeof(float));
}

void slice_row_parallel_weight(float* shard, const float* full, int in_features, int out_features,
                               int tp, int rank) {
  const char* op = "slice_row_parallel_weight";
  check_split(in_features, tp, rank, op, "in_features");
  NURI_CHECK(out_features >= 1, config, op, "out_features must be >= 1, got " << out_features);
  slice_last_dim(shard, full, out_features, in_features, tp, rank);
}

// ---- ColumnParallelLinear -----------------------------------------------------------------------

ColumnParallelLinear::ColumnParallelLinear(Backend& backend, Communicator& tp, int in_features,
                                           int out_features, bool bias)
    : backend_(backend), tp_(tp), in_(in_features), out_(out_features) {
  const char* op = "ColumnParallelLinear";
  NURI_CHECK(in_features >= 1, config, op, "in_features must be >= 1, got " << in_features);
  check_split(out_features, tp.size(), tp.rank(), op, "out_features");
  range_ = block_range(size_t(out_), tp.size(), tp.rank());
  const size_t w = range_.count * size_t(in_);
  weight_ = alloc_at_least_one(backend_, w);
  dweight_ = alloc_at_least_one(backend_, w);
  if (bias) {
    bias_ = alloc_at_least_one(backend_, range_.count);
    dbias_ = alloc_at_least_one(backend_, range_.count);
  }
}

ColumnParallelLinear::~ColumnParallelLinear() {
  for (float* p : {weight_, bias_, dweight_, dbias_})
    if (p) backend_.free(p);
}

void ColumnParallelLinear::zero_grads() {
  backend_.zero(dweight_, range_.count * size_t(in_));
  if (dbias_) backend_.zero(dbias_, range_.count);
  backend_.synchronize();
}

void ColumnParallelLinear::load_full(const float* full_weight, const float* full_bias) {
  slice_column_parallel_weight(weight_, full_weight, in_, out_, tp_.size(), tp_.rank());
  if (bias_) slice_column_parallel_bias(bias_, full_bias, out_, tp_.size(), tp_.rank());
}

void ColumnParallelLinear::forward(float* out, const float* inp, int N) {
  const char* op = "ColumnParallelLinear::forward";
  check_rows(N, op);
  const float* x = copy_to_tp_region_forward(tp_, inp, size_t(N) * size_t(in_));
  check_buffer(out, size_t(N) * range_.count, op, "the output");
  if (N == 0 || range_.count == 0) return;
  backend_.linear_forward(out, x, weight_, bias_, N, in_, int(range_.count), false);
  backend_.synchronize();  // the output is complete when this returns, as on the CPU
}

void ColumnParallelLinear::backward(float* dinp, const float* dout, const float* inp, int N) {
  const char* op = "ColumnParallelLinear::backward";
  check_rows(N, op);
  const size_t local = size_t(N) * range_.count;
  check_buffer(dout, local, op, "the output gradient");
  check_buffer(inp, size_t(N) * size_t(in_), op, "the input");
  if (N > 0 && range_.count > 0) {
    // dinp (N,IN) = dout_r W_r: this rank's partial dX; dW_r, db_r accumulate locally.
    backend_.linear_backward(dinp, dweight_, dbias_, dout, inp, weight_, N, in_,
                             int(range_.count));
  } else if (dinp) {
    backend_.zero(dinp, size_t(N) * size_t(in_));  // an empty shard contributes nothing
  }
  backend_.synchronize();  // before MPI reads dinp; the gradients are complete on return
  if (dinp) copy_to_tp_region_backward(tp_, dinp, size_t(N) * size_t(in_));
}

// ---- RowParallelLinear --------------------------------------------------------------------------

RowParallelLinear::RowParallelLinear(Backend& backend, Communicator& tp, int in_features,
                                     int out_features, bool bias)
    : backend_(backend), tp_(tp), in_(in_features), out_(out_features) {
  const char* op = "RowParallelLinear";
  NURI_CHECK(out_features >= 1, config, op, "out_features must be >= 1, got " << out_features);
  check_split(in_features, tp.size(), tp.rank(), op, "in_features");
  range_ = block_range(size_t(in_), tp.size(), tp.rank());
  const size_t w = size_t(out_) * range_.count;
  weight_ = alloc_at_least_one(backend_, w);
  dweight_ = alloc_at_least_one(backend_, w);
  if (bias) {
    bias_ = backend_.alloc(size_t(out_));
    dbias_ = backend_.alloc(size_t(out_));
  }
}

RowParallelLinear::~RowParallelLinear() {
  for (float* p : {weight_, bias_, dweight_, dbias_})
    if (p) backend_.free(p);
}

void RowParallelLinear::zero_grads() {
  backend_.zero(dweight_, size_t(out_) * range_.count);
  if (dbias_) backend_.zero(dbias_, size_t(out_));
  backend_.synchronize();
}

void RowParallelLinear::load_full(const float* full_weight, const float* full_bias) {
  slice_row_parallel_weight(weight_, full_weight, in_, out_, tp_.size(), tp_.rank());
  if (bias_) {
    check_buffer(full_bias, size_t(out_), "RowParallelLinear::load_full", "the full bias");
    backend_.copy(bias_, full_bias, size_t(out_));
  }
  backend_.synchronize();  // full_bias may be a backend buffer the caller reuses next
}

void RowParallelLinear::forward(float* out, const float* inp_r, int N) {
  const char* op = "RowParallelLinear::forward";
  check_rows(N, op);
  const size_t n_out = size_t(N) * size_t(out_);
  check_buffer(out, n_out, op, "the output");
  check_buffer(inp_r, size_t(N) * range_.count, op, "the input shard");
  // Partial product of this rank's input columns; no bias yet (it must be added once, not p times).
  if (N > 0 && range_.count > 0)
    backend_.linear_forward(out, inp_r, weight_, nullptr, N, int(range_.count), out_, false);
  else if (n_out)
    backend_.zero(out, n_out);
  backend_.synchronize();  // before MPI reads the partial products
  reduce_from_tp_region_forward(tp_, out, n_out);
  if (bias_)
    for (int i = 0; i < N; ++i) {
      float* row = out + size_t(i) * size_t(out_);
      backend_.add(row, row, bias_, size_t(out_));
    }
  backend_.synchronize();
}

void RowParallelLinear::backward(float* dinp_r, const float* dout, const float* inp_r, int N) {
  const char* op = "RowParallelLinear::backward";
  check_rows(N, op);
  const float* g = reduce_from_tp_region_backward(tp_, dout, size_t(N) * size_t(out_));
  check_buffer(inp_r, size_t(N) * range_.count, op, "the input shard");
  if (N == 0) return;
  if (range_.count > 0) {
    backend_.linear_backward(dinp_r, dweight_, dbias_, g, inp_r, weight_, N, int(range_.count),
                             out_);
  } else if (dbias_) {
    // No weight columns here, but the replicated bias still gets its gradient: colsum(dout).
    for (int i = 0; i < N; ++i) backend_.add(dbias_, dbias_, g + size_t(i) * size_t(out_), size_t(out_));
  }
  backend_.synchronize();
}

}  // namespace nuri

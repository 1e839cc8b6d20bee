#pragma once
// \file
// Tensor parallelism (Megatron-LM style): the TensorParallelOps a Model is built with (model.hpp
// splits attention, MLP, embedding and loss with them), helpers that move a model's parameters
// between its TP slices and the full tensors, and, for programs that build their own layers, the
// conjugate communication primitives and the column- and row-parallel linear layers.
//
//   nuri::ProcessGrid grid(mpi.world(), /*tp=*/2);
//   nuri::Model model(cfg, *backend, {nuri::make_tensor_parallel_ops(grid.tp_ptr()), /*sp=*/false});
//   model.init_weights(seed);                  // the same full tensors as one process, sliced
//   nuri::DataParallel dp(model, *backend, optim, grid.dp_ptr(), {.tp = grid.tp_ptr()});
//   ...
//   std::vector<float> full = nuri::gather_full_parameters(model);  // one process's layout
//
// A linear layer computes Y (N,OUT) = X (N,IN) W^T + b, W (OUT,IN), b (OUT), N = B*T rows.
// Over a TP group of p ranks, rank r holds one block of W, chosen by block_range (comm.hpp), so
// uneven sizes need no padding (OUT = 10 over 4 ranks: rows 0-2, 3-5, 6-7, 8-9):
//
//   Column-parallel, W split on the OUTPUT dimension (rows of W):
//     W_r = W[o_r : o_r + OUT_r, :], b_r = b[o_r : o_r + OUT_r]       (o_r, OUT_r) = block_range(OUT, p, r)
//     forward:  X' = copy_to_tp_region(X)              identity (X is replicated)
//               Y_r (N,OUT_r) = X' W_r^T + b_r          Y = [Y_0 | Y_1 | ... ] (concatenated columns)
//     backward: dW_r += dY_r^T X,  db_r += colsum(dY_r)              (local; no communication)
//               dX = sum_r dY_r W_r                     the conjugate of copy_to: all-reduce sum
//
//   Row-parallel, W split on the INPUT dimension (columns of W):
//     W_r = W[:, i_r : i_r + IN_r], b replicated      (i_r, IN_r) = block_range(IN, p, r)
//     input is already split: X_r = X[:, i_r : i_r + IN_r] (e.g. the output of a column layer)
//     forward:  Z = reduce_from_tp_region(X_r W_r^T)  all-reduce sum: Z = sum_r X_r W_r^T = X W^T
//               Y = Z + b                             bias added once, after the reduction
//     backward: dZ = dY                               the conjugate of reduce_from: identity
//               dX_r = dY W_r,  dW_r += dY^T X_r,  db += colsum(dY)  (db the same on every rank)
//
// The Megatron MLP pairs them so one all-reduce serves each direction: column (IN -> H), an
// elementwise activation on the rank's H_r columns, row (H -> OUT) with the same block_range(H)
// split. Forward: one all-reduce (in the row layer); backward: one (in the column layer).
//
//   nuri::ProcessGrid grid(mpi.world(), /*tp=*/2);
//   auto backend = nuri::make_backend("cpu");
//   nuri::ColumnParallelLinear fc(*backend, grid.tp(), /*in=*/C, /*out=*/4 * C);
//   nuri::RowParallelLinear proj(*backend, grid.tp(), /*in=*/4 * C, /*out=*/C);
//   fc.load_full(W1, b1);  proj.load_full(W2, b2);   // slice full (replicated) weights
//   fc.forward(h_r, x, N);                           // h_r (N, fc.local_out_features())
//   backend->gelu_forward(a_r, h_r, N * fc.local_out_features());
//   proj.forward(y, a_r, N);                         // y (N, C), the same on every rank
//   proj.backward(da_r, dy, a_r, N);
//   backend->gelu_backward(dh_r, h_r, da_r, N * fc.local_out_features());
//   fc.backward(dx, dh_r, x, N);                     // dx (N, C), the same on every rank
//
// Memory: buffers passed to the layers and primitives are host memory (the communicator reads
// them directly), so the layers run on the CPU backend; a device backend needs a device-aware
// communicator first. Every TP rank must call the same layer methods in the same order (they are
// collective over the TP communicator).
#include <cstddef>
#include <memory>
#include <vector>

#include "nuri/comm.hpp"
#include "nuri/model.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class Backend;

// TensorParallelOps (model.hpp) over a TP communicator, normally ProcessGrid::tp_ptr(). Throws
// Error(config) for a null communicator.
std::shared_ptr<TensorParallelOps> make_tensor_parallel_ops(std::shared_ptr<Communicator> tp);

// The model's parameters in the layout of one process (parameter_layout(model.config())),
// assembled from every TP rank's slices: collective over the model's TP group, the result on
// every rank. Without tensor parallelism, a copy of params(). Host memory (CPU backend).
std::vector<float> gather_full_parameters(const Model& model);
// The same for any buffer laid out like the model's parameters (its grads(), say).
std::vector<float> gather_full(const Model& model, const float* local_buffer);
// The inverse: sets this rank's slices from full parameters in one process's layout (no
// communication). Throws Error(shape) when `count` is not the full model's parameter count.
void load_full_parameters(Model& model, const float* full, size_t count);

// ---------------------------------------------------------------------------------------------
// Conjugate primitives. Each is a forward/backward pair; data are `count` floats on every rank.
// The collectives read and write the data from the host: with an asynchronous backend (cuda),
// call Backend::synchronize() after the ops that wrote them (the layers below do).
// ---------------------------------------------------------------------------------------------

// copy_to_tp_region, forward: the identity (the input is already replicated over the TP group).
// Returns `x` itself; no copy, no communication. Throws Error(config) when x is null and count > 0.
const float* copy_to_tp_region_forward(Communicator& tp, const float* x, size_t count);
// copy_to_tp_region, backward: grad = sum over TP ranks of grad (in place, all-reduce sum): each
// rank holds the partial dX of its own weight block, and the true dX is their sum.
void copy_to_tp_region_backward(Communicator& tp, float* grad, size_t count);

// reduce_from_tp_region, forward: x = sum over TP ranks of x (in place, all-reduce sum): each rank
// holds a partial product of its input block, and the layer output is their sum.
void reduce_from_tp_region_forward(Communicator& tp, float* x, size_t count);
// reduce_from_tp_region, backward: the identity (the gradient of a sum reaches every term
// unchanged). Returns `grad` itself; no copy, no communication.
const float* reduce_from_tp_region_backward(Communicator& tp, const float* grad, size_t count);

// ---------------------------------------------------------------------------------------------
// Shard helpers: a rank's slice of full, replicated tensors (tests, checkpoint loading).
// All throw Error(config) for tp < 1, a rank outside [0, tp), or non-positive sizes.
// ---------------------------------------------------------------------------------------------

// Column-parallel weight: shard (OUT_r, IN) = rows block_range(OUT, tp, rank) of full (OUT, IN).
void slice_column_parallel_weight(float* shard, const float* full, int in_features,
                                  int out_features, int tp, int rank);
// Column-parallel bias: shard (OUT_r) = full[block_range(OUT, tp, rank)].
void slice_column_parallel_bias(float* shard, const float* full, int out_features, int tp,
                                int rank);
// Row-parallel weight: shard (OUT, IN_r) = columns block_range(IN, tp, rank) of full (OUT, IN).
// (The row-parallel bias is replicated: no slice.)
void slice_row_parallel_weight(float* shard, const float* full, int in_features, int out_features,
                               int tp, int rank);
// Activations: shard (N, C_r) = columns block_range(C, tp, rank) of full (N, C): the X_r a
// row-parallel layer expects when its input is not already split.
void slice_last_dim(float* shard, const float* full, int rows, int cols, int tp, int rank);

// ---------------------------------------------------------------------------------------------
// Layers. Parameters are allocated with the backend (zeroed) and owned by the layer; gradients
// are accumulated (+=), as in the Backend interface, and zero_grads() clears them. The backend
// and the communicator must outlive the layer. The constructor throws Error(config) for
// in_features or out_features < 1.
// ---------------------------------------------------------------------------------------------

// Y = X W^T + b with W split on the output dimension: see "Column-parallel" above.
class ColumnParallelLinear {
 public:
  // Allocates this rank's block of W (and b when `bias`), zeroed, and the gradients; no
  // communication. Keeps references to `backend` and `tp`.
  ColumnParallelLinear(Backend& backend, Communicator& tp, int in_features, int out_features,
                       bool bias = true);
  ~ColumnParallelLinear();
  ColumnParallelLinear(const ColumnParallelLinear&) = delete;
  ColumnParallelLinear& operator=(const ColumnParallelLinear&) = delete;

  int in_features() const { return in_; }                      // IN, replicated on every rank
  int out_features() const { return out_; }                    // OUT, the full width
  int local_out_features() const { return int(range_.count); }  // OUT_r (may be 0 if OUT < p)
  BlockRange out_range() const { return range_; }               // this rank's rows of W

  float* weight() { return weight_; }    // (OUT_r, IN)
  float* bias() { return bias_; }        // (OUT_r), null without bias
  float* dweight() { return dweight_; }  // (OUT_r, IN)
  float* dbias() { return dbias_; }      // (OUT_r), null without bias
  void zero_grads();  // sets dweight (and dbias) to 0
  // Copies this rank's shard of the full weight (OUT, IN) and bias (OUT; ignored without bias).
  void load_full(const float* full_weight, const float* full_bias);

  // out (N, OUT_r) = copy_to(inp) W_r^T + b_r, inp (N, IN) replicated over the TP group.
  void forward(float* out, const float* inp, int N);
  // dout (N, OUT_r), inp (N, IN) as in forward. dweight += dout^T inp; dbias += colsum(dout);
  // dinp (N, IN) = all-reduce sum over TP of dout W_r (overwritten; the full dX on every rank).
  // dinp may be null (no dX and no communication) but then must be null on every rank.
  void backward(float* dinp, const float* dout, const float* inp, int N);

 private:
  Backend& backend_;
  Communicator& tp_;
  int in_ = 0, out_ = 0;
  BlockRange range_;
  float *weight_ = nullptr, *bias_ = nullptr, *dweight_ = nullptr, *dbias_ = nullptr;
};

// Y = X W^T + b with W split on the input dimension: see "Row-parallel" above.
class RowParallelLinear {
 public:
  // Allocates this rank's block of W, the whole b when `bias` (zeroed) and the gradients; no
  // communication. Keeps references to `backend` and `tp`.
  RowParallelLinear(Backend& backend, Communicator& tp, int in_features, int out_features,
                    bool bias = true);
  ~RowParallelLinear();
  RowParallelLinear(const RowParallelLinear&) = delete;
  RowParallelLinear& operator=(const RowParallelLinear&) = delete;

  int in_features() const { return in_; }                     // IN, the full width
  int out_features() const { return out_; }                   // OUT, replicated on every rank
  int local_in_features() const { return int(range_.count); }  // IN_r (may be 0 if IN < p)
  BlockRange in_range() const { return range_; }               // this rank's columns of W

  float* weight() { return weight_; }    // (OUT, IN_r)
  float* bias() { return bias_; }        // (OUT), replicated; null without bias
  float* dweight() { return dweight_; }  // (OUT, IN_r)
  float* dbias() { return dbias_; }      // (OUT), the same on every rank; null without bias
  void zero_grads();  // sets dweight (and dbias) to 0
  // Copies this rank's shard of the full weight (OUT, IN) and the whole bias (OUT).
  void load_full(const float* full_weight, const float* full_bias);

  // out (N, OUT) = reduce_from(inp_r W_r^T) + b, inp_r (N, IN_r) this rank's input columns.
  // The output is the same on every rank.
  void forward(float* out, const float* inp_r, int N);
  // dout (N, OUT) replicated, inp_r as in forward. dinp_r (N, IN_r) = dout W_r (overwritten;
  // may be null); dweight += dout^T inp_r; dbias += colsum(dout). No communication.
  void backward(float* dinp_r, const float* dout, const float* inp_r, int N);

 private:
  Backend& backend_;
  Communicator& tp_;
  int in_ = 0, out_ = 0;
  BlockRange range_;
  float *weight_ = nullptr, *bias_ = nullptr, *dweight_ = nullptr, *dbias_ = nullptr;
};

}  // namespace nuri
NURI_API_END

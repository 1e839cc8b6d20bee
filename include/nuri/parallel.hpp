#pragma once
// \file
// Data parallelism around a Model: every rank of a DP group holds a full replica, computes
// forward and backward on its own rows of the global batch, and the gradients are averaged over
// the group before the optimizer step. The model is unchanged (it calls no communicator); the
// engine learns when gradients are final from Model::set_grad_ready_hook.
//
//   nuri::ProcessGrid grid(mpi.world(), /*tp=*/1);             // comm.hpp
//   nuri::Model model(cfg, *backend);
//   model.init_weights(seed);
//   nuri::DataParallel dp(model, *backend, optim_cfg, grid.dp_ptr(), {.zero1 = true});
//   dp.broadcast_parameters();                                 // replicas start identical
//   for (int step = 0; step < steps; ++step) {
//     dp.zero_grads();
//     float local = 0;
//     for (int k = 0; k < accum; ++k)                          // buckets start during the last
//       local += dp.forward_backward(x, y, B, T, 1.0f / accum, /*last=*/k + 1 == accum);
//     nuri::DataParallel::Reduced r = dp.reduce(local / accum);  // mean loss, global grad norm
//     if (std::isfinite(r.loss) && std::isfinite(r.grad_norm)) dp.step(lr, r.grad_norm);
//   }
//
// Buckets. The flat gradient buffer is cut into buckets of about `bucket_mb` MiB along
// Model::grad_ready_order() (backward order: head, last block ... first block, embeddings), at
// layer boundaries, so each bucket is a contiguous range. When backward reports the last layer of
// a bucket the engine starts its reduction asynchronously (all_reduce avg, or reduce_scatter avg
// under ZeRO-1) on the DP communicator's thread while backward goes on with earlier layers;
// reduce() waits for all of them. Under gradient accumulation only the last micro-batch starts
// reductions (one per bucket per step).
//
// ZeRO-1. Each bucket [o, o + n) is split among the DP ranks by block_range(n, dp, rank) (comm.hpp);
// a rank owns its block of every bucket, keeps AdamW moments for those blocks only (1/dp of the
// memory), receives exactly those blocks of the averaged gradient (one reduce_scatter per bucket,
// started during backward like the all-reduces), updates those parameters, then every bucket's
// parameters are all-gathered. The other entries of grads() hold this rank's unreduced local
// gradient after reduce(): only the owned blocks are meaningful. There is no fp32 master copy to
// shard on the CPU (parameters are fp32).
//
// Gradient norm. In both modes each rank sums the squares of its owned blocks of the reduced
// gradient and one all-reduce (with the loss) completes the global norm, so the clipping norm is
// that of the full averaged gradient, the same on every rank. Under tensor parallelism (a model
// built with TensorParallelOptions, DataParallelOptions::tp set) every DP group runs the same
// steps on its TP slices (the DP groups of the TP ranks are independent); squares of a piece
// replicated over r TP ranks count 1/r and one more all-reduce over the TP group completes the
// norm of the whole model's gradient.
//
// Equality. With per-rank batch B, a DP group of d ranks computes the same step as one process with
// batch d*B (the DataLoader serves rank r the rows [rB, (r+1)B) of each global batch), up to fp32
// reduction order: the mean over d*B rows equals the mean of d per-rank means when every target is
// valid (ignored targets, < 0, weight each rank's mean by its own count).
//
// Threads: the communicator runs the collectives on its own thread; forward_backward, reduce and
// step are called from one training thread. A dp group of size 1 (or a null communicator) turns
// every collective off and is exactly the single-process computation.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "nuri/comm.hpp"
#include "nuri/config.hpp"
#include "nuri/model.hpp"
#include "nuri/optim.hpp"

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

class Backend;

// How DataParallel reduces gradients.
struct DataParallelOptions {
  bool zero1 = false;      // shard the optimizer state (ZeRO-1)
  double bucket_mb = 25;   // bucket size in MiB of fp32 gradients; 0: one bucket per layer
  // The model's tensor-parallel group (ProcessGrid::tp_ptr()) when it is built with tensor
  // parallelism: the gradient norm then sums every rank's slices, counting a tensor replicated
  // over r ranks once (ParamTensor::pieces). Null or size 1: no tensor parallelism.
  std::shared_ptr<Communicator> tp;
  // The communicator for the model's gradient and parameter buffers (bucket reductions, ZeRO-1's
  // all-gather, the initial broadcast): an NCCL one over the same ranks when those buffers are
  // GPU memory (`parallel.dp_comm = "nccl"`). Null: the DP communicator, which also always
  // carries the small host-side reductions (loss, gradient norm).
  std::shared_ptr<Communicator> grad_comm;
};

// One gradient bucket: a contiguous range of the flat buffer and the layers it covers.
struct GradBucket {
  size_t offset = 0;              // first float of the bucket
  size_t count = 0;               // floats in it
  size_t first_layer = 0;         // index into Model::grad_ready_order() of its first layer
  size_t last_layer = 0;          // ... and of its last (the one whose readiness starts it)
  BlockRange owned;               // this rank's block of the bucket (offset relative to the bucket)
};

// Communication counters and times, summed over the steps since reset_stats().
struct DataParallelStats {
  int steps = 0;  // steps reduced
  // Seconds the DP collectives were in flight (queued work excluded: an operation counts from
  // when the communication thread could start it until it completed), including the small
  // blocking ones. This includes time spent waiting for slower ranks to arrive.
  double comm_s = 0;
  // Seconds the training thread was blocked on DP communication (not hidden behind backward).
  double exposed_s = 0;
  uint64_t buckets_started = 0;                  // bucket reductions started
  uint64_t buckets_started_in_backward = 0;      // ... while backward still had layers to run
  uint64_t buckets_done_in_backward = 0;         // ... and already complete when backward returned
};

// The data-parallel engine around a Trainable (see the top of this file). Collective calls must
// come in the same order on every rank of the DP group; one training thread calls it.
class DataParallel {
 public:
  // `dp`: the data-parallel group (ProcessGrid::dp_ptr()); null or size 1: no communication.
  // Builds the buckets and the optimizer (sharded under options.zero1). The model and backend
  // must outlive the engine; the engine sets the model's grad-ready hook and clears it when
  // destroyed. Throws Error(config) for bad options.
  DataParallel(Trainable& model, Backend& backend, const OptimConfig& optim,
               std::shared_ptr<Communicator> dp, const DataParallelOptions& options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int dp_size() const { return size_; }  // ranks in the DP group
  int dp_rank() const { return rank_; }  // this rank in it
  bool zero1() const { return zero1_; }  // ZeRO-1 in effect (requested and more than one rank)
  const std::vector<GradBucket>& buckets() const { return buckets_; }  // in backward order
  AdamW& optimizer() { return *optimizer_; }  // the (sharded) optimizer it steps

  // Copies rank 0's parameters to every rank (collective).
  void broadcast_parameters();
  // Zeroes the gradients and begins a step.
  void zero_grads();
  // One micro-batch (Model::forward_backward). last_micro_batch = true on the step's last one:
  // its backward starts the bucket reductions. Returns this rank's mean loss of the micro-batch.
  float forward_backward(const int32_t* tokens, const int32_t* targets, int B, int T,
                         float grad_scale, bool last_micro_batch);

  // What reduce() returns: the same on every rank.
  struct Reduced {
    double loss = 0;       // mean over the DP ranks of `local_loss`
    double grad_norm = 0;  // L2 norm of the DP-averaged gradient (unclipped)
  };
  // Waits for every bucket (starting any the backward did not start), then completes the loss
  // mean and the gradient norm with one all-reduce. Collective. After it the (owned) gradients
  // are the DP average.
  Reduced reduce(double local_loss);
  // AdamW with `lr`, clipping by `grad_norm` (from reduce); under ZeRO-1 then all-gathers the
  // parameters, so every rank ends with the same parameters. Collective.
  void step(double lr, double grad_norm);

  const DataParallelStats& stats() const { return stats_; }  // since reset_stats()
  void reset_stats() { stats_ = {}; }  // zeroes the counters (after a warm-up step)

 private:
  class Impl;
  void on_grads_ready(size_t offset, size_t count);
  void start_bucket(size_t b, bool in_backward);

  Trainable& model_;
  Backend& backend_;
  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<Communicator> grad_comm_;  // comm_ unless DataParallelOptions::grad_comm
  std::shared_ptr<Communicator> tp_;  // null without tensor parallelism
  int size_ = 1, rank_ = 0;
  // Ranges of the flat buffer replicated over TP ranks, with the weight 1/replicas (sorted).
  struct Replicated {
    size_t begin, end;
    double weight;
  };
  std::vector<Replicated> replicated_;
  double norm_sum_squares(size_t offset, size_t count) const;
  bool zero1_ = false;
  std::vector<GradBucket> buckets_;
  std::vector<int> bucket_closed_by_;  // per layer of grad_ready_order(): bucket it completes, or -1
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Impl> impl_;
  DataParallelStats stats_;
  bool armed_ = false;        // the current forward_backward starts reductions
  size_t next_layer_ = 0;     // next expected layer of grad_ready_order() in this backward
  size_t next_bucket_ = 0;    // buckets started so far this step
};

}  // namespace nuri
NURI_API_END

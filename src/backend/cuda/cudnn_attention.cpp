// cuDNN SDPA (flash attention) on nuri's packed qkv layout, through the cuDNN backend (graph) API
// directly: there is no cudnn-frontend here. The graphs are the decomposed "fused flash attention"
// fprop / bprop patterns that cuDNN's specialized runtime-fusion engines recognise (the node list
// the cuDNN frontend's SDPA nodes build for a causal mask with no bias, dropout or padding), then
// engine heuristics (mode A), the first engine config whose execution plan finalizes, and a
// variant pack (kept while the caller's pointers stay the same). Read top to bottom:
//   1. Builder: sticky-status wrapper over cudnnBackend* (the first failing call, named, wins).
//   2. The tensors: 4-D (B, heads, T, D) views with strides into qkv / out / dout / dqkv.
//   3. build_forward, build_backward: the operation graphs.
//   4. CudnnAttention: plan cache, workspace, execution.
//
// Notation: R = (H+2KV)*D is the qkv row stride (elements); C = H*D the out/dout row stride.
// Q  (B,H,T,D)  strides (T*R, D, R, 1)             at qkv
// KT (B,KV,D,T) strides (T*R, D, 1, R)             at qkv + H*D        (K transposed by strides)
// V  (B,KV,T,D) strides (T*R, D, R, 1)             at qkv + (H+KV)*D
// VT (B,KV,D,T) strides (T*R, D, 1, R)             at qkv + (H+KV)*D   (backward only)
// O, dO (B,H,T,D) strides (T*C, D, C, 1)           at out, dout
// dQ, dK, dV as Q, K, V (dK, dV not transposed)    at dqkv, dqkv + H*D, dqkv + (H+KV)*D
// Stats (B,H,T,1) fp32 strides (H*T, T, 1, 1)      at lse: the same array as our lse (B,H,T).
// GQA: Q has H heads, K and V have KV; cuDNN's matmul broadcasts the head dimension (query head h
// meets kv head h / (H/KV), the same grouping as our kernels).
//
// Stats vs lse: cuDNN's softmax stats for SDPA are Stats_i = M_i + log(sum_j exp(S_ij - M_i)) with
// M_i = max_j S_ij, S = scale * Q K^T after the causal mask, natural log and exp: that is
// log sum_j exp(S_ij) = our lse_i, in the same (B,H,T) order. No conversion either way. Masked
// scores are float lowest (-3.4e38), not -inf, as the frontend does; exp(lowest - M_i) is exactly
// 0 in fp32 and every causal row has at least its diagonal, so the sums agree with ours.
#include "backend/cuda/cudnn_attention.hpp"

#if defined(NURI_WITH_CUDNN)

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iterator>
#include <limits>
#include <vector>

namespace nuri::cuda {

namespace {

using Desc = cudnnBackendDescriptor_t;
using Dims = std::array<int64_t, 4>;

constexpr int64_t kAlignment = 16;            // bytes; every device pointer is checked against it
constexpr size_t kWorkspaceAlign = 256;       // our own sub-buffers inside the workspace
constexpr int kCudnnMinVersion = 90000;       // 9.0.0
constexpr int kCudnnDqAccumSelfInit = 90600;  // from 9.6.0 cuDNN initialises dQ_accum itself

// Tensor unique ids. Inputs/outputs first (they go into the variant pack), virtuals from 100.
enum Uid : int64_t {
  kQ = 1,
  kK = 2,
  kV = 3,
  kO = 4,
  kStats = 5,
  kScale = 6,
  kMaskFill = 7,
  kDO = 8,
  kDQ = 9,
  kDK = 10,
  kDV = 11,
  kOne = 12,
  kSoftmaxSum = 13,
  kDqAccum = 14,
  kFirstVirtual = 100,
};

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

std::string cudnn_message(cudnnStatus_t status) {
  std::string s = cudnnGetErrorString(status);
  s += " (" + std::to_string(int(status)) + ")";
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0] != '\0') s += std::string(": ") + detail;
  return s;
}

// Sticky-status wrapper over the backend API: after the first failure every call is a no-op,
// and error() names that call, what it was for, and cuDNN's status and message. Every descriptor
// created goes into `owned` (the Plan destroys them, in reverse, when it dies).
class Builder {
 public:
  Builder(cudnnHandle_t handle, std::vector<Desc>& owned) : handle_(handle), owned_(owned) {}

  bool ok() const { return status_ == CUDNN_STATUS_SUCCESS; }
  cudnnStatus_t status() const { return status_; }
  const std::string& error() const { return error_; }
  cudnnHandle_t handle() const { return handle_; }

  void fail(cudnnStatus_t status, const std::string& what) {
    if (!ok()) return;
    status_ = status;
    error_ = what + ": " + cudnn_message(status);
  }
  void check(cudnnStatus_t status, const char* call, const std::string& what) {
    if (status != CUDNN_STATUS_SUCCESS) fail(status, std::string(call) + " [" + what + "]");
  }

  Desc create(cudnnBackendDescriptorType_t type, const std::string& what) {
    if (!ok()) return nullptr;
    Desc d = nullptr;
    check(cudnnBackendCreateDescriptor(type, &d), "cudnnBackendCreateDescriptor", what);
    if (d != nullptr) owned_.push_back(d);
    return ok() ? d : nullptr;
  }
  void set(Desc d, cudnnBackendAttributeName_t name, const char* name_text,
           cudnnBackendAttributeType_t type, int64_t count, const void* value,
           const std::string& what) {
    if (!ok()) return;
    check(cudnnBackendSetAttribute(d, name, type, count, value), "cudnnBackendSetAttribute",
          what + " " + name_text);
  }
  void finalize(Desc d, const std::string& what) {
    if (!ok()) return;
    check(cudnnBackendFinalize(d), "cudnnBackendFinalize", what);
  }

  // A finalized tensor descriptor. virtual_: lives only inside the fused kernel; by_value: a host
  // scalar passed in the variant pack.
  Desc tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
              bool virtual_, bool by_value, const std::string& name);
  // A virtual fp32 (or `type`) intermediate with a fresh uid.
  Desc intermediate(const Dims& dims, const Dims& strides, const std::string& name,
                    cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return tensor(next_virtual_++, type, dims, strides, true, false, name);
  }
  // A by-value fp32 scalar (1,1,1,1).
  Desc scalar(int64_t uid, const std::string& name) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true, name);
  }

  // y = mode(x [, b [, t]]); compute type `math` (fp32 unless said); axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, Desc x, Desc b, Desc t, Desc y, const std::string& name,
                 cudnnDataType_t math = CUDNN_DATA_FLOAT, int64_t axis = -1);
  // c = a @ b (batched over the two leading dims, broadcast where a head dim differs), fp32 math.
  void matmul(Desc a, Desc b, Desc c, const std::string& name);
  // y = reduce(x) over the dims where y has extent 1 (or, for GQA dK/dV, over the head groups).
  void reduction(cudnnReduceTensorOp_t op, Desc x, Desc y, const std::string& name);
  // y = x seen with other dims/strides (here: the transposes P^T, dS^T, K from KT).
  void reshape(Desc x, Desc y, const std::string& name);

  const std::vector<Desc>& ops() const { return ops_; }

 private:
  cudnnHandle_t handle_;
  std::vector<Desc>& owned_;
  std::vector<Desc> ops_;
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
  std::string error_;
  int64_t next_virtual_ = kFirstVirtual;
};

#define NURI_SET(builder, desc, attr, type, count, value, what) \
  (builder).set((desc), (attr), #attr, (type), (count), (value), (what))

Desc Builder::tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                     bool virtual_, bool by_value, const std::string& name) {
  const std::string what = "tensor " + name;
  Desc d = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, what);
  const bool is_virtual = virtual_, is_by_value = by_value;
  NURI_SET(*this, d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
  NURI_SET(*this, d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, what);
  NURI_SET(*this, d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), what);
  NURI_SET(*this, d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), what);
  NURI_SET(*this, d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &kAlignment, what);
  if (is_virtual)
    NURI_SET(*this, d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, what);
  if (is_by_value)
    NURI_SET(*this, d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &is_by_value, what);
  finalize(d, what);
  return ok() ? d : nullptr;
}

void Builder::pointwise(cudnnPointwiseMode_t mode, Desc x, Desc b, Desc t, Desc y,
                        const std::string& name, cudnnDataType_t math, int64_t axis) {
  const std::string what = "pointwise " + name;
  Desc pw = create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, what);
  NURI_SET(*this, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what);
  NURI_SET(*this, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math, what);
  if (axis >= 0) NURI_SET(*this, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, what);
  finalize(pw, what);
  Desc op = create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, what + " op");
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR,
           1, &pw, what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           what);
  if (b != nullptr)
    NURI_SET(*this, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b,
             what);
  if (t != nullptr)
    NURI_SET(*this, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t,
             what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           what);
  finalize(op, what + " op");
  if (ok()) ops_.push_back(op);
}

void Builder::matmul(Desc a, Desc b, Desc c, const std::string& name) {
  const std::string what = "matmul " + name;
  const cudnnDataType_t math = CUDNN_DATA_FLOAT;
  Desc mm = create(CUDNN_BACKEND_MATMUL_DESCRIPTOR, what);
  NURI_SET(*this, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math, what);
  finalize(mm, what);
  Desc op = create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, what + " op");
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm,
           what);
  finalize(op, what + " op");
  if (ok()) ops_.push_back(op);
}

void Builder::reduction(cudnnReduceTensorOp_t reduce, Desc x, Desc y, const std::string& name) {
  const std::string what = "reduction " + name;
  const cudnnDataType_t math = CUDNN_DATA_FLOAT;
  Desc red = create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, what);
  NURI_SET(*this, red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1,
           &reduce, what);
  NURI_SET(*this, red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math, what);
  finalize(red, what);
  Desc op = create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, what + " op");
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red,
           what);
  finalize(op, what + " op");
  if (ok()) ops_.push_back(op);
}

void Builder::reshape(Desc x, Desc y, const std::string& name) {
  const std::string what = "reshape " + name;
  Desc op = create(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
           what);
  NURI_SET(*this, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
           what);
  finalize(op, what);
  if (ok()) ops_.push_back(op);
}

// The shapes of one call, in the int64 cuDNN wants.
struct Shape {
  int64_t B, T, H, KV, D;
  int64_t R() const { return (H + 2 * KV) * D; }  // qkv row stride
  int64_t C() const { return H * D; }             // out / dout row stride
  // (B, heads, T, D) inside rows of `row` elements (the head offset goes into the pointer).
  Dims bhtd(int64_t heads) const { return {B, heads, T, D}; }
  Dims packed(int64_t row) const { return {T * row, D, row, 1}; }
  // The same view transposed in its last two dims: (B, heads, D, T).
  Dims bhdt(int64_t heads) const { return {B, heads, D, T}; }
  Dims packed_t(int64_t row) const { return {T * row, D, 1, row}; }
  // Dense (B, heads, T, D) fp32 buffers of our own (dQ accumulator, GQA full-head gradients).
  Dims dense_bhtd(int64_t heads) const { return {heads * T * D, T * D, D, 1}; }
  // Scores (B,H,T,T) and their transposes (B,H,Tk,Tq) seen through the same memory order.
  Dims scores() const { return {B, H, T, T}; }
  Dims scores_strides() const { return {H * T * T, T * T, T, 1}; }
  Dims scores_t_strides() const { return {H * T * T, T * T, 1, T}; }
  // Per-row statistics (B,H,T,1).
  Dims rows() const { return {B, H, T, 1}; }
  Dims rows_strides() const { return {H * T, T, 1, 1}; }
};

// The causal mask on scores `s` (B,H,T,T): keep s_ij where row i >= column j, else `fill`
// (float lowest): GEN_INDEX rows and columns (int32), CMP_GE (bool), BINARY_SELECT(s, fill, mask).
Desc causal_mask(Builder& b, const Shape& sh, Desc s, Desc fill, const std::string& tag) {
  Desc row = b.intermediate(sh.scores(), sh.scores_strides(), tag + " row index", CUDNN_DATA_INT32);
  b.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, row, tag + " gen_row_index",
              CUDNN_DATA_INT32, 2);
  Desc col =
      b.intermediate(sh.scores(), sh.scores_strides(), tag + " column index", CUDNN_DATA_INT32);
  b.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, col, tag + " gen_col_index",
              CUDNN_DATA_INT32, 3);
  Desc keep =
      b.intermediate(sh.scores(), sh.scores_strides(), tag + " causal mask", CUDNN_DATA_BOOLEAN);
  b.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, keep, tag + " row_ge_col",
              CUDNN_DATA_BOOLEAN);
  Desc masked = b.intermediate(sh.scores(), sh.scores_strides(), tag + " masked scores");
  b.pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, fill, keep, masked, tag + " select");
  return masked;
}

// Forward (the fprop pattern):
//   S  = matmul(Q, KT)                      virtual fp32 (B,H,T,T)
//   S1 = S * scale                          pointwise MUL, scale by value
//   S2 = causal_mask(S1)                    GEN_INDEX x2, CMP_GE, BINARY_SELECT(fill = lowest)
//   M  = reduce_max(S2)                     (B,H,T,1)
//   E  = exp(S2 - M)                        SUB, EXP
//   Z  = reduce_add(E)                      (B,H,T,1)
//   Stats = M + log(Z)                      LOG, ADD -> lse, non-virtual fp32
//   P  = E / Z                              DIV -> virtual bf16 (the second matmul takes the io
//   type) O  = matmul(P, V)                       bf16, strided into out
void build_forward(Builder& b, const Shape& sh) {
  const Dims rows = sh.rows(), rows_s = sh.rows_strides();
  Desc q = b.tensor(kQ, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(sh.R()), false, false, "Q");
  Desc kt =
      b.tensor(kK, CUDNN_DATA_BFLOAT16, sh.bhdt(sh.KV), sh.packed_t(sh.R()), false, false, "K^T");
  Desc v = b.tensor(kV, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.KV), sh.packed(sh.R()), false, false, "V");
  Desc o = b.tensor(kO, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(sh.C()), false, false, "O");
  Desc stats = b.tensor(kStats, CUDNN_DATA_FLOAT, rows, rows_s, false, false, "Stats");
  Desc scale = b.scalar(kScale, "attn_scale");
  Desc fill = b.scalar(kMaskFill, "mask fill");

  Desc s = b.intermediate(sh.scores(), sh.scores_strides(), "S");
  b.matmul(q, kt, s, "Q.K^T");
  Desc s1 = b.intermediate(sh.scores(), sh.scores_strides(), "S*scale");
  b.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, s1, "attn_scale");
  Desc s2 = causal_mask(b, sh, s1, fill, "fprop");

  Desc m = b.intermediate(rows, rows_s, "row max");
  b.reduction(CUDNN_REDUCE_TENSOR_MAX, s2, m, "row max");
  Desc centered = b.intermediate(sh.scores(), sh.scores_strides(), "S-max");
  b.pointwise(CUDNN_POINTWISE_SUB, s2, m, nullptr, centered, "sub max");
  Desc e = b.intermediate(sh.scores(), sh.scores_strides(), "exp(S-max)");
  b.pointwise(CUDNN_POINTWISE_EXP, centered, nullptr, nullptr, e, "exp");
  Desc z = b.intermediate(rows, rows_s, "row sum");
  b.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z, "row sum");
  Desc log_z = b.intermediate(rows, rows_s, "log row sum");
  b.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, nullptr, log_z, "log");
  b.pointwise(CUDNN_POINTWISE_ADD, m, log_z, nullptr, stats, "stats = max + log sum");
  Desc p = b.intermediate(sh.scores(), sh.scores_strides(), "P", CUDNN_DATA_BFLOAT16);
  b.pointwise(CUDNN_POINTWISE_DIV, e, z, nullptr, p, "softmax div");
  b.matmul(p, v, o, "P.V");
}

// Backward (the bprop pattern; no dropout: the two multiplications by one are the frontend's
// dropout-scale slots, kept so the graph is the shape cuDNN matches):
//   dOO   = dO * O                          (B,H,T,D) virtual
//   Di    = reduce_add(dOO) * 1             softmax_sum (B,H,T,1) fp32, NON-virtual: our workspace
//   S     = matmul(Q, KT) * scale, causal_mask(...)   as forward
//   P     = exp(S - Stats)                  SUB with lse, EXP: virtual fp32
//   P^T   = reshape(P)                      (B,H,Tk,Tq) bf16, transposed strides
//   dV    = matmul(P^T, dO)                 MHA: straight into dqkv; GQA: into a virtual bf16
//                                           (B,H,T,D) full-head tensor, then reduce_add -> dV
//   dP    = matmul(dO, VT) * 1
//   dS    = (dP - Di) * P * scale           SUB, MUL, MUL: virtual fp32
//   dS^T  = reshape(dS)                     bf16, transposed strides
//   dK    = matmul(dS^T, Q)                 MHA direct, GQA full-head + reduce_add as dV
//   K     = reshape(KT)                     (B,KV,T,D) virtual
//   dQacc = matmul(dS, K)                   fp32 (B,H,T,D) NON-virtual: our workspace
//   dQ    = identity(dQacc)                 -> bf16, strided into dqkv
void build_backward(Builder& b, const Shape& sh) {
  const Dims rows = sh.rows(), rows_s = sh.rows_strides();
  const int64_t R = sh.R(), C = sh.C();
  const bool gqa = sh.H != sh.KV;
  Desc q = b.tensor(kQ, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(R), false, false, "Q");
  Desc kt = b.tensor(kK, CUDNN_DATA_BFLOAT16, sh.bhdt(sh.KV), sh.packed_t(R), false, false, "K^T");
  Desc vt = b.tensor(kV, CUDNN_DATA_BFLOAT16, sh.bhdt(sh.KV), sh.packed_t(R), false, false, "V^T");
  Desc o = b.tensor(kO, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(C), false, false, "O");
  Desc d_o = b.tensor(kDO, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(C), false, false, "dO");
  Desc stats = b.tensor(kStats, CUDNN_DATA_FLOAT, rows, rows_s, false, false, "Stats");
  Desc dq = b.tensor(kDQ, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.H), sh.packed(R), false, false, "dQ");
  Desc dk = b.tensor(kDK, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.KV), sh.packed(R), false, false, "dK");
  Desc dv = b.tensor(kDV, CUDNN_DATA_BFLOAT16, sh.bhtd(sh.KV), sh.packed(R), false, false, "dV");
  Desc softmax_sum =
      b.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, rows, rows_s, false, false, "softmax_sum");
  Desc dq_accum = b.tensor(kDqAccum, CUDNN_DATA_FLOAT, sh.bhtd(sh.H), sh.dense_bhtd(sh.H), false,
                           false, "dQ_accum");
  Desc scale = b.scalar(kScale, "attn_scale");
  Desc fill = b.scalar(kMaskFill, "mask fill");
  Desc one = b.scalar(kOne, "one");

  // softmax_sum = rowsum(dO * O)
  Desc doo = b.intermediate(sh.bhtd(sh.H), sh.packed(C), "dO*O");
  b.pointwise(CUDNN_POINTWISE_MUL, d_o, o, nullptr, doo, "dO*O");
  Desc doo_sum = b.intermediate(rows, rows_s, "rowsum(dO*O)");
  b.reduction(CUDNN_REDUCE_TENSOR_ADD, doo, doo_sum, "rowsum(dO*O)");
  b.pointwise(CUDNN_POINTWISE_MUL, doo_sum, one, nullptr, softmax_sum, "softmax_sum*1");

  // P = exp(mask(scale * Q K^T) - Stats)
  Desc s = b.intermediate(sh.scores(), sh.scores_strides(), "S");
  b.matmul(q, kt, s, "Q.K^T");
  Desc s1 = b.intermediate(sh.scores(), sh.scores_strides(), "S*scale");
  b.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, s1, "attn_scale");
  Desc s2 = causal_mask(b, sh, s1, fill, "bprop");
  Desc centered = b.intermediate(sh.scores(), sh.scores_strides(), "S-Stats");
  b.pointwise(CUDNN_POINTWISE_SUB, s2, stats, nullptr, centered, "sub stats");
  Desc p = b.intermediate(sh.scores(), sh.scores_strides(), "P");
  b.pointwise(CUDNN_POINTWISE_EXP, centered, nullptr, nullptr, p, "exp");

  // dV = P^T dO
  Desc p_t = b.intermediate(sh.scores(), sh.scores_t_strides(), "P^T", CUDNN_DATA_BFLOAT16);
  b.reshape(p, p_t, "P^T");
  if (!gqa) {
    b.matmul(p_t, d_o, dv, "P^T.dO");
  } else {
    Desc dv_full =
        b.intermediate(sh.bhtd(sh.H), sh.dense_bhtd(sh.H), "dV full heads", CUDNN_DATA_BFLOAT16);
    b.matmul(p_t, d_o, dv_full, "P^T.dO");
    b.reduction(CUDNN_REDUCE_TENSOR_ADD, dv_full, dv, "dV head groups");
  }

  // dS = P * (dO V^T - softmax_sum) * scale
  Desc dp = b.intermediate(sh.scores(), sh.scores_strides(), "dP");
  b.matmul(d_o, vt, dp, "dO.V^T");
  Desc dp1 = b.intermediate(sh.scores(), sh.scores_strides(), "dP*1");
  b.pointwise(CUDNN_POINTWISE_MUL, dp, one, nullptr, dp1, "dP*1");
  Desc dp2 = b.intermediate(sh.scores(), sh.scores_strides(), "dP-softmax_sum");
  b.pointwise(CUDNN_POINTWISE_SUB, dp1, softmax_sum, nullptr, dp2, "dP-softmax_sum");
  Desc ds_raw = b.intermediate(sh.scores(), sh.scores_strides(), "P*(dP-sum)");
  b.pointwise(CUDNN_POINTWISE_MUL, dp2, p, nullptr, ds_raw, "*P");
  Desc ds = b.intermediate(sh.scores(), sh.scores_strides(), "dS");
  b.pointwise(CUDNN_POINTWISE_MUL, ds_raw, scale, nullptr, ds, "dS*scale");

  // dK = dS^T Q
  Desc ds_t = b.intermediate(sh.scores(), sh.scores_t_strides(), "dS^T", CUDNN_DATA_BFLOAT16);
  b.reshape(ds, ds_t, "dS^T");
  if (!gqa) {
    b.matmul(ds_t, q, dk, "dS^T.Q");
  } else {
    Desc dk_full =
        b.intermediate(sh.bhtd(sh.H), sh.dense_bhtd(sh.H), "dK full heads", CUDNN_DATA_BFLOAT16);
    b.matmul(ds_t, q, dk_full, "dS^T.Q");
    b.reduction(CUDNN_REDUCE_TENSOR_ADD, dk_full, dk, "dK head groups");
  }

  // dQ = dS K, through the fp32 accumulator
  Desc k = b.intermediate(sh.bhtd(sh.KV), sh.packed(R), "K (from K^T)");
  b.reshape(kt, k, "K");
  b.matmul(ds, k, dq_accum, "dS.K");
  b.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq, "dQ = dQ_accum");
}

int cudnn_runtime_version() { return int(cudnnGetVersion()); }

// A cuDNN failure while building or executing, as the CUDA error the caller switches on:
// execution failures are errors; everything else (bad param, not supported, internal) is cuDNN
// refusing this graph, and the caller falls back to its own kernel.
cudaError_t refusal(cudnnStatus_t status, bool executing) {
  if (executing && int(status) >= int(CUDNN_STATUS_EXECUTION_FAILED)) return cudaErrorLaunchFailure;
  return cudaErrorNotSupported;
}

std::string shape_text(const char* op, int B, int T, int H, int KV, int D) {
  return std::string("cudnn attention ") + op + " (B=" + std::to_string(B) +
         " T=" + std::to_string(T) + " H=" + std::to_string(H) + " KV=" + std::to_string(KV) +
         " D=" + std::to_string(D) + ")";
}

}  // namespace

// One finalized graph and execution plan, and what executing it needs.
struct CudnnAttention::Plan {
  std::vector<Desc> owned;  // every descriptor of the graph, destroyed in reverse
  Desc plan = nullptr;      // the execution plan (also in `owned`)
  bool backward = false;
  int64_t cudnn_workspace = 0;  // what the plan asks for
  size_t softmax_sum_offset = 0, dq_accum_offset = 0, dq_accum_bytes = 0;
  size_t workspace = 0;  // total: cuDNN's part, then softmax_sum and dQ_accum (backward)
  int64_t engine = -1;   // heuristic rank of the config that finalized (diagnostics)
  // By-value scalars: the variant pack points at these (stable: Plan is heap-allocated).
  float scale = 0.0f;
  float mask_fill = std::numeric_limits<float>::lowest();
  float one = 1.0f;
  // The variant pack of the last call, reused while its pointers stay the same.
  Desc pack = nullptr;
  std::vector<void*> pack_pointers;
  void* pack_workspace = nullptr;

  ~Plan() {
    if (pack != nullptr) cudnnBackendDestroyDescriptor(pack);
    for (auto it = owned.rbegin(); it != owned.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }
};

CudnnAttention::CudnnAttention(cudaStream_t stream) : stream_(stream) {
  cudnnHandle_t handle = nullptr;
  const cudnnStatus_t st = cudnnCreate(&handle);
  if (st != CUDNN_STATUS_SUCCESS) {
    init_error_ = "cudnnCreate: " + cudnn_message(st);
    last_error_ = init_error_;
    return;
  }
  const cudnnStatus_t st_stream = cudnnSetStream(handle, stream);
  if (st_stream != CUDNN_STATUS_SUCCESS) {
    init_error_ = "cudnnSetStream: " + cudnn_message(st_stream);
    last_error_ = init_error_;
    cudnnDestroy(handle);
    return;
  }
  handle_ = handle;
}

CudnnAttention::~CudnnAttention() {
  plans_.clear();  // descriptors before the handle
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cudnnDestroy(handle_);
}

bool CudnnAttention::available(std::string* why) {
  const int version = cudnn_runtime_version();
  if (version < kCudnnMinVersion) {
    if (why)
      *why = "cuDNN " + std::to_string(version) + " loaded; the SDPA graphs need 9.0 or newer";
    return false;
  }
  int device = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    return false;
  }
  if (major < 8) {
    if (why)
      *why = "device " + std::to_string(device) + " is sm_" + std::to_string(major) +
             std::to_string(minor) + "; cuDNN's fused flash attention needs sm_80 or newer";
    return false;
  }
  if (why) why->clear();
  return true;
}

cudaError_t CudnnAttention::check_args(const char* op, const void* const* pointers, int count,
                                       int B, int T, int H, int KV, int D) {
  const std::string where = shape_text(op, B, T, H, KV, D);
  if (handle_ == nullptr) {
    last_error_ = where + ": no cuDNN handle (" + init_error_ + ")";
    return cudaErrorNotSupported;
  }
  if (B < 0 || T < 0 || H <= 0 || KV <= 0 || D <= 0 || H % KV != 0) {
    last_error_ = where + ": need B, T >= 0, H, KV, D > 0 and H a multiple of KV";
    return cudaErrorInvalidValue;
  }
  for (int i = 0; i < count; ++i) {
    if (pointers[i] == nullptr) {
      last_error_ = where + ": null buffer (argument " + std::to_string(i) + ")";
      return cudaErrorInvalidValue;
    }
    if (reinterpret_cast<uintptr_t>(pointers[i]) % uintptr_t(kAlignment) != 0) {
      last_error_ = where + ": buffer " + std::to_string(i) + " is not 16-byte aligned";
      return cudaErrorNotSupported;
    }
  }
  if (D % 8 != 0) {  // the head offsets inside a row must keep 16-byte alignment too
    last_error_ = where + ": cuDNN SDPA needs D a multiple of 8";
    return cudaErrorNotSupported;
  }
  return cudaSuccess;
}

cudaError_t CudnnAttention::ensure_workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return cudaSuccess;
  // The stream may still be using the old buffer: wait for it before freeing.
  cudaError_t err = cudaStreamSynchronize(stream_);
  if (err == cudaSuccess && workspace_ != nullptr) err = cudaFree(workspace_);
  if (err != cudaSuccess) {
    last_error_ = std::string("cudnn attention workspace: ") + cudaGetErrorString(err);
    return err;
  }
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  err = cudaMalloc(&workspace_, bytes);
  if (err != cudaSuccess) {
    workspace_ = nullptr;
    last_error_ = "cudnn attention workspace: cudaMalloc(" + std::to_string(bytes) +
                  " bytes): " + cudaGetErrorString(err);
    return cudaErrorMemoryAllocation;
  }
  workspace_bytes_ = bytes;
  return cudaSuccess;
}

CudnnAttention::Plan* CudnnAttention::plan_for(const Key& key) {
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  if (auto it = refused_.find(key); it != refused_.end()) {
    last_error_ = it->second;
    return nullptr;
  }
  const auto [B, T, H, KV, D, backward] = key;
  const Shape sh{B, T, H, KV, D};
  auto plan = std::make_unique<Plan>();
  plan->backward = backward;
  plan->scale = 1.0f / std::sqrt(float(D));

  Builder b(handle_, plan->owned);
  if (backward)
    build_backward(b, sh);
  else
    build_forward(b, sh);

  const std::vector<Desc>& ops = b.ops();
  Desc graph = b.create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  cudnnHandle_t handle = handle_;
  NURI_SET(b, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle,
           "operation graph");
  NURI_SET(b, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
           int64_t(ops.size()), ops.data(), "operation graph");
  b.finalize(graph, "operation graph");

  Desc heur = b.create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  NURI_SET(b, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph,
           "engine heuristics");
  NURI_SET(b, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode,
           "engine heuristics");
  b.finalize(heur, "engine heuristics");

  int64_t count = 0;
  if (b.ok())
    b.check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
            "cudnnBackendGetAttribute", "engine heuristics CUDNN_ATTR_ENGINEHEUR_RESULTS (count)");
  if (b.ok() && count <= 0)
    b.fail(CUDNN_STATUS_NOT_SUPPORTED,
           "engine heuristics (mode A) returned no engine config for the graph");
  std::vector<Desc> configs;
  for (int64_t i = 0; b.ok() && i < count; ++i)
    configs.push_back(b.create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
  int64_t returned = 0;
  if (b.ok())
    b.check(
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                 count, &returned, configs.data()),
        "cudnnBackendGetAttribute", "engine heuristics CUDNN_ATTR_ENGINEHEUR_RESULTS");

  // The first config (best first) whose execution plan finalizes. Plans that fail are destroyed
  // at once: they are not in `owned`.
  std::string tried;
  for (int64_t i = 0; b.ok() && i < returned && plan->plan == nullptr; ++i) {
    Desc candidate = nullptr;
    cudnnStatus_t st =
        cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &candidate);
    const char* failed = "cudnnBackendCreateDescriptor(EXECUTION_PLAN)";
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendSetAttribute(candidate, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE,
                                    1, &handle);
      failed = "cudnnBackendSetAttribute(CUDNN_ATTR_EXECUTION_PLAN_HANDLE)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendSetAttribute(candidate, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &configs[size_t(i)]);
      failed = "cudnnBackendSetAttribute(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendFinalize(candidate);
      failed = "cudnnBackendFinalize(execution plan)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      plan->owned.push_back(candidate);
      plan->plan = candidate;
      plan->engine = i;
    } else {
      tried += "\n  config " + std::to_string(i) + ": " + failed + ": " + cudnn_message(st);
      if (candidate != nullptr) cudnnBackendDestroyDescriptor(candidate);
    }
  }
  if (b.ok() && plan->plan == nullptr)
    b.fail(CUDNN_STATUS_NOT_SUPPORTED, "no execution plan finalized among " +
                                           std::to_string(returned) + " engine configs" + tried);
  if (b.ok()) {
    int64_t got = 0;
    b.check(cudnnBackendGetAttribute(plan->plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, &got, &plan->cudnn_workspace),
            "cudnnBackendGetAttribute", "execution plan CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE");
  }
  if (!b.ok()) {
    const std::string why =
        shape_text(backward ? "backward" : "forward", B, T, H, KV, D) + ": " + b.error();
    refused_.emplace(key, why);
    last_error_ = why;
    return nullptr;
  }

  size_t total = align_up(size_t(std::max<int64_t>(plan->cudnn_workspace, 0)), kWorkspaceAlign);
  if (backward) {
    plan->softmax_sum_offset = total;
    total += align_up(size_t(B) * H * T * sizeof(float), kWorkspaceAlign);
    plan->dq_accum_offset = total;
    plan->dq_accum_bytes = size_t(B) * H * T * D * sizeof(float);
    total += align_up(plan->dq_accum_bytes, kWorkspaceAlign);
  }
  plan->workspace = total;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

namespace {

// Runs `plan` on the given (uid, pointer) pairs. The variant pack is kept in the plan and rebuilt
// only when a pointer or the workspace changes (a training loop passes the same buffers every
// step, and building one costs more host time than launching the kernel).
cudnnStatus_t execute(cudnnHandle_t handle, CudnnAttention::Plan& plan, const int64_t* uids,
                      void* const* pointers, int64_t count, void* workspace, std::string* error) {
  const bool same = plan.pack != nullptr && plan.pack_workspace == workspace &&
                    plan.pack_pointers.size() == size_t(count) &&
                    std::equal(pointers, pointers + count, plan.pack_pointers.begin());
  cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
  const char* failed = "";
  if (!same) {
    if (plan.pack != nullptr) {
      st = cudnnBackendDestroyDescriptor(plan.pack);
      failed = "cudnnBackendDestroyDescriptor(old variant pack)";
      plan.pack = nullptr;
      plan.pack_pointers.clear();
    }
    Desc pack = nullptr;
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
      failed = "cudnnBackendCreateDescriptor(VARIANT_PACK)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                    count, uids);
      failed = "cudnnBackendSetAttribute(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                    CUDNN_TYPE_VOID_PTR, count, pointers);
      failed = "cudnnBackendSetAttribute(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                    &workspace);
      failed = "cudnnBackendSetAttribute(CUDNN_ATTR_VARIANT_PACK_WORKSPACE)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnBackendFinalize(pack);
      failed = "cudnnBackendFinalize(variant pack)";
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      plan.pack = pack;
      plan.pack_pointers.assign(pointers, pointers + count);
      plan.pack_workspace = workspace;
    } else if (pack != nullptr) {
      cudnnBackendDestroyDescriptor(pack);
    }
  }
  if (st == CUDNN_STATUS_SUCCESS) {
    st = cudnnBackendExecute(handle, plan.plan, plan.pack);
    failed = "cudnnBackendExecute";
  }
  if (st != CUDNN_STATUS_SUCCESS) *error = std::string(failed) + ": " + cudnn_message(st);
  return st;
}

}  // namespace

cudaError_t CudnnAttention::forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B,
                                    int T, int H, int KV, int D) {
  const void* pointers[] = {out, lse, qkv};
  if (cudaError_t err = check_args("forward", pointers, 3, B, T, H, KV, D); err != cudaSuccess)
    return err;
  if (B == 0 || T == 0) return cudaSuccess;
  Plan* plan = plan_for(Key{B, T, H, KV, D, false});
  if (plan == nullptr) return cudaErrorNotSupported;
  if (cudaError_t err = ensure_workspace(plan->workspace); err != cudaSuccess) return err;

  const size_t q_heads = size_t(H) * D, kv_heads = size_t(KV) * D;
  auto* base = const_cast<__nv_bfloat16*>(qkv);  // cuDNN takes void*; inputs are only read
  const int64_t uids[] = {kQ, kK, kV, kO, kStats, kScale, kMaskFill};
  void* const data[] = {base, base + q_heads, base + q_heads + kv_heads, out,
                        lse,  &plan->scale,   &plan->mask_fill};
  static_assert(std::size(uids) == std::size(data));
  std::string error;
  const cudnnStatus_t st =
      execute(handle_, *plan, uids, data, int64_t(std::size(uids)), workspace_, &error);
  if (st != CUDNN_STATUS_SUCCESS) {
    last_error_ = shape_text("forward", B, T, H, KV, D) + ": " + error;
    return refusal(st, true);
  }
  return cudaSuccess;
}

cudaError_t CudnnAttention::backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                                     const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                                     const float* lse, int B, int T, int H, int KV, int D) {
  const void* pointers[] = {dqkv, dout, qkv, out, lse};
  if (cudaError_t err = check_args("backward", pointers, 5, B, T, H, KV, D); err != cudaSuccess)
    return err;
  if (B == 0 || T == 0) return cudaSuccess;
  Plan* plan = plan_for(Key{B, T, H, KV, D, true});
  if (plan == nullptr) return cudaErrorNotSupported;
  if (cudaError_t err = ensure_workspace(plan->workspace); err != cudaSuccess) return err;

  char* ws = static_cast<char*>(workspace_);
  void* softmax_sum = ws + plan->softmax_sum_offset;
  void* dq_accum = ws + plan->dq_accum_offset;
  if (cudnn_runtime_version() < kCudnnDqAccumSelfInit) {
    // Before cuDNN 9.6 the dQ accumulator had to arrive zeroed (the frontend memsets it).
    const cudaError_t err = cudaMemsetAsync(dq_accum, 0, plan->dq_accum_bytes, stream_);
    if (err != cudaSuccess) {
      last_error_ = shape_text("backward", B, T, H, KV, D) +
                    ": cudaMemsetAsync(dQ_accum): " + cudaGetErrorString(err);
      return err;
    }
  }

  const size_t q_heads = size_t(H) * D, kv_heads = size_t(KV) * D;
  auto* base = const_cast<__nv_bfloat16*>(qkv);  // inputs are only read
  const int64_t uids[] = {kQ,  kK,  kV,     kO,        kDO,  kStats,      kDQ,
                          kDK, kDV, kScale, kMaskFill, kOne, kSoftmaxSum, kDqAccum};
  void* const data[] = {base,
                        base + q_heads,
                        base + q_heads + kv_heads,
                        const_cast<__nv_bfloat16*>(out),
                        const_cast<__nv_bfloat16*>(dout),
                        const_cast<float*>(lse),
                        dqkv,
                        dqkv + q_heads,
                        dqkv + q_heads + kv_heads,
                        &plan->scale,
                        &plan->mask_fill,
                        &plan->one,
                        softmax_sum,
                        dq_accum};
  static_assert(std::size(uids) == std::size(data));
  std::string error;
  const cudnnStatus_t st =
      execute(handle_, *plan, uids, data, int64_t(std::size(uids)), workspace_, &error);
  if (st != CUDNN_STATUS_SUCCESS) {
    last_error_ = shape_text("backward", B, T, H, KV, D) + ": " + error;
    return refusal(st, true);
  }
  return cudaSuccess;
}

}  // namespace nuri::cuda

#endif  // NURI_WITH_CUDNN

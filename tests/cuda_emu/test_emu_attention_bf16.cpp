// The bf16 tensor-core flash attention (kernels/cuda/attention_bf16.cu) under the emulator, against
// the CPU backend's fp32 attention run on the same bf16-rounded inputs.
// Tolerances: out and dqkv are bf16 (2^-8 relative) and the kernels round P and dS to bf16 before
// their products, so each tensor (out; the q, k and v parts of dqkv) is checked as
// |got - want| <= 2e-2 max|want| + 1e-4 over that tensor (the floor for T = 1, where dq and dk
// are exactly 0 and both sides return rounding noise); lse (fp32 statistics) within 1e-3 absolute.
// Shapes: D 64 and 128, T not a multiple of the 64-row tile (and one that is), H = KV and GQA.
// The emulator runs a std::thread per CUDA thread and every WMMA call 32 times: keep shapes small.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "attention_bf16.cuh"
#include "emu_test_util.hpp"

using namespace emu_test;  // NOLINT: the shared helpers of emu_test_util.hpp

namespace {
struct Err {
  float err = 0.0f, ref = 0.0f;  // max |got - want|, max |want|
  bool ok(float rtol, float atol) const { return err <= rtol * ref + atol; }
};
std::ostream& operator<<(std::ostream& os, const Err& e) {
  return os << e.err << " (" << (e.ref > 0.0f ? e.err / e.ref : 0.0f) << " of max " << e.ref << ")";
}
// Over [from, from + n) of each block of `stride` elements (n = stride, from = 0: everything).
Err max_err(const Vec& got, const Vec& want, size_t stride, size_t from, size_t n) {
  Err e;
  for (size_t row = 0; row < got.size(); row += stride)
    for (size_t k = row + from; k < row + from + n; ++k) {
      e.err = std::max(e.err, std::fabs(got[k] - want[k]));
      e.ref = std::max(e.ref, std::fabs(want[k]));
    }
  return e;
}
float abs_max_err(const Vec& got, const Vec& want) {
  float err = 0.0f;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - want[i]));
  return err;
}
bool all_finite(const Vec& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}
}  // namespace

TEST_CASE("attention bf16 tensor cores forward/backward (causal, GQA)", "[attention_bf16]") {
  struct Shape {
    int B, T, H, KV, D;
  };
  constexpr float kTol = 2e-2f, kAtol = 1e-4f, kLseTol = 1e-3f;
  for (const Shape& sh :
       {Shape{1, 1, 2, 2, 64}, Shape{2, 17, 4, 2, 64}, Shape{2, 64, 4, 2, 64},
        Shape{1, 70, 4, 1, 64}, Shape{1, 130, 2, 2, 64}, Shape{2, 130, 4, 1, 64},
        Shape{1, 1, 4, 1, 128}, Shape{1, 17, 4, 1, 128}, Shape{1, 64, 2, 2, 128},
        Shape{2, 70, 2, 2, 128}, Shape{1, 130, 4, 2, 128}, Shape{1, 130, 4, 1, 128}}) {
    const auto [B, T, H, KV, D] = sh;
    INFO("B " << B << " T " << T << " H " << H << " KV " << KV << " D " << D);
    const size_t R = size_t(H + 2 * KV) * D;
    const size_t nqkv = size_t(B) * T * R, nout = size_t(B) * T * H * D, nlse = size_t(B) * H * T;
    const uint32_t s = uint32_t(B * 1000 + T * 10 + D + KV);
    const auto qkv_b = to_bf16(random_vec(nqkv, s, -1.5f, 1.5f));
    const Vec qkv = from_bf16(qkv_b);  // the reference sees exactly the kernel's inputs

    std::vector<__nv_bfloat16> out_b(nout, __float2bfloat16_rn(9.0f));
    Vec lse(nlse, 9.0f), out_w(nout), lse_w(nlse);
    REQUIRE(cu::attention_forward_bf16(out_b.data(), lse.data(), qkv_b.data(), B, T, H, KV, D,
                                       kStream) == cudaSuccess);
    cpu().attention_forward(out_w.data(), lse_w.data(), qkv.data(), B, T, H, KV, D);
    const Vec out = from_bf16(out_b);
    const Err e_out = max_err(out, out_w, out.size(), 0, out.size());
    const float e_lse = abs_max_err(lse, lse_w);
    CHECK(all_finite(out));
    CHECK(e_out.ok(kTol, kAtol));
    CHECK(e_lse <= kLseTol);

    const auto dout_b = to_bf16(random_vec(nout, s + 1));
    const Vec dout = from_bf16(dout_b);
    std::vector<__nv_bfloat16> dqkv_b(nqkv, __float2bfloat16_rn(7.0f));  // overwritten
    Vec workspace(cu::attention_backward_bf16_workspace(B, T, H, KV, D), -5.0f);
    REQUIRE(workspace.size() == nlse);
    // The kernel's own out (bf16) and lse, as in training; the reference its fp32 ones.
    REQUIRE(cu::attention_backward_bf16(dqkv_b.data(), dout_b.data(), qkv_b.data(), out_b.data(),
                                        lse.data(), workspace.data(), B, T, H, KV, D,
                                        kStream) == cudaSuccess);
    Vec dqkv_w(nqkv, -7.0f);
    cpu().attention_backward(dqkv_w.data(), dout.data(), qkv.data(), out_w.data(), lse_w.data(), B,
                             T, H, KV, D);
    const Vec dqkv = from_bf16(dqkv_b);
    CHECK(all_finite(dqkv));
    const size_t hd = size_t(H) * D, kd = size_t(KV) * D;
    const Err e_dq = max_err(dqkv, dqkv_w, R, 0, hd);
    const Err e_dk = max_err(dqkv, dqkv_w, R, hd, kd);
    const Err e_dv = max_err(dqkv, dqkv_w, R, hd + kd, kd);
    CHECK(e_dq.ok(kTol, kAtol));
    CHECK(e_dk.ok(kTol, kAtol));
    CHECK(e_dv.ok(kTol, kAtol));
    std::cout << "attention_bf16 B " << B << " T " << T << " H " << H << " KV " << KV << " D " << D
              << ": max |err| out " << e_out << ", dq " << e_dq << ", dk "
              << e_dk << ", dv " << e_dv << "; lse " << e_lse << '\n';
  }
  // D other than 64 / 128: InvalidValue (the caller falls back to the fp32 kernels).
  std::vector<__nv_bfloat16> buf(4096);
  Vec f(4096);
  CHECK(cu::attention_forward_bf16(buf.data(), f.data(), buf.data(), 1, 4, 2, 2, 96, kStream) ==
        cudaErrorInvalidValue);
  CHECK(cu::attention_backward_bf16(buf.data(), buf.data(), buf.data(), buf.data(), f.data(),
                                    f.data(), 1, 4, 2, 2, 96, kStream) == cudaErrorInvalidValue);
  CHECK(cu::attention_forward_bf16(buf.data(), f.data(), buf.data(), 1, 4, 4, 3, 64, kStream) ==
        cudaErrorInvalidValue);  // H % KV != 0
  CHECK(cu::attention_forward_bf16(nullptr, nullptr, nullptr, 0, 4, 4, 2, 64, kStream) ==
        cudaSuccess);  // nothing to do
  CHECK(cu::attention_backward_bf16(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 4,
                                    2, 128, kStream) == cudaSuccess);
  CHECK(cu::attention_backward_bf16_workspace(2, 0, 4, 2, 128) == 0);
}

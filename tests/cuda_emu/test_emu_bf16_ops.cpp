// The bf16 activation ops of the emulated cuda backend (Backend's typed overloads: norm outputs,
// products, RoPE, SwiGLU, the GELU backward and attention with bf16 activations) against the CPU
// backend's, which are Backend's defaults: widen, the fp32 reference op, round. The same bf16
// inputs go to both; the weights are bf16 values (the cuda products round them), so what differs
// is the order of fp32 sums and, where the bf16 attention runs, its bf16 probabilities: checked
// within a bf16 rounding or two of each tensor's scale. Shapes are awkward (33 rows, widths not a
// multiple of the tiles). Attention runs at D = 64 (the bf16 kernels) and D = 24 (the fp32 kernels
// behind the bf16 interface).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "emu_test_util.hpp"
#include "nuri/backend.hpp"

namespace {

using namespace emu_test;  // NOLINT: the shared helpers
using nuri::bf16_t;

nuri::Backend& gpu() {
  static std::unique_ptr<nuri::Backend> backend = nuri::cuda::make_cuda_backend();
  return *backend;
}

// n values of the backend's memory, fp32 or bf16 (a bf16 buffer takes ceil(n/2) floats).
template <class T>
struct Dev {
  nuri::Backend& be;
  float* raw;
  size_t n;
  Dev(nuri::Backend& b, size_t count) : be(b), raw(b.alloc(floats(count))), n(count) {}
  ~Dev() { be.free(raw); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  static size_t floats(size_t count) { return sizeof(T) == 4 ? count : (count + 1) / 2; }
  T* p() { return reinterpret_cast<T*>(raw); }
  void set(const Vec& v) {  // v rounded to T (managed memory: the host writes it)
    REQUIRE(v.size() == n);
    be.synchronize();
    for (size_t i = 0; i < n; ++i) {
      if constexpr (sizeof(T) == 4)
        p()[i] = v[i];
      else
        p()[i] = nuri::bf16_round(v[i]);
    }
  }
  Vec get() {  // the values as fp32, after the queued work
    be.synchronize();
    Vec out(n);
    for (size_t i = 0; i < n; ++i) {
      if constexpr (sizeof(T) == 4)
        out[i] = p()[i];
      else
        out[i] = nuri::bf16_widen(p()[i]);
    }
    return out;
  }
};
using F32 = Dev<float>;
using B16 = Dev<bf16_t>;

// A host bf16 copy of v (rounded), for the CPU backend, which takes host memory.
std::vector<bf16_t> host16(const Vec& v) {
  std::vector<bf16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = nuri::bf16_round(v[i]);
  return h;
}
Vec widen(const std::vector<bf16_t>& h) {
  Vec v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = nuri::bf16_widen(h[i]);
  return v;
}

}  // namespace

TEST_CASE("bf16 activation ops: norms write bf16 as the fp32 norm rounded", "[backend][bf16]") {
  nuri::Backend& g = gpu();
  const int N = 33, C = 40;
  const Vec x = random_vec(size_t(N) * C, 1, -3.0f, 3.0f), w = random_vec(C, 2), b = random_vec(C, 3);
  F32 dx(g, x.size()), dw(g, C), db(g, C), mean(g, N), rstd(g, N);
  dx.set(x), dw.set(w), db.set(b);
  B16 out(g, x.size());
  std::vector<bf16_t> h(x.size());
  Vec hmean(N), hrstd(N);
  g.layernorm_forward(out.p(), mean.p(), rstd.p(), dx.p(), dw.p(), db.p(), N, C, 1e-5f);
  cpu().layernorm_forward(h.data(), hmean.data(), hrstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  check_close_scaled("layernorm_forward bf16 out", out.get(), widen(h), kBf16Rtol);
  check_close("layernorm_forward mean", mean.get(), hmean, 1e-5f, 1e-6f);
  check_close("layernorm_forward rstd", rstd.get(), hrstd, 1e-5f, 1e-6f);
  g.rmsnorm_forward(out.p(), rstd.p(), dx.p(), dw.p(), N, C, 1e-5f);
  cpu().rmsnorm_forward(h.data(), hrstd.data(), x.data(), w.data(), N, C, 1e-5f);
  check_close_scaled("rmsnorm_forward bf16 out", out.get(), widen(h), kBf16Rtol);
  check_close("rmsnorm_forward rstd", rstd.get(), hrstd, 1e-5f, 1e-6f);
}

TEST_CASE("bf16 activation ops: products read (and write) bf16 activations", "[backend][bf16]") {
  nuri::Backend& g = gpu();
  const int N = 33, IC = 40, OC = 24;
  const Vec x = random_vec(size_t(N) * IC, 4), w = bf16_values(size_t(OC) * IC, 5), b = random_vec(OC, 6);
  const std::vector<bf16_t> hx = host16(x);
  B16 dx(g, x.size());
  dx.set(x);
  F32 dw(g, w.size()), db(g, OC);
  dw.set(w), db.set(b);
  for (bool bias : {true, false}) {
    INFO("bias " << bias);
    // bf16 -> bf16
    B16 y(g, size_t(N) * OC);
    std::vector<bf16_t> hy(size_t(N) * OC);
    g.linear_forward(y.p(), dx.p(), dw.p(), bias ? db.p() : nullptr, N, IC, OC);
    cpu().linear_forward(hy.data(), hx.data(), w.data(), bias ? b.data() : nullptr, N, IC, OC);
    check_close_scaled("linear_forward bf16 -> bf16", y.get(), widen(hy), kBf16Rtol);
    // bf16 -> fp32, accumulating onto what is there
    const Vec y0 = random_vec(size_t(N) * OC, 7);
    F32 yf(g, y0.size());
    yf.set(y0);
    Vec hyf = y0;
    g.linear_forward(yf.p(), dx.p(), dw.p(), bias ? db.p() : nullptr, N, IC, OC, true);
    cpu().linear_forward(hyf.data(), hx.data(), w.data(), bias ? b.data() : nullptr, N, IC, OC, true);
    check_close_scaled("linear_forward bf16 -> fp32, accumulate", yf.get(), hyf, 1e-5f);
  }
  // GELU in the epilogue: pre and out in bf16.
  B16 pre(g, size_t(N) * OC), out(g, size_t(N) * OC);
  std::vector<bf16_t> hpre(pre.n), hout(out.n);
  g.linear_gelu_forward(pre.p(), out.p(), dx.p(), dw.p(), db.p(), N, IC, OC);
  cpu().linear_gelu_forward(hpre.data(), hout.data(), hx.data(), w.data(), b.data(), N, IC, OC);
  check_close_scaled("linear_gelu_forward pre", pre.get(), widen(hpre), kBf16Rtol);
  check_close_scaled("linear_gelu_forward out", out.get(), widen(hout), kBf16Rtol);
  // Backward from a bf16 input: dinp (needs no input), dweight and dbias accumulate.
  const Vec dy = bf16_values(size_t(N) * OC, 8);
  F32 ddy(g, dy.size()), dinp(g, x.size()), gw(g, w.size()), gb(g, OC);
  ddy.set(dy);
  Vec hdinp(x.size()), hgw(w.size(), 0.0f), hgb(OC, 0.0f);
  g.linear_backward(dinp.p(), gw.p(), gb.p(), ddy.p(), dx.p(), dw.p(), N, IC, OC);
  cpu().linear_backward(hdinp.data(), hgw.data(), hgb.data(), dy.data(), hx.data(), w.data(), N, IC, OC);
  check_close_scaled("linear_backward dinp", dinp.get(), hdinp, 1e-5f);
  check_close_scaled("linear_backward dweight", gw.get(), hgw, 1e-5f);
  check_close_scaled("linear_backward dbias", gb.get(), hgb, 1e-5f);
}

TEST_CASE("bf16 activation ops: GELU backward, SwiGLU and RoPE on bf16", "[backend][bf16]") {
  nuri::Backend& g = gpu();
  const int N = 33, F = 20;
  // GELU backward reads the bf16 pre-activation.
  const Vec pre = random_vec(size_t(N) * F, 9, -4.0f, 4.0f), dy = random_vec(size_t(N) * F, 10);
  B16 dpre(g, pre.size());
  dpre.set(pre);
  F32 ddy(g, dy.size()), dx(g, pre.size());
  ddy.set(dy);
  Vec hdx(pre.size());
  g.gelu_backward(dx.p(), dpre.p(), ddy.p(), pre.size());
  cpu().gelu_backward(hdx.data(), host16(pre).data(), dy.data(), pre.size());
  check_close("gelu_backward from bf16", dx.get(), hdx, 1e-5f, 1e-6f);
  // SwiGLU: [gate | up] (N,2F) in bf16.
  const Vec gu = random_vec(size_t(N) * 2 * F, 11, -3.0f, 3.0f);
  B16 dgu(g, gu.size()), act(g, size_t(N) * F);
  dgu.set(gu);
  std::vector<bf16_t> hact(act.n);
  g.swiglu_forward(act.p(), dgu.p(), N, F);
  cpu().swiglu_forward(hact.data(), host16(gu).data(), N, F);
  check_close_scaled("swiglu_forward bf16", act.get(), widen(hact), kBf16Rtol);
  F32 dgu_grad(g, gu.size());
  Vec hdgu(gu.size());
  g.swiglu_backward(dgu_grad.p(), dgu.p(), ddy.p(), N, F);
  cpu().swiglu_backward(hdgu.data(), host16(gu).data(), dy.data(), N, F);
  check_close("swiglu_backward from bf16", dgu_grad.get(), hdgu, 1e-5f, 1e-6f);
  // RoPE in place on the k heads of a qkv layout (offset start, row stride wider than the heads);
  // the values around them are rounded back unchanged.
  const int B = 3, T = 5, H = 4, KV = 2, D = 8, R = (H + 2 * KV) * D;
  const Vec qkv = random_vec(size_t(B) * T * R, 12);
  B16 dq(g, qkv.size());
  dq.set(qkv);
  std::vector<bf16_t> hq = host16(qkv);
  g.rope(dq.p() + H * D, B, T, KV, D, R, 10000.0f);
  cpu().rope(hq.data() + H * D, B, T, KV, D, R, 10000.0f);
  check_close_scaled("rope on bf16 k heads", dq.get(), widen(hq), kBf16Rtol);
  const Vec got = dq.get(), before = widen(host16(qkv));
  size_t untouched = 0, same = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const size_t col = i % size_t(R);
    if (col < size_t(H * D) || col >= size_t((H + KV) * D)) ++untouched, same += got[i] == before[i];
  }
  CHECK(same == untouched);
}

TEST_CASE("bf16 activation ops: attention reads bf16 qkv and writes bf16 output", "[backend][bf16]") {
  nuri::Backend& g = gpu();
  for (int D : {64, 24}) {  // the bf16 kernels; the fp32 ones behind the bf16 interface
    INFO("D = " << D);
    const int B = 2, T = 19, H = 4, KV = 2, R = (H + 2 * KV) * D;
    const size_t rows = size_t(B) * T;
    const Vec qkv = random_vec(rows * R, 13, -1.5f, 1.5f), dout = random_vec(rows * H * D, 14);
    const std::vector<bf16_t> hqkv = host16(qkv);
    B16 dqkv(g, qkv.size()), out(g, rows * H * D);
    dqkv.set(qkv);
    F32 lse(g, size_t(B) * H * T), ddout(g, dout.size()), grad(g, qkv.size());
    ddout.set(dout);
    std::vector<bf16_t> hout(out.n);
    Vec hlse(lse.n), hgrad(qkv.size());
    g.attention_forward(out.p(), lse.p(), dqkv.p(), B, T, H, KV, D);
    cpu().attention_forward(hout.data(), hlse.data(), hqkv.data(), B, T, H, KV, D);
    check_close_scaled("attention_forward bf16 out", out.get(), widen(hout), 2e-2f);
    check_close_scaled("attention_forward lse", lse.get(), hlse, 1e-3f);
    // Both backwards from the same bf16 output and lse (the cuda ones), so only the kernels differ.
    const Vec o = out.get(), l = lse.get();
    g.attention_backward(grad.p(), ddout.p(), dqkv.p(), out.p(), lse.p(), B, T, H, KV, D);
    cpu().attention_backward(hgrad.data(), dout.data(), hqkv.data(), host16(o).data(), l.data(), B, T, H, KV, D);
    check_close_scaled("attention_backward from bf16", grad.get(), hgrad, 2e-2f);
  }
}

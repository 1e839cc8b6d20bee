// Causal GQA attention on the GPU: cuDNN's SDPA (flash, bf16 in and out, fp32 softmax; through
// src/backend/cuda/cudnn_attention) against nuri's own kernels — the bf16 tensor-core flash
// attention (kernels/cuda/attention_bf16.cu, what the cuda backend runs at D = 64 and 128; its share
// of cuDNN's throughput is the goal, >= 80%) and the fp32 SIMT one (attention.cu) —
// forward and backward, at the attention shapes of nuri's models:
//   gpt2-124m  B=8 T=1024 H=KV=12 D=64;  llama-1b  B=4 T=2048 H=32 KV=8 D=64;
//   d128       B=4 T=2048 H=16 KV=4 D=128 (a head size of 128).
// Each figure is the median of --reps runs (default 20) after --warmup runs (default 3), each run
// bracketed by CUDA events on one stream. TFLOP/s counts the causal FLOPs: forward
// 4*B*H*T*T*D/2 (two matmuls over the lower triangle), backward 2.5x forward; "ours fp32/cuDNN" is
// the ratio of times (how many times longer ours takes). Before timing, once per shape, cuDNN's
// out, lse and dqkv are checked against ours on the same inputs (random values rounded to bf16, so
// both read the same numbers): max abs error printed, bf16 tolerances; a mismatch exits 1. Where
// cuDNN refuses a shape (or is unavailable: pre-sm_80, cuDNN < 9), only ours is timed. Without a
// CUDA device: one line "SKIPPED: ..." and exit 0. Usage: bench_attention_cuda [--reps N] [--warmup
// N] [--report PATH]   (--report: markdown table) Compiled by nvcc (benchmarks/CMakeLists.txt): the
// kernel headers need it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "attention.cuh"
#include "attention_bf16.cuh"
#include "backend/cuda/cudnn_attention.hpp"
#include "cast.cuh"

namespace {

#define CHECK_CUDA(call) check_cuda((call), #call, __FILE__, __LINE__)

void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  std::fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, call, cudaGetErrorString(err));
  std::exit(1);
}

struct Case {
  const char* model;
  int B, T, H, KV, D;
  size_t qkv_elems() const { return size_t(B) * T * (H + 2 * KV) * D; }
  size_t out_elems() const { return size_t(B) * T * H * D; }
  size_t lse_elems() const { return size_t(B) * H * T; }
  double forward_flops() const { return 4.0 * B * H * double(T) * T * D / 2.0; }
  double backward_flops() const { return 2.5 * forward_flops(); }
};

const Case kCases[] = {
    {"gpt2-124m", 8, 1024, 12, 12, 64},
    {"llama-1b", 4, 2048, 32, 8, 64},
    {"d128", 4, 2048, 16, 4, 128},
};

// A device allocation of n elements, freed on scope exit.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    CHECK_CUDA(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

std::vector<float> to_host(const float* device, size_t n) {
  std::vector<float> h(n);
  CHECK_CUDA(cudaMemcpy(h.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

std::vector<float> to_host(const __nv_bfloat16* device, size_t n, cudaStream_t stream) {
  DeviceBuffer<float> tmp(n);
  CHECK_CUDA(nuri::cuda::cast_bf16_to_f32(tmp.get(), device, n, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  return to_host(tmp.get(), n);
}

// Uniform values in [-1, 1) from a splitmix64 stream, rounded to bf16 on the device: `f32` and
// `b16` then hold exactly the same numbers.
void fill_random(float* f32, __nv_bfloat16* b16, size_t n, uint64_t seed, cudaStream_t stream) {
  std::vector<float> h(n);
  uint64_t state = seed;
  for (float& x : h) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x = float(double(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
  CHECK_CUDA(cudaMemcpy(f32, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK_CUDA(nuri::cuda::cast_f32_to_bf16(b16, f32, n, stream));
  CHECK_CUDA(nuri::cuda::cast_bf16_to_f32(f32, b16, n, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
}

// Median milliseconds of `run` (returns a cudaError_t) over `reps` runs after `warmup`.
template <class Run>
float median_ms(cudaStream_t stream, int warmup, int reps, Run&& run) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) CHECK_CUDA(run());
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(run());
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Timing {
  float forward_ms = 0.0f, backward_ms = 0.0f;
};

// nuri's bf16 tensor-core attention (kernels/cuda/attention_bf16) on the same bf16 buffers cuDNN
// reads, writing into the given outputs (cuDNN's results are checked by then). Its numbers are
// checked against the CPU by the `gpu` test (and by emulation in CI), not here. Nothing when the
// kernel refuses the shape on this GPU (D = 128 needs more shared memory than sm_86/89 give).
struct Bf16Buffers {
  const __nv_bfloat16* qkv;
  const __nv_bfloat16* dout;
  __nv_bfloat16* out;
  float* lse;
  __nv_bfloat16* dqkv;
};

std::optional<Timing> time_ours_bf16(const Case& c, const Bf16Buffers& b, cudaStream_t stream, int warmup,
                                     int reps) {
  namespace cu = nuri::cuda;
  const cudaError_t probe = cu::attention_forward_bf16(b.out, b.lse, b.qkv, c.B, c.T, c.H, c.KV, c.D, stream);
  if (probe != cudaSuccess) {
    std::printf("  ours bf16 %-10s not run: %s\n", c.model, cudaGetErrorString(probe));
    return std::nullopt;
  }
  const size_t ws_floats = cu::attention_backward_bf16_workspace(c.B, c.T, c.H, c.KV, c.D);
  float* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, std::max<size_t>(ws_floats, 1) * sizeof(float)));
  Timing t;
  t.forward_ms = median_ms(stream, warmup, reps, [&] {
    return cu::attention_forward_bf16(b.out, b.lse, b.qkv, c.B, c.T, c.H, c.KV, c.D, stream);
  });
  t.backward_ms = median_ms(stream, warmup, reps, [&] {
    return cu::attention_backward_bf16(b.dqkv, b.dout, b.qkv, b.out, b.lse, ws, c.B, c.T, c.H, c.KV, c.D, stream);
  });
  CHECK_CUDA(cudaFree(ws));
  return t;
}

// Largest |got - want| over columns [c0, c1) of every row (rows of `row` elements), and the
// largest |want| there (the scale a gradient error is judged against).
struct ErrorStat {
  double max_abs = 0.0, max_ref = 0.0;
  double rel() const { return max_ref > 0.0 ? max_abs / max_ref : max_abs; }
};

ErrorStat compare_columns(const std::vector<float>& got, const std::vector<float>& want, size_t row,
                          size_t c0, size_t c1) {
  ErrorStat s;
  for (size_t r = 0; r < want.size() / row; ++r)
    for (size_t c = c0; c < c1; ++c) {
      const size_t i = r * row + c;
      const double err = std::abs(double(got[i]) - double(want[i]));
      s.max_abs = std::isnan(err) ? INFINITY : std::max(s.max_abs, err);
      s.max_ref = std::max(s.max_ref, std::abs(double(want[i])));
    }
  return s;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string sci(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2e", v);
  return buf;
}

double tflops(double flops, float ms) {
  return ms > 0.0f ? flops / (double(ms) * 1e-3) / 1e12 : 0.0;
}

struct Row {
  Case c;
  std::string cudnn_status = "ok";  // or why cuDNN did not run
  std::optional<Timing> cudnn, ours_bf16;
  Timing ours;
  double err_out = 0.0, err_lse = 0.0, err_dqkv_rel = 0.0;
  bool checked = false, pass = true;
};

// Bf16 tolerances: out within 2e-2 absolute (|out| < 1 here; bf16 output rounding is 4e-3 at 1,
// cuDNN also rounds P to bf16 before P.V), lse within 2e-2 absolute (fp32 on both sides from the
// same bf16 inputs), each of dq, dk, dv within 3e-2 of the largest |reference| in that part.
constexpr double kTolOut = 2e-2, kTolLse = 2e-2, kTolGradRel = 3e-2;

Row run_case(const Case& c, nuri::cuda::CudnnAttention* cudnn, cudaStream_t stream, int warmup,
             int reps) {
  Row row;
  row.c = c;
  const size_t nqkv = c.qkv_elems(), nout = c.out_elems(), nlse = c.lse_elems();
  DeviceBuffer<float> qkv32(nqkv), dout32(nout), out32(nout), lse32(nlse), dqkv32(nqkv);
  DeviceBuffer<__nv_bfloat16> qkv16(nqkv), dout16(nout), out16(nout), dqkv16(nqkv);
  DeviceBuffer<float> lse_cudnn(nlse);
  fill_random(qkv32.get(), qkv16.get(), nqkv, 0x5eed0000u + uint64_t(c.T) * 131 + uint64_t(c.H),
              stream);
  fill_random(dout32.get(), dout16.get(), nout, 0xd0u + uint64_t(c.D), stream);

  auto ours_forward = [&] {
    return nuri::cuda::attention_forward(out32.get(), lse32.get(), qkv32.get(), c.B, c.T, c.H, c.KV,
                                         c.D, stream);
  };
  auto ours_backward = [&] {
    return nuri::cuda::attention_backward(dqkv32.get(), dout32.get(), qkv32.get(), out32.get(),
                                          lse32.get(), c.B, c.T, c.H, c.KV, c.D, stream);
  };
  auto cudnn_forward = [&] {
    return cudnn->forward(out16.get(), lse_cudnn.get(), qkv16.get(), c.B, c.T, c.H, c.KV, c.D);
  };
  auto cudnn_backward = [&] {
    return cudnn->backward(dqkv16.get(), dout16.get(), qkv16.get(), out16.get(), lse_cudnn.get(),
                           c.B, c.T, c.H, c.KV, c.D);
  };

  // Reference: ours, once.
  CHECK_CUDA(ours_forward());
  CHECK_CUDA(ours_backward());
  CHECK_CUDA(cudaStreamSynchronize(stream));

  // cuDNN once (this also builds both plans), then the check.
  bool cudnn_ok = cudnn != nullptr;
  if (cudnn == nullptr) row.cudnn_status = "unavailable";
  if (cudnn_ok) {
    cudaError_t err = cudnn_forward();
    if (err == cudaSuccess) err = cudnn_backward();
    if (err == cudaErrorNotSupported) {
      row.cudnn_status = "refused";
      std::printf("  cuDNN refused %s: %s\n", c.model, cudnn->last_error().c_str());
      cudnn_ok = false;
    } else if (err != cudaSuccess) {
      std::fprintf(stderr, "cuDNN attention failed on %s: %s (%s)\n", c.model,
                   cudaGetErrorString(err), cudnn->last_error().c_str());
      std::exit(1);
    }
  }
  if (cudnn_ok) {
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const std::vector<float> out_ref = to_host(out32.get(), nout),
                             lse_ref = to_host(lse32.get(), nlse),
                             dqkv_ref = to_host(dqkv32.get(), nqkv);
    const std::vector<float> out_got = to_host(out16.get(), nout, stream),
                             lse_got = to_host(lse_cudnn.get(), nlse),
                             dqkv_got = to_host(dqkv16.get(), nqkv, stream);
    const size_t q = size_t(c.H) * c.D, kv = size_t(c.KV) * c.D, R = q + 2 * kv;
    const ErrorStat out_err = compare_columns(out_got, out_ref, q, 0, q);
    const ErrorStat lse_err = compare_columns(lse_got, lse_ref, size_t(c.T), 0, size_t(c.T));
    const ErrorStat dq = compare_columns(dqkv_got, dqkv_ref, R, 0, q);
    const ErrorStat dk = compare_columns(dqkv_got, dqkv_ref, R, q, q + kv);
    const ErrorStat dv = compare_columns(dqkv_got, dqkv_ref, R, q + kv, R);
    row.checked = true;
    row.err_out = out_err.max_abs;
    row.err_lse = lse_err.max_abs;
    row.err_dqkv_rel = std::max({dq.rel(), dk.rel(), dv.rel()});
    row.pass =
        out_err.max_abs <= kTolOut && lse_err.max_abs <= kTolLse && row.err_dqkv_rel <= kTolGradRel;
    std::printf(
        "  check %-10s out %s  lse %s  dq %s (rel %s)  dk %s (rel %s)  dv %s (rel %s)  %s\n",
        c.model, sci(out_err.max_abs).c_str(), sci(lse_err.max_abs).c_str(),
        sci(dq.max_abs).c_str(), sci(dq.rel()).c_str(), sci(dk.max_abs).c_str(),
        sci(dk.rel()).c_str(), sci(dv.max_abs).c_str(), sci(dv.rel()).c_str(),
        row.pass ? "ok" : "FAIL");
  }

  row.ours.forward_ms = median_ms(stream, warmup, reps, ours_forward);
  row.ours.backward_ms = median_ms(stream, warmup, reps, ours_backward);
  if (cudnn_ok) {
    Timing t;
    t.forward_ms = median_ms(stream, warmup, reps, cudnn_forward);
    t.backward_ms = median_ms(stream, warmup, reps, cudnn_backward);
    row.cudnn = t;
  }
  row.ours_bf16 = time_ours_bf16(
      c, Bf16Buffers{qkv16.get(), dout16.get(), out16.get(), lse_cudnn.get(), dqkv16.get()}, stream,
      warmup, reps);
  return row;
}

std::string ms_cell(const std::optional<Timing>& t, bool backward) {
  if (!t) return "n/a";
  return fixed(backward ? t->backward_ms : t->forward_ms, 3);
}

std::string tflops_cell(const std::optional<Timing>& t, double flops, bool backward) {
  if (!t) return "n/a";
  return fixed(tflops(flops, backward ? t->backward_ms : t->forward_ms), 1);
}

// Our throughput as a share of cuDNN's (cuDNN time / our time): the goal is >= 80%.
std::string share_cell(const std::optional<Timing>& ours, const std::optional<Timing>& cudnn, bool backward) {
  if (!ours || !cudnn) return "n/a";
  const float o = backward ? ours->backward_ms : ours->forward_ms;
  const float d = backward ? cudnn->backward_ms : cudnn->forward_ms;
  return o > 0.0f ? fixed(100.0 * double(d) / double(o), 0) + "%" : "n/a";
}

std::string ratio_cell(const Timing& ours, const std::optional<Timing>& cudnn, bool backward) {
  if (!cudnn) return "n/a";
  const float o = backward ? ours.backward_ms : ours.forward_ms;
  const float d = backward ? cudnn->backward_ms : cudnn->forward_ms;
  return d > 0.0f ? fixed(double(o) / double(d), 2) + "x" : "n/a";
}

void print_row(const Row& r) {
  const Case& c = r.c;
  const std::optional<Timing> ours = r.ours;
  for (int pass = 0; pass < 2; ++pass) {
    const bool bwd = pass == 1;
    const double flops = bwd ? c.backward_flops() : c.forward_flops();
    std::printf(
        "%-10s %-3s  cuDNN bf16 %9s ms %7s TFLOP/s | ours fp32 %9s ms %7s TFLOP/s | "
        "ours bf16 %9s ms %7s TFLOP/s = %s of cuDNN | ours fp32/cuDNN %s\n",
        c.model, bwd ? "bwd" : "fwd", ms_cell(r.cudnn, bwd).c_str(),
        tflops_cell(r.cudnn, flops, bwd).c_str(), ms_cell(ours, bwd).c_str(),
        tflops_cell(ours, flops, bwd).c_str(), ms_cell(r.ours_bf16, bwd).c_str(),
        tflops_cell(r.ours_bf16, flops, bwd).c_str(), share_cell(r.ours_bf16, r.cudnn, bwd).c_str(),
        ratio_cell(r.ours, r.cudnn, bwd).c_str());
  }
}

bool write_report(const std::string& path, const std::vector<Row>& rows, const std::string& device,
                  const std::string& cudnn_note, int reps) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  std::fprintf(f, "# Attention: cuDNN SDPA (bf16) vs nuri kernels\n\n");
  std::fprintf(f,
               "Device: %s. %s. Median of %d runs (CUDA events). Causal FLOPs: forward "
               "4*B*H*T*T*D/2, backward 2.5x. \"ours fp32/cuDNN\" is the ratio of times.\n\n",
               device.c_str(), cudnn_note.c_str(), reps);
  std::fprintf(
      f,
      "| model | B | T | H | KV | D | pass | cuDNN fwd ms | TFLOP/s | ours fp32 fwd ms | TFLOP/s "
      "| ours bf16 fwd ms (share of cuDNN) | fwd ours fp32/cuDNN | cuDNN bwd ms | TFLOP/s | ours fp32 bwd ms | "
      "TFLOP/s "
      "| ours bf16 bwd ms (share of cuDNN) | bwd ours fp32/cuDNN | max err out | max err lse | max rel err dqkv "
      "|\n");
  std::fprintf(f,
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|--"
               "-|---|\n");
  for (const Row& r : rows) {
    const Case& c = r.c;
    const std::optional<Timing> ours = r.ours;
    const std::string pass = r.checked ? (r.pass ? "ok" : "FAIL") : r.cudnn_status;
    std::fprintf(
        f,
        "| %s | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
        "| %s | %s | %s | %s |\n",
        c.model, c.B, c.T, c.H, c.KV, c.D, pass.c_str(), ms_cell(r.cudnn, false).c_str(),
        tflops_cell(r.cudnn, c.forward_flops(), false).c_str(), ms_cell(ours, false).c_str(),
        tflops_cell(ours, c.forward_flops(), false).c_str(),
        (ms_cell(r.ours_bf16, false) + " (" + share_cell(r.ours_bf16, r.cudnn, false) + ")").c_str(),
        ratio_cell(r.ours, r.cudnn, false).c_str(), ms_cell(r.cudnn, true).c_str(),
        tflops_cell(r.cudnn, c.backward_flops(), true).c_str(), ms_cell(ours, true).c_str(),
        tflops_cell(ours, c.backward_flops(), true).c_str(),
        (ms_cell(r.ours_bf16, true) + " (" + share_cell(r.ours_bf16, r.cudnn, true) + ")").c_str(),
        ratio_cell(r.ours, r.cudnn, true).c_str(), r.checked ? sci(r.err_out).c_str() : "n/a",
        r.checked ? sci(r.err_lse).c_str() : "n/a",
        r.checked ? sci(r.err_dqkv_rel).c_str() : "n/a");
  }
  return std::fclose(f) == 0;
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--reps N (>= 10)] [--warmup N] [--report PATH]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20, warmup = 3;
  std::string report;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    if (a == "--reps")
      reps = std::atoi(argv[++i]);
    else if (a == "--warmup")
      warmup = std::atoi(argv[++i]);
    else if (a == "--report")
      report = argv[++i];
    else
      return usage(argv[0]);
  }
  if (reps < 10 || warmup < 0) return usage(argv[0]);

  int devices = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&devices);
  if (count_err != cudaSuccess || devices == 0) {
    std::printf(
        "SKIPPED: no CUDA device here (cudaGetDeviceCount: %s, %d devices); run on a GPU host\n",
        cudaGetErrorString(count_err), devices);
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  CHECK_CUDA(cudaSetDevice(0));
  const std::string device = std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                             std::to_string(prop.minor) + ")";
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));

  std::string why;
  std::optional<nuri::cuda::CudnnAttention> cudnn;
  std::string cudnn_note;
  if (nuri::cuda::CudnnAttention::available(&why)) {
    cudnn.emplace(stream);
    cudnn_note = "cuDNN SDPA available";
  } else {
    cudnn_note = "cuDNN SDPA unavailable (" + why + "): ours only";
  }
  std::printf("bench_attention_cuda on %s; %s; median of %d runs after %d warmup\n", device.c_str(),
              cudnn_note.c_str(), reps, warmup);

  std::vector<Row> rows;
  bool all_pass = true;
  for (const Case& c : kCases) {
    std::printf("%s: B=%d T=%d H=%d KV=%d D=%d\n", c.model, c.B, c.T, c.H, c.KV, c.D);
    rows.push_back(run_case(c, cudnn ? &*cudnn : nullptr, stream, warmup, reps));
    print_row(rows.back());
    all_pass = all_pass && rows.back().pass;
  }
  if (cudnn) std::printf("cuDNN workspace held: %zu bytes\n", cudnn->workspace_bytes());
  if (!report.empty()) {
    if (!write_report(report, rows, device, cudnn_note, reps)) {
      std::fprintf(stderr, "cannot write %s\n", report.c_str());
      return 1;
    }
    std::printf("report: %s\n", report.c_str());
  }
  cudnn.reset();
  CHECK_CUDA(cudaStreamDestroy(stream));
  if (!all_pass) {
    std::printf("FAIL: cuDNN and nuri disagree beyond the bf16 tolerances (see the check lines)\n");
    return 1;
  }
  return 0;
}

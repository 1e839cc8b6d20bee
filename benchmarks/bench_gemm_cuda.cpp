// TFLOP/s of our bf16 GEMM (gemm_bf16, kernels/cuda/gemm.cuh) against cuBLASLt (CublasLtGemm,
// src/backend/cuda/cublaslt_gemm.hpp) at the shapes of nuri's models, in the three products each
// linear layer runs (bf16 A and B, fp32 C, fp32 accumulation; tokens = B*T = 8192):
//   fwd   out  (N,OC)  = inp (N,IC) @ W (OC,IC)^T + bias   NT  M=N  N=OC K=IC  beta 0  (epilogue of the layer)
//   dinp  dinp (N,IC)  = dout (N,OC) @ W (OC,IC)           NN  M=N  N=IC K=OC  beta 0
//   dW    dW  (OC,IC) += dout (N,OC)^T @ inp (N,IC)        TN  M=OC N=IC K=N   beta 1
// gpt2-124m (C=768): qkv 768->2304 (bias), attn proj 768->768 (bias), fc 768->3072 (bias+GELU,
// pre-GELU stored), fc proj 3072->768 (bias), lm_head 768->50257. llama-1b (C=2048, 32 heads,
// 8 kv heads of 64): qkv 2048->3072, o 2048->2048, gate+up 2048->16384, down 8192->2048,
// lm_head 2048->128256 (no biases).
// Each product: once per implementation on the same inputs, compared (max |ours - cuBLASLt| /
// max |cuBLASLt| over the output, or over an even sample of its rows when it is large; for the
// GELU epilogue also pre_gelu, and cuBLASLt's C against the tanh and the erf GELU of its own
// pre_gelu, which tells which GELU cuBLASLt computes); then timed with CUDA events: 3 warm-up calls, then the median
// of --reps (>= 10) runs of back-to-back calls (~1 ms each), ours then cuBLASLt on one stream.
// Usage: bench_gemm_cuda [--model gpt2-124m|llama-1b|all] [--tokens 8192] [--reps 10]
//                        [--write-table PATH] [--report PATH]
//   --write-table PATH   the autotune table (gemm_table.hpp) for GemmDispatch: per shape the faster
//                        implementation among those that ran and agreed with cuBLASLt
//   --report PATH        the same figures as a markdown report
// Without a CUDA device it prints one line starting "SKIPPED:" and exits 0. About a minute on H100.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cublaslt_gemm.hpp"
#include "backend/cuda/gemm_dispatch.hpp"
#include "backend/cuda/gemm_table.hpp"
#include "nuri/error.hpp"
#include "nuri/rng.hpp"

namespace {

using nuri::cuda::GemmEpilogue;

// Throws std::runtime_error naming the call, file:line and the CUDA error.
#define BENCH_CUDA(call)                                                                        \
  do {                                                                                          \
    const cudaError_t bench_e_ = (call);                                                        \
    if (bench_e_ != cudaSuccess) {                                                              \
      std::ostringstream bench_m_;                                                              \
      bench_m_ << #call << " failed at " << __FILE__ << ":" << __LINE__ << ": "                 \
               << cudaGetErrorName(bench_e_) << " (" << cudaGetErrorString(bench_e_) << ")";    \
      throw std::runtime_error(bench_m_.str());                                                 \
    }                                                                                           \
  } while (0)

struct Linear {
  const char* model;
  const char* name;
  int IC, OC;
  GemmEpilogue fwd_epilogue;
};

const Linear kLinears[] = {
    {"gpt2-124m", "qkv", 768, 3 * 768, GemmEpilogue::bias},
    {"gpt2-124m", "attn_proj", 768, 768, GemmEpilogue::bias},
    {"gpt2-124m", "fc", 768, 4 * 768, GemmEpilogue::bias_gelu},
    {"gpt2-124m", "fc_proj", 4 * 768, 768, GemmEpilogue::bias},
    {"gpt2-124m", "lm_head", 768, 50257, GemmEpilogue::none},
    {"llama-1b", "qkv", 2048, 2048 + 2 * 8 * 64, GemmEpilogue::none},
    {"llama-1b", "o_proj", 2048, 2048, GemmEpilogue::none},
    {"llama-1b", "gate_up", 2048, 2 * 8192, GemmEpilogue::none},
    {"llama-1b", "down", 8192, 2048, GemmEpilogue::none},
    {"llama-1b", "lm_head", 2048, 128256, GemmEpilogue::none},
};

struct Product {
  const char* kind;  // fwd / dinp / dW
  bool ta, tb;
  int M, N, K;
  float beta;
  GemmEpilogue epilogue;
};

std::vector<Product> products_of(const Linear& l, int tokens) {
  return {{"fwd", false, true, tokens, l.OC, l.IC, 0.0f, l.fwd_epilogue},
          {"dinp", false, false, tokens, l.IC, l.OC, 0.0f, GemmEpilogue::none},
          {"dW", true, false, l.OC, l.IC, tokens, 1.0f, GemmEpilogue::none}};
}

// A device allocation, freed on scope exit.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) {
    if (n) BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (ptr) (void)cudaFree(ptr);  // nothing useful to do with an error while unwinding
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Random values, generated once on the host and tiled over device buffers (a period of 2^24 - 3
// elements, so that consecutive rows of any matrix here see different values).
constexpr size_t kPattern = (size_t(1) << 24) - 3;
std::vector<__nv_bfloat16> g_pattern_bf16;
std::vector<float> g_pattern_f32;

void make_patterns() {
  nuri::Rng rng(1234);
  g_pattern_bf16.resize(kPattern);
  g_pattern_f32.resize(kPattern);
  for (size_t i = 0; i < kPattern; ++i) {
    const float x = float(rng.normal() * 0.5);
    g_pattern_bf16[i] = __float2bfloat16(x);
    g_pattern_f32[i] = x;
  }
}

template <typename T>
void fill(T* dev, size_t count, const std::vector<T>& pattern, size_t offset) {
  for (size_t done = 0; done < count;) {
    const size_t start = (offset + done) % pattern.size();
    const size_t n = std::min(count - done, pattern.size() - start);
    BENCH_CUDA(cudaMemcpy(dev + done, pattern.data() + start, n * sizeof(T), cudaMemcpyHostToDevice));
    done += n;
  }
  // From pageable memory cudaMemcpy may return before the DMA lands, and the benchmark's stream
  // is non-blocking (it does not wait for the legacy stream): finish the copies here.
  BENCH_CUDA(cudaDeviceSynchronize());
}

// An even sample of the rows of a device (M,N) fp32 matrix with row stride ld: every step-th
// row, at most ~16M elements in all.
std::vector<float> sample_rows(const float* dev, int M, int N, int ld) {
  const size_t total = size_t(M) * N, limit = size_t(1) << 24;
  const size_t step = std::max<size_t>(1, (total + limit - 1) / limit);
  const size_t rows = (size_t(M) + step - 1) / step;
  std::vector<float> host(rows * N);
  BENCH_CUDA(cudaMemcpy2D(host.data(), N * sizeof(float), dev, step * ld * sizeof(float), N * sizeof(float), rows,
                          cudaMemcpyDeviceToHost));
  return host;
}

// max |got - want| / max |want|; NaN if any element of got is NaN (an element not written).
double max_rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return NAN;
    diff = std::max(diff, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// max |c - gelu(pre)| over the elements (absolute: the two GELUs differ by ~1e-4 around |x| ~ 2,
// far below max |C|, so a relative figure would not tell them apart).
template <typename Gelu>
double max_gelu_error(const std::vector<float>& c, const std::vector<float>& pre, Gelu gelu) {
  double worst = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    const double d = std::abs(double(c[i]) - gelu(double(pre[i])));
    if (std::isnan(d)) return NAN;
    worst = std::max(worst, d);
  }
  return worst;
}

// Time per call in ms of `launch`: 3 warm-up calls, then the median over `reps` runs, each run
// `inner` calls back to back between two events (inner: enough calls for ~1 ms, so that the
// host's enqueue time of a short product does not count as GPU time). -1 if a call fails.
template <typename Launch>
double median_ms(Launch&& launch, cudaStream_t stream, int reps) {
  for (int i = 0; i < 3; ++i)
    if (launch() != cudaSuccess) return -1;
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  auto timed = [&](int calls) -> float {
    BENCH_CUDA(cudaEventRecord(start, stream));
    bool failed = false;
    for (int c = 0; c < calls && !failed; ++c) failed = launch() != cudaSuccess;
    BENCH_CUDA(cudaEventRecord(stop, stream));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return failed ? -1.0f : ms;
  };
  const float one = timed(1);
  const int inner = one > 0 ? std::clamp(int(std::ceil(1.0 / one)), 1, 200) : 1;
  std::vector<float> ms;
  for (int r = 0; r < reps && one > 0; ++r) {
    const float t = timed(inner);
    if (t < 0) {
      ms.clear();
      break;
    }
    ms.push_back(t / float(inner));
  }
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  if (ms.empty()) return -1;
  std::sort(ms.begin(), ms.end());
  return double(ms[ms.size() / 2]);
}

// Ours and cuBLASLt agree when max |ours - cuBLASLt| / max |cuBLASLt| <= this: both round the
// same bf16 inputs and accumulate in fp32, in different orders (about 1e-6 expected).
constexpr double kTolerance = 1e-3;

struct Result {
  const Linear* linear = nullptr;
  Product p{};
  double ours_tflops = 0, lt_tflops = 0;  // 0: that implementation refused or failed
  bool compared = false;                  // both ran once, so rel_error was computed
  double rel_error = NAN;                 // ours vs cuBLASLt (C, and pre_gelu where stored); NaN if
                                          // either left NaN (an element unwritten, or C read at beta 0)
  double gelu_tanh_error = NAN;  // bias_gelu: max |C_lt - gelu_tanh(pre_lt)|
  double gelu_erf_error = NAN;   // bias_gelu: max |C_lt - gelu_erf(pre_lt)|
  // cuBLASLt's GELU is the tanh one (ours) when its C is clearly closer to it than to erf's.
  bool lt_gelu_is_tanh() const { return gelu_tanh_error < 0.25 * gelu_erf_error; }
  std::string ours_error, lt_error;
  bool agrees() const { return compared && rel_error <= kTolerance; }
  bool mismatch() const { return compared && !(rel_error <= kTolerance); }
};

Result measure(const Linear& l, const Product& p, nuri::cuda::CublasLtGemm& lt, cudaStream_t stream, int reps) {
  Result r;
  r.linear = &l;
  r.p = p;
  const int a_rows = p.ta ? p.K : p.M, lda = p.ta ? p.M : p.K;
  const int b_rows = p.tb ? p.N : p.K, ldb = p.tb ? p.K : p.N;
  const int ldc = p.N;
  const size_t c_count = size_t(p.M) * ldc;
  DeviceBuffer<__nv_bfloat16> A(size_t(a_rows) * lda), B(size_t(b_rows) * ldb);
  DeviceBuffer<float> C(c_count), C0(p.beta != 0.0f ? c_count : 0);
  const bool with_bias = p.epilogue != GemmEpilogue::none;
  const bool with_pre = p.epilogue == GemmEpilogue::bias_gelu;
  DeviceBuffer<float> bias(with_bias ? size_t(p.N) : 0), pre(with_pre ? c_count : 0);
  fill(A.ptr, A.count, g_pattern_bf16, 0);
  fill(B.ptr, B.count, g_pattern_bf16, 7777777);
  if (C0.ptr) fill(C0.ptr, C0.count, g_pattern_f32, 12345);
  if (bias.ptr) fill(bias.ptr, bias.count, g_pattern_f32, 999);

  auto ours = [&]() {
    return nuri::cuda::gemm_bf16(p.ta, p.tb, p.M, p.N, p.K, 1.0f, A.ptr, lda, B.ptr, ldb, p.beta, C.ptr, ldc,
                                 bias.ptr, p.epilogue, pre.ptr, stream);
  };
  auto cublaslt = [&]() {
    return lt.run(p.ta, p.tb, p.M, p.N, p.K, 1.0f, A.ptr, lda, B.ptr, ldb, p.beta, C.ptr, ldc, bias.ptr, p.epilogue,
                  pre.ptr, stream);
  };
  // One checked call: C reset (C0 for beta = 1, NaN otherwise: an unwritten element shows).
  auto checked_call = [&](auto&& launch, std::string& error, std::vector<float>& c_out, std::vector<float>& pre_out) {
    if (C0.ptr) {
      BENCH_CUDA(cudaMemcpyAsync(C.ptr, C0.ptr, c_count * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    } else {
      BENCH_CUDA(cudaMemsetAsync(C.ptr, 0xff, c_count * sizeof(float), stream));
    }
    if (pre.ptr) BENCH_CUDA(cudaMemsetAsync(pre.ptr, 0xff, c_count * sizeof(float), stream));
    const cudaError_t e = launch();
    if (e != cudaSuccess) {
      error = cudaGetErrorName(e);
      return false;
    }
    BENCH_CUDA(cudaStreamSynchronize(stream));
    c_out = sample_rows(C.ptr, p.M, p.N, ldc);
    if (pre.ptr) pre_out = sample_rows(pre.ptr, p.M, p.N, ldc);
    return true;
  };
  std::vector<float> c_ours, pre_ours, c_lt, pre_lt;
  const bool ours_ok = checked_call(ours, r.ours_error, c_ours, pre_ours);
  const bool lt_ok = checked_call(cublaslt, r.lt_error, c_lt, pre_lt);
  if (!lt_ok) r.lt_error += ": " + lt.last_error();
  if (ours_ok && lt_ok) {
    r.compared = true;
    r.rel_error = max_rel_error(c_ours, c_lt);
    if (with_pre) r.rel_error = std::max(r.rel_error, max_rel_error(pre_ours, pre_lt));
  }
  if (lt_ok && with_pre) {
    r.gelu_tanh_error = max_gelu_error(c_lt, pre_lt, gelu_tanh);
    r.gelu_erf_error = max_gelu_error(c_lt, pre_lt, gelu_erf);
  }

  const double flops = 2.0 * p.M * p.N * double(p.K);
  if (ours_ok) {
    const double ms = median_ms(ours, stream, reps);
    if (ms > 0) r.ours_tflops = flops / (ms * 1e-3) / 1e12;
    else r.ours_error = "failed while timed";
  }
  if (lt_ok) {
    const double ms = median_ms(cublaslt, stream, reps);
    if (ms > 0) r.lt_tflops = flops / (ms * 1e-3) / 1e12;
    else r.lt_error = "failed while timed: " + lt.last_error();
  }
  return r;
}

// The table's choice: ours only where it ran, agreed with cuBLASLt and was faster.
nuri::cuda::GemmImpl choice_of(const Result& r) {
  if (r.ours_tflops > 0 && (r.lt_tflops <= 0 || (r.agrees() && r.ours_tflops > r.lt_tflops)))
    return nuri::cuda::GemmImpl::ours;
  return nuri::cuda::GemmImpl::cublaslt;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "bench_gemm_cuda: %s\nusage: bench_gemm_cuda [--model gpt2-124m|llama-1b|all] [--tokens N] "
               "[--reps N>=10] [--write-table PATH] [--report PATH]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "all", table_path, report_path;
  int tokens = 8192, reps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      usage("GEMM TFLOP/s of gemm_bf16 against cuBLASLt at the model shapes");
      return 0;
    }
    if (!has_value) return usage(("missing value after " + arg).c_str());
    const std::string value = argv[++i];
    if (arg == "--model") model = value;
    else if (arg == "--tokens") tokens = std::atoi(value.c_str());
    else if (arg == "--reps") reps = std::atoi(value.c_str());
    else if (arg == "--write-table") table_path = value;
    else if (arg == "--report") report_path = value;
    else return usage(("unknown option " + arg).c_str());
  }
  if (model != "all" && model != "gpt2-124m" && model != "llama-1b")
    return usage(("unknown model '" + model + "' (gpt2-124m, llama-1b or all)").c_str());
  if (tokens < 1) return usage("--tokens must be >= 1");
  if (reps < 10) return usage("--reps must be >= 10 (the figure is a median)");

  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device here (cudaGetDeviceCount: %s); run bench_gemm_cuda on a GPU host\n",
                e != cudaSuccess ? cudaGetErrorName(e) : "0 devices");
    return 0;
  }

  try {
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
    const std::string gpu = prop.name, when = utc_now();
    std::printf("GPU: %s (sm_%d%d), %s; tokens %d, median of %d timed runs (~1 ms of back-to-back calls each)\n", gpu.c_str(), prop.major,
                prop.minor, when.c_str(), tokens, reps);
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    nuri::cuda::CublasLtGemm lt;
    if (!lt.ok()) std::printf("cuBLASLt unavailable: %s\n", lt.last_error().c_str());
    make_patterns();

    std::printf("%-10s %-10s %-5s %7s %7s %7s %-9s %10s %10s %8s %10s\n", "model", "linear", "prod", "M", "N", "K",
                "epilogue", "ours TF/s", "Lt TF/s", "ours/Lt", "max rel");
    std::vector<Result> results;
    for (const Linear& l : kLinears) {
      if (model != "all" && model != l.model) continue;
      for (const Product& p : products_of(l, tokens)) {
        Result r = measure(l, p, lt, stream, reps);
        const std::string ratio = r.ours_tflops > 0 && r.lt_tflops > 0 ? fmt("%.2f", r.ours_tflops / r.lt_tflops) : "-";
        std::printf("%-10s %-10s %-5s %7d %7d %7d %-9s %10s %10s %8s %10s%s\n", l.model, l.name, p.kind, p.M, p.N, p.K,
                    nuri::cuda::gemm_epilogue_name(p.epilogue),
                    r.ours_tflops > 0 ? fmt("%.1f", r.ours_tflops).c_str() : "n/a",
                    r.lt_tflops > 0 ? fmt("%.1f", r.lt_tflops).c_str() : "n/a", ratio.c_str(),
                    r.compared ? fmt("%.2e", r.rel_error).c_str() : "-", r.mismatch() ? "  MISMATCH" : "");
        if (!r.ours_error.empty()) std::printf("    ours: %s\n", r.ours_error.c_str());
        if (!r.lt_error.empty()) std::printf("    cuBLASLt: %s\n", r.lt_error.c_str());
        if (!std::isnan(r.gelu_tanh_error))
          std::printf("    cuBLASLt's C vs GELU of its pre_gelu: max abs %.2e (tanh), %.2e (erf): %s\n",
                      r.gelu_tanh_error, r.gelu_erf_error,
                      r.lt_gelu_is_tanh() ? "the tanh GELU, as ours"
                                           : "not clearly the tanh GELU (the two differ by <= 4.7e-4): the "
                                             "table keeps bias_gelu on ours");
        std::fflush(stdout);
        results.push_back(r);
      }
    }
    BENCH_CUDA(cudaStreamSynchronize(stream));

    int mismatches = 0;
    for (const Result& r : results) mismatches += r.mismatch();
    if (mismatches)
      std::printf("WARNING: %d product(s) where ours and cuBLASLt differ by more than %.0e: ours is not chosen there\n",
                  mismatches, kTolerance);

    if (!table_path.empty()) {
      nuri::cuda::GemmTable table;
      table.set_source("nuri GEMM autotune table: " + gpu + ", " + when + ", bench_gemm_cuda --tokens " +
                       std::to_string(tokens));
      for (const Result& r : results) {
        if (r.ours_tflops <= 0 && r.lt_tflops <= 0) continue;  // neither ran: nothing to say
        nuri::cuda::GemmImpl impl = choice_of(r);
        // cuBLASLt's bias_gelu is only kept when its GELU is the tanh one (checked above).
        if (r.p.epilogue == GemmEpilogue::bias_gelu && !r.lt_gelu_is_tanh() && r.ours_tflops > 0)
          impl = nuri::cuda::GemmImpl::ours;
        table.set({r.p.ta, r.p.tb, r.p.M, r.p.N, r.p.K, nuri::cuda::gemm_epilogue_name(r.p.epilogue)},
                  {impl, r.ours_tflops, r.lt_tflops});
      }
      table.save(table_path);
      nuri::cuda::GemmDispatch dispatch(stream, table_path);  // reads it back, as training will
      std::printf("wrote %s (%zu shapes); %s\n", table_path.c_str(), table.size(), dispatch.describe().c_str());
    }

    if (!report_path.empty()) {
      std::ostringstream md;
      md << "# GEMM: ours (gemm_bf16) vs cuBLASLt\n\n"
         << "GPU: " << gpu << " (sm_" << prop.major << prop.minor << "), " << when << ". bf16 A/B, fp32 C, fp32 "
         << "accumulation; tokens = " << tokens << "; per-call time = median of " << reps
         << " CUDA-event-timed runs of ~1 ms of back-to-back calls, after 3 warm-up calls.\n"
         << "max rel = max |ours - cuBLASLt| / max |cuBLASLt| over the output (an even row sample when large).\n\n"
         << "| model | linear | product | M | N | K | epilogue | ours TFLOP/s | cuBLASLt TFLOP/s | ours/cuBLASLt | max rel "
            "| table choice |\n|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|\n";
      for (const Result& r : results) {
        md << "| " << r.linear->model << " | " << r.linear->name << " | " << r.p.kind << " | " << r.p.M << " | "
           << r.p.N << " | " << r.p.K << " | " << nuri::cuda::gemm_epilogue_name(r.p.epilogue) << " | "
           << (r.ours_tflops > 0 ? fmt("%.1f", r.ours_tflops) : "n/a") << " | "
           << (r.lt_tflops > 0 ? fmt("%.1f", r.lt_tflops) : "n/a") << " | "
           << (r.ours_tflops > 0 && r.lt_tflops > 0 ? fmt("%.2f", r.ours_tflops / r.lt_tflops) : "-") << " | "
           << (r.compared ? fmt("%.2e", r.rel_error) + (r.mismatch() ? " MISMATCH" : "") : std::string("-"))
           << " | "
           << nuri::cuda::gemm_impl_name(choice_of(r)) << " |\n";
      }
      for (const Result& r : results) {
        if (!r.ours_error.empty() || !r.lt_error.empty())
          md << "\n- " << r.linear->model << " " << r.linear->name << " " << r.p.kind << ": "
             << (r.ours_error.empty() ? "" : "ours: " + r.ours_error + ". ")
             << (r.lt_error.empty() ? "" : "cuBLASLt: " + r.lt_error);
        if (!std::isnan(r.gelu_tanh_error))
          md << "\n- " << r.linear->model << " " << r.linear->name << " " << r.p.kind
             << ": cuBLASLt's C against the GELU of its pre_gelu, max abs difference " << fmt("%.2e", r.gelu_tanh_error)
             << " (tanh GELU), " << fmt("%.2e", r.gelu_erf_error) << " (erf GELU): "
             << (r.lt_gelu_is_tanh() ? "tanh, as ours" : "not clearly tanh, the table keeps bias_gelu on ours");
      }
      md << "\n";
      std::ofstream out(report_path);
      out << md.str();
      if (!out.good()) throw std::runtime_error("cannot write the report '" + report_path + "'");
      std::printf("wrote %s\n", report_path.c_str());
    }
    BENCH_CUDA(cudaStreamDestroy(stream));
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_gemm_cuda: error: %s\n", ex.what());
    return 1;
  }
  return 0;
}

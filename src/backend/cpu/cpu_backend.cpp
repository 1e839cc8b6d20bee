// CpuBackend: construction, memory and the elementwise vector ops (add, scale, sum_squares).
//   add:         out[i] = a[i] + b[i]            (n)   out may alias a or b
//   scale:       x[i] *= s                       (n)
//   sum_squares: sum_i x[i]^2, accumulated in double
// Threading: OpenMP static schedule over i, only above kParallelMin elements (below that the
// fork/join costs more than the loop). The thread count is set once, in the constructor, with
// omp_set_num_threads; OpenBLAS (its OpenMP build) reads the same setting, so there is one pool.
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <cblas.h>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#include "nuri/error.hpp"

namespace nuri {

namespace {

// Elementwise loops shorter than this run on one thread.
constexpr size_t kParallelMin = size_t(1) << 15;

// A positive integer from an environment variable, or 0 when it is unset or not one.
// OMP_NUM_THREADS may be a comma list ("8,2" for nested levels): the first entry is ours.
int env_positive_int(const char* name) {
  const char* s = std::getenv(name);
  if (!s || !*s) return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || v <= 0 || v > 1 << 20) return 0;
  return static_cast<int>(v);
}

}  // namespace

int default_cpu_threads() {
  // An explicit OMP_NUM_THREADS is the user's (or the launcher's) decision for this process.
  if (const int omp = env_positive_int("OMP_NUM_THREADS")) return omp;
  // The node's cores shared among the ranks on this node. hardware_concurrency counts the whole
  // node; omp_get_num_procs only what our affinity mask allows, which caps it when a launcher
  // binds each rank to its own cores.
  int node_cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (node_cpus <= 0) node_cpus = omp_get_num_procs();
  int local_ranks = 1;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const int v = env_positive_int(var)) {
      local_ranks = v;
      break;
    }
  }
  const int share = std::min(node_cpus / local_ranks, omp_get_num_procs());
  return std::max(1, share);
}

namespace {
// Keep freed blocks in the process's heap instead of handing them back to the kernel: the GEMM
// libraries allocate packing buffers per call, and with glibc's defaults each of those larger
// than the mmap threshold is mapped, zero-filled by the kernel and unmapped again every call
// (clear_page was 15% of a gpt2-124m step in perf; these settings made the step ~6% faster).
// Process-wide and idempotent; glibc only.
void keep_freed_memory() {
#ifdef __GLIBC__
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);   // the most glibc allows: larger blocks still mmap
    mallopt(M_TRIM_THRESHOLD, 1 << 30);    // do not give the heap's top back below 1 GiB free
    mallopt(M_TOP_PAD, 64 << 20);          // grow the heap in 64 MiB steps
    return true;
  }();
  (void)done;
#endif
}
}  // namespace

CpuBackend::CpuBackend(int threads) : threads_(threads) {
  NURI_CHECK(threads >= 1, config, "cpu backend",
             "thread count must be at least 1, got " << threads
                                                     << " (use 0 in make_backend for the default)");
  omp_set_num_threads(threads);
  keep_freed_memory();
  // The OpenMP build of OpenBLAS follows omp_get_max_threads, but set it explicitly too so that a
  // BLAS initialised earlier with another count does not keep it.
  openblas_set_num_threads(threads);
}

std::string CpuBackend::describe() const {
  const cpu::GemmLibrary lib = cpu::gemm_library();
  return "cpu with " + std::to_string(threads_) + " threads, GEMM on " +
         cpu::gemm_library_name(lib) + " (" + cpu::gemm_library_reason() + ")";
}

float* CpuBackend::alloc(size_t count) {
  // aligned_alloc needs a size that is a multiple of the alignment; never ask for 0 bytes.
  constexpr size_t kAlign = 64;
  NURI_CHECK(count <= (SIZE_MAX - kAlign) / sizeof(float), backend, "cpu alloc",
             "cannot allocate " << count << " floats: the size overflows");
  size_t bytes = std::max<size_t>(count * sizeof(float), 1);
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  NURI_CHECK(p != nullptr, backend, "cpu alloc",
             "out of memory allocating " << bytes << " bytes (" << count
                                         << " floats); reduce batch_size or the model size");
  float* f = static_cast<float*>(p);
  zero(f, count);
  return f;
}

void CpuBackend::free(float* ptr) { std::free(ptr); }

void CpuBackend::zero(float* ptr, size_t count) {
  if (count < kParallelMin) {
    if (count) std::memset(ptr, 0, count * sizeof(float));
    return;
  }
#pragma omp parallel
  {
    // Each thread clears one contiguous slice (and so first-touches its own pages).
    const size_t nt = size_t(omp_get_num_threads()), tid = size_t(omp_get_thread_num());
    const size_t lo = count * tid / nt, hi = count * (tid + 1) / nt;
    std::memset(ptr + lo, 0, (hi - lo) * sizeof(float));
  }
}

void CpuBackend::copy(float* dst, const float* src, size_t count) {
  if (dst == src || count == 0) return;
  const bool overlap = dst < src + count && src < dst + count;
  if (count < kParallelMin || overlap) {
    std::memmove(dst, src, count * sizeof(float));
    return;
  }
#pragma omp parallel
  {
    const size_t nt = size_t(omp_get_num_threads()), tid = size_t(omp_get_thread_num());
    const size_t lo = count * tid / nt, hi = count * (tid + 1) / nt;
    std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
  }
}

void CpuBackend::add(float* out, const float* a, const float* b, size_t n) {
  // No restrict here: out may alias a or b, which is fine for an elementwise loop read-before-write.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void CpuBackend::scale(float* x, float s, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) x[i] *= s;
}

double CpuBackend::sum_squares(const float* x, size_t n) {
  double acc = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    const double v = x[i];
    acc += v * v;
  }
  return acc;
}

}  // namespace nuri

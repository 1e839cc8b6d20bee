#pragma once
// SIMT emulation: runs kernels written in a restricted CUDA subset as host C++ on the CPU, so the
// kernels in kernels/cuda are checked against the CPU backend where there is no GPU (DESIGN.md,
// "Where there is no GPU"). Included by kernels/cuda/common.cuh when NURI_CUDA_EMU is defined;
// never by nvcc.
//
// Execution model: one host thread per CUDA thread of a block, from a pool of persistent workers
// (grown to the largest block launched, at most 1024; creating a thread per CUDA thread per block
// cost more than the kernels themselves). Blocks run one after another (grid order x, then y,
// then z); the threads of a block run concurrently. Launches are serialized by a process-wide
// mutex, so at most one block is live at a time.
//   __syncthreads()          a block-wide barrier (mutex + condition variable). A thread that has
//                            returned from the kernel no longer counts (as on sm_70+).
//   __shared__               `static`: one instance per kernel (per template instantiation),
//                            shared by the threads of the live block. Not zeroed between blocks
//                            (a kernel must not rely on that, as on a GPU).
//   dynamic shared memory    NURI_DYNAMIC_SHARED(type, name) (common.cuh): a per-block buffer of
//                            the launch's shared_bytes, filled with 0xFF bytes (NaN) first.
//   warps                    lanes = linear thread id % 32. __shfl_sync, __shfl_xor_sync,
//                            __shfl_up_sync, __shfl_down_sync (with width), __syncwarp. The mask
//                            must name exactly the warp's live lanes (full warps, no partial-mask
//                            shuffles under divergence); anything else aborts with a message.
//   atomics                  atomicAdd on float, double, int, unsigned (std::atomic_ref).
//   math                     expf, tanhf, sqrtf, ... from <cmath>; rsqrtf, __expf, __fdividef,
//                            __ldg defined here (exact host versions: the GPU's differ by ulps).
//   bf16                     __nv_bfloat16 with __float2bfloat16 / __float2bfloat16_rn (round to
//                            nearest even, NaN kept quiet) and __bfloat162float.
//   launch                   emu::launch(kernel, grid, block, shared_bytes, args...); records the
//                            kernel's name when launched through launch_named (NURI_LAUNCH does).
//   wmma                     nvcuda::wmma m16n16k16 with bf16 (or fp32 storage) inputs and fp32
//                            accumulators: fragment, fill_fragment, load_matrix_sync,
//                            store_matrix_sync, mma_sync. Each emulated thread holds the WHOLE tile
//                            (num_elements = 256, in row-major order), so element-wise loops over
//                            x[0, num_elements) work as on a GPU, but code that assumes which
//                            elements a lane holds does not (CUDA leaves that unspecified too).
//                            The pointer (32-byte) and ldm (16 bytes) alignment rules are checked.
// Streams: see runtime.hpp (a launch on the null stream runs at once; on a created stream it is
// queued until the host synchronizes). Not emulated: cooperative groups, inline PTX, texture memory, shuffles with partial masks, races (a missing __syncthreads may
// pass here by luck). A barrier that waits more than 60 s (a divergent __syncthreads or shuffle)
// aborts with the barrier's name instead of hanging.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <mutex>
#include <semaphore>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static

// ---- built-in vector types and indices ----
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
struct float2 {
  float x, y;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline constexpr int warpSize = 32;

// ---- the runtime API subset the launchers use ----
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 719 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    default: return "unspecified launch failure";
  }
}
// Launches are synchronous and checked when they run, so there is no pending error to report.
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

namespace emu {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "emu: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A reusable barrier whose membership shrinks as threads leave the kernel (drop()).
class Barrier {
 public:
  explicit Barrier(int expected = 0) : expected_(expected) {}
  void reset(int expected) {
    expected_ = expected;
    arrived_ = 0;
  }
  void arrive_and_wait(const char* what) {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t gen = generation_;
    if (++arrived_ == expected_) {
      release();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != gen; }))
      die(std::string("deadlock at ") + what + " (a thread never reached it: divergent barrier?)");
  }
  void drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  int expected_ = 0, arrived_ = 0;
  uint64_t generation_ = 0;
};

struct Warp {
  Barrier barrier;
  unsigned lanes = 0;                // lanes that exist in this warp (the last may be partial)
  std::atomic<unsigned> exited{0};  // lanes that have returned from the kernel
  uint64_t slots[32] = {};
};

struct Block {
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<std::byte> dynamic_shared;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local unsigned tl_linear = 0;  // linear thread id within the block

inline unsigned lane_id() { return tl_linear % 32; }
inline Warp& current_warp() { return *tl_block->warps[tl_linear / 32]; }
inline void* dynamic_shared() { return tl_block->dynamic_shared.data(); }  // 16-byte aligned (operator new)

enum class Shuffle { idx, up, down, bfly };

template <typename T>
T shuffle(Shuffle kind, unsigned mask, T var, int arg, int width, const char* name) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of at most 8 bytes");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    die(std::string(name) + ": width must be a power of two <= 32");
  Warp& w = current_warp();
  const unsigned lane = lane_id();
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  w.slots[lane] = bits;
  w.barrier.arrive_and_wait(name);
  const unsigned live = w.lanes & ~w.exited.load();
  if (mask != live) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "%s: mask 0x%08x but the warp's live lanes are 0x%08x (the emulator supports "
                  "full-warp shuffles only; blockDim must fill whole warps)",
                  name, mask, live);
    die(buf);
  }
  const int base = int(lane) & ~(width - 1);
  int src = int(lane);
  switch (kind) {
    case Shuffle::idx: src = base + (arg & (width - 1)); break;
    case Shuffle::up: src = int(lane) - arg >= base ? int(lane) - arg : int(lane); break;
    case Shuffle::down: src = int(lane) + arg < base + width ? int(lane) + arg : int(lane); break;
    case Shuffle::bfly: {
      const int t = int(lane) ^ arg;
      src = t < base + width ? t : int(lane);  // later groups are out of reach: own value
      break;
    }
  }
  T out;
  std::memcpy(&out, &w.slots[src], sizeof(T));
  w.barrier.arrive_and_wait(name);  // nobody overwrites a slot before all have read
  return out;
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// The persistent workers that play a block's threads: run(n, body) has workers 0..n-1 each call
// body(t) for their index t, concurrently, and returns when all have. Called under launch_mutex.
class WorkerPool {
 public:
  void run(unsigned n, const std::function<void(unsigned)>& body) {
    while (workers_.size() < n) {
      auto w = std::make_unique<Worker>();
      Worker* raw = w.get();
      const unsigned index = unsigned(workers_.size());
      raw->thread = std::thread([this, raw, index] { loop(*raw, index); });
      raw->thread.detach();  // the pool lives until the process ends (never destroyed)
      workers_.push_back(std::move(w));
    }
    body_ = &body;
    remaining_.store(n);
    for (unsigned t = 0; t < n; ++t) workers_[t]->go.release();
    done_.acquire();
  }

 private:
  struct Worker {
    std::binary_semaphore go{0};
    std::thread thread;
  };
  void loop(Worker& w, unsigned index) {
    for (;;) {
      w.go.acquire();
      (*body_)(index);
      if (remaining_.fetch_sub(1) == 1) done_.release();
    }
  }
  std::vector<std::unique_ptr<Worker>> workers_;
  const std::function<void(unsigned)>* body_ = nullptr;
  std::atomic<unsigned> remaining_{0};
  std::binary_semaphore done_{0};
};
inline WorkerPool& worker_pool() {
  static WorkerPool* pool = new WorkerPool;  // leaked: its workers block until the process exits
  return *pool;
}

// Names of the kernels launched so far (launch_named), for coverage checks.
inline std::set<std::string>& launched_kernels() {
  static std::set<std::string> names;
  return names;
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            Args&&... args) {
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024) die("launch: block must have 1..1024 threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) die("launch: empty grid");
  std::lock_guard<std::mutex> lock(launch_mutex());
  // Arguments are converted to the kernel's parameter types once, like a CUDA launch copies them.
  auto run = [&](std::decay_t<Params>... params) {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          Block blk;
          blk.barrier.reset(int(nthreads));
          for (unsigned w = 0; w * 32 < nthreads; ++w) {
            auto warp = std::make_unique<Warp>();
            const unsigned n = std::min(32u, nthreads - w * 32);
            warp->lanes = n == 32 ? 0xffffffffu : (1u << n) - 1;
            warp->barrier.reset(int(n));
            blk.warps.push_back(std::move(warp));
          }
          blk.dynamic_shared.assign(shared_bytes, std::byte{0xFF});
          const std::function<void(unsigned)> body = [&](unsigned t) {
            tl_block = &blk;
            tl_linear = t;
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            blockIdx = dim3(bx, by, bz);
            blockDim = block;
            gridDim = grid;
            kernel(params...);
            Warp& w = current_warp();
            w.exited.fetch_or(1u << lane_id());
            w.barrier.drop();
            blk.barrier.drop();
            tl_block = nullptr;
          };
          worker_pool().run(nthreads, body);
        }
  };
  run(std::forward<Args>(args)...);
}

// Adds a kernel's name (without template arguments, or the parentheses around a template with
// several, which NURI_LAUNCH needs for their commas) to launched_kernels().
inline void record_launch(const char* name) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  std::string base(name);
  if (!base.empty() && base.front() == '(') base.erase(0, 1);
  base = base.substr(0, base.find('<'));  // a template's name without its arguments
  while (!base.empty() && base.back() == ' ') base.pop_back();
  launched_kernels().insert(base);
}

template <typename... Params, typename... Args>
void launch_named(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                  size_t shared_bytes, Args&&... args) {
  record_launch(name);
  launch(kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
}

}  // namespace emu

// ---- device intrinsics ----
inline void __syncthreads() { emu::tl_block->barrier.arrive_and_wait("__syncthreads"); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  (void)mask;
  emu::current_warp().barrier.arrive_and_wait("__syncwarp");
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return emu::shuffle(emu::Shuffle::idx, mask, var, src_lane, width, "__shfl_sync");
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return emu::shuffle(emu::Shuffle::up, mask, var, int(delta), width, "__shfl_up_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return emu::shuffle(emu::Shuffle::down, mask, var, int(delta), width, "__shfl_down_sync");
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return emu::shuffle(emu::Shuffle::bfly, mask, var, lane_mask, width, "__shfl_xor_sync");
}

template <typename T>
T atomicAdd(T* address, T val) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                    std::is_same_v<T, int> || std::is_same_v<T, unsigned>,
                "atomicAdd: float, double, int or unsigned");
  return std::atomic_ref<T>(*address).fetch_add(val);
}

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <typename T>
T __ldg(const T* p) {
  return *p;
}

// ---- bf16 ----
struct __nv_bfloat16 {
  uint16_t __x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 b;
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep the sign, make it quiet
    b.__x = uint16_t((u >> 16) | 0x0040u);
    return b;
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  b.__x = uint16_t(u >> 16);
  return b;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.__x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- warp matrix (WMMA) operations, m16n16k16 ----
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// One 16x16 tile per emulated thread: x[r * 16 + c] is element (r, c) of A (m, k), B (k, n) or the
// accumulator (m, n).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "emu: wmma m16n16k16 only");
  static constexpr int num_elements = 256;
  using element_type = T;
  T x[num_elements];
};

namespace detail {
inline float as_float(float v) { return v; }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
inline T from_float(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return __float2bfloat16_rn(v);
}
template <typename T>
void check_operand(const void* ptr, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0)
    emu::die(std::string(what) + ": pointer not 32-byte aligned (wmma needs 256-bit alignment)");
  if ((size_t(ldm) * sizeof(T)) % 16 != 0)
    emu::die(std::string(what) + ": ldm not a multiple of 16 bytes");
}
}  // namespace detail

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, T value) {
  for (auto& e : f.x) e = value;
}
template <typename Use, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, V value) {
  for (auto& e : f.x) e = detail::from_float<T>(float(value));
}

// A or B fragment from memory whose layout is the fragment's (row_major or col_major).
template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* ptr, unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "emu: a matrix_a/matrix_b fragment needs a row_major or col_major layout");
  detail::check_operand<T>(ptr, ldm, "wmma::load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = std::is_same_v<Layout, row_major> ? ptr[size_t(r) * ldm + c]
                                                          : ptr[size_t(c) * ldm + r];
}
// An accumulator fragment from memory of the given layout.
template <typename T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* ptr, unsigned ldm,
                      layout_t layout) {
  detail::check_operand<T>(ptr, ldm, "wmma::load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = layout == mem_row_major ? ptr[size_t(r) * ldm + c] : ptr[size_t(c) * ldm + r];
}
template <typename T>
void store_matrix_sync(T* ptr, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm,
                       layout_t layout) {
  detail::check_operand<T>(ptr, ldm, "wmma::store_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? ptr[size_t(r) * ldm + c] : ptr[size_t(c) * ldm + r]) = f.x[r * 16 + c];
}
// d = a b + c, fp32 accumulation (d may be c).
template <typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
              const fragment<accumulator, 16, 16, 16, TC>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = detail::as_float(c.x[m * 16 + n]);
      for (int k = 0; k < 16; ++k)
        acc += detail::as_float(a.x[m * 16 + k]) * detail::as_float(b.x[k * 16 + n]);
      out[m * 16 + n] = acc;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = detail::from_float<TC>(out[i]);
}
}  // namespace nvcuda::wmma

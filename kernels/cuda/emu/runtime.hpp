#pragma once
// The CUDA runtime API subset the cuda backend (src/backend/cuda) calls, emulated on the host, so
// the backend itself — not only its kernels — runs where there is no GPU (tests/cuda_emu trains a
// tiny model through it). Included after emu.hpp, in NURI_CUDA_EMU builds only.
//
// One emulated device ("emulated CUDA device", sm_90). Memory is host memory (aligned to 256 bytes
// like cudaMalloc). Errors are reported like the real API (cudaErrorInvalidValue for a null
// pointer or an unknown handle, cudaErrorMemoryAllocation).
//
// Streams are lazy, to make a missing synchronisation visible on the CPU: work issued on a created
// stream (kernels through NURI_LAUNCH, cudaMemcpyAsync, cudaMemsetAsync) is queued and runs only
// when the host waits for it (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize,
// cudaFree, cudaStreamDestroy). A host that reads a result without waiting sees the old values,
// as a GPU may show it. An event waits only for the work issued before it was recorded. Work on
// the null stream runs at once (the kernel tests use it). Copies follow the real API's rules for
// pageable host memory (anything cudaMalloc, cudaMallocManaged or cudaMallocHost did not return):
// from it, the source is read when the copy is issued; into it, the copy waits for the stream
// first. From page-locked memory (cudaMallocHost) the source is read when the copy runs, so a
// host that rewrites it too early is caught.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <new>
#include <tuple>

#include "emu.hpp"

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
inline constexpr cudaError_t cudaErrorMemoryAllocation = cudaError_t(2);
inline constexpr unsigned cudaStreamNonBlocking = 1u;
inline constexpr unsigned cudaEventDisableTiming = 2u;
inline constexpr unsigned cudaMemAttachGlobal = 1u;

struct CUstream_st {
  std::mutex mutex;
  std::deque<std::function<void()>> queued;  // issued, not yet run, in issue order
  uint64_t issued = 0;  // work items ever queued; those run are issued - queued.size()
};
struct CUevent_st {
  cudaStream_t stream = nullptr;  // where it was last recorded
  uint64_t position = 0;          // the stream's issued count then: the work it waits for
};
using cudaEvent_t = CUevent_st*;

namespace emu {

// Counters for tests that measure how often the host waits, since the process started:
// host_waits() counts every call that blocked the host while work was queued — the explicit
// synchronizations (stream, event, device) and the implicit ones (a copy into pageable memory,
// cudaFree, cudaStreamDestroy), each a round trip in which the device's queue runs dry; a wait
// that finds nothing queued is not counted. kernel_launches() counts NURI_LAUNCH calls.
inline std::atomic<uint64_t>& host_waits() {
  static std::atomic<uint64_t> n{0};
  return n;
}
inline std::atomic<uint64_t>& kernel_launches() {
  static std::atomic<uint64_t> n{0};
  return n;
}

// Runs the work queued on `stream` in order, up to the first `until` items ever issued (all of
// it by default), on the calling thread: the host thread that waits. One stream's work never runs
// on two threads at once as long as one thread uses the stream, as the cuda backend does.
// Returns whether there was any.
inline bool drain_once(cudaStream_t stream, uint64_t until = UINT64_MAX) {
  if (!stream) return false;
  bool ran = false;
  for (;;) {
    std::function<void()> work;
    {
      std::lock_guard<std::mutex> lock(stream->mutex);
      if (stream->queued.empty() || stream->issued - stream->queued.size() >= until) return ran;
      work = std::move(stream->queued.front());
      stream->queued.pop_front();
    }
    work();
    ran = true;
  }
}
// A host wait for `stream` (counted in host_waits() when work was queued).
inline void drain(cudaStream_t stream, uint64_t until = UINT64_MAX) {
  if (drain_once(stream, until)) ++host_waits();
}

inline void enqueue(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::mutex> lock(stream->mutex);
  stream->queued.push_back(std::move(work));
  ++stream->issued;
}

// The created streams (for cudaDeviceSynchronize) and the blocks cudaMalloc returned (start ->
// bytes), under one mutex.
struct RuntimeState {
  std::mutex mutex;
  std::set<cudaStream_t> streams;
  std::map<const char*, size_t> allocations;
};
inline RuntimeState& runtime_state() {
  static RuntimeState state;
  return state;
}
// A host wait for every stream (one count in host_waits() when any had work queued).
inline void drain_all() {
  std::vector<cudaStream_t> streams;
  {
    std::lock_guard<std::mutex> lock(runtime_state().mutex);
    streams.assign(runtime_state().streams.begin(), runtime_state().streams.end());
  }
  bool ran = false;
  for (cudaStream_t s : streams) ran = drain_once(s) || ran;
  if (ran) ++host_waits();
}
// True when p lies in a block from cudaMalloc/cudaMallocManaged ("device" memory); false for
// pageable host memory.
inline bool is_device_memory(const void* p) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(runtime_state().mutex);
  auto& blocks = runtime_state().allocations;
  auto it = blocks.upper_bound(c);
  if (it == blocks.begin()) return false;
  --it;
  return c < it->first + it->second;
}

// NURI_LAUNCH: records the kernel, then runs it now (null stream) or queues it on `stream` with
// its arguments converted to the kernel's parameter types (as a launch copies them).
template <typename... Params, typename... Args>
void launch_on(cudaStream_t stream, const char* name, void (*kernel)(Params...), dim3 grid,
               dim3 block, size_t shared_bytes, Args&&... args) {
  ++kernel_launches();
  if (!stream) {
    launch_named(name, kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
    return;
  }
  record_launch(name);
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  enqueue(stream, [=]() {
    std::apply([&](const auto&... p) { launch(kernel, grid, block, shared_bytes, p...); }, params);
  });
}

}  // namespace emu

struct cudaDeviceProp {
  char name[256];
  int major = 9, minor = 0;
  int multiProcessorCount = 1;
  size_t totalGlobalMem = size_t(1) << 34;
};

inline cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDevice(int* device) {
  if (!device) return cudaErrorInvalidValue;
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop || device != 0) return cudaErrorInvalidValue;
  *prop = cudaDeviceProp{};
  std::strcpy(prop->name, "emulated CUDA device");
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() {
  emu::drain_all();
  return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97, cudaDevAttrConcurrentManagedAccess = 89 };
// An H100's values: 227 KiB of shared memory per block; concurrent managed access.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value || device != 0) return cudaErrorInvalidValue;
  *value = attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 1;
  return cudaSuccess;
}

inline cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return cudaErrorInvalidValue;
  const size_t rounded = (bytes + 255) / 256 * 256;
  *ptr = bytes ? std::aligned_alloc(256, rounded) : nullptr;
  if (bytes && !*ptr) return cudaErrorMemoryAllocation;
  if (*ptr) {
    std::lock_guard<std::mutex> lock(emu::runtime_state().mutex);
    emu::runtime_state().allocations[static_cast<const char*>(*ptr)] = rounded;
  }
  return cudaSuccess;
}
inline cudaError_t cudaMallocManaged(void** ptr, size_t bytes, unsigned flags = cudaMemAttachGlobal) {
  (void)flags;
  return cudaMalloc(ptr, bytes);
}
// Page-locked host memory: like device memory here, a copy from it reads it when the copy runs.
inline cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); }
// Waits for the device first, as the real one does.
inline cudaError_t cudaFree(void* ptr) {
  emu::drain_all();
  if (ptr) {
    std::lock_guard<std::mutex> lock(emu::runtime_state().mutex);
    emu::runtime_state().allocations.erase(static_cast<const char*>(ptr));
  }
  std::free(ptr);
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* ptr) { return cudaFree(ptr); }  // here it waits for the device too
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t stream = nullptr) {
  (void)kind;
  if (bytes && (!dst || !src)) return cudaErrorInvalidValue;
  if (!bytes) return cudaSuccess;
  if (!stream) {
    std::memmove(dst, src, bytes);
  } else if (!emu::is_device_memory(dst)) {  // into pageable memory: returns when done
    emu::drain(stream);
    std::memmove(dst, src, bytes);
  } else if (!emu::is_device_memory(src)) {  // from pageable memory: staged at the call
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                      static_cast<const char*>(src) + bytes);
    emu::enqueue(stream, [=] { std::memcpy(dst, staged->data(), bytes); });
  } else {
    emu::enqueue(stream, [=] { std::memmove(dst, src, bytes); });
  }
  return cudaSuccess;
}
// The legacy default stream, which does not wait for non-blocking streams: copies at once.
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr) {
  if (bytes && !dst) return cudaErrorInvalidValue;
  if (!bytes) return cudaSuccess;
  if (stream)
    emu::enqueue(stream, [=] { std::memset(dst, value, bytes); });
  else
    std::memset(dst, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  (void)flags;
  if (!stream) return cudaErrorInvalidValue;
  *stream = new (std::nothrow) CUstream_st;
  if (!*stream) return cudaErrorMemoryAllocation;
  std::lock_guard<std::mutex> lock(emu::runtime_state().mutex);
  emu::runtime_state().streams.insert(*stream);
  return cudaSuccess;
}
// The queued work still runs (as on a GPU), before the handle goes.
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return cudaErrorInvalidValue;
  emu::drain(stream);
  {
    std::lock_guard<std::mutex> lock(emu::runtime_state().mutex);
    emu::runtime_state().streams.erase(stream);
  }
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  emu::drain(stream);
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  (void)flags;
  if (!event) return cudaErrorInvalidValue;
  *event = new (std::nothrow) CUevent_st;
  return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr) {
  if (!event) return cudaErrorInvalidValue;
  event->stream = stream;
  if (stream) {
    std::lock_guard<std::mutex> lock(stream->mutex);
    event->position = stream->issued;
  }
  return cudaSuccess;
}
// Waits for the work queued on the event's stream before the record (later work stays queued).
inline cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return cudaErrorInvalidValue;
  emu::drain(event->stream, event->position);
  return cudaSuccess;
}
// One emulated device queue per stream and no concurrency between them: waiting on another
// stream's event runs that stream's work now.
inline cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0) {
  (void)flags;
  if (!event) return cudaErrorInvalidValue;
  if (event->stream != stream) (void)emu::drain_once(event->stream, event->position);  // device-side: not counted
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return cudaErrorInvalidValue;
  *total_bytes = size_t(1) << 34;
  *free_bytes = *total_bytes;
  return cudaSuccess;
}

#pragma once
// A caching allocator for the cuda backend: cudaMallocManaged is slow (it synchronises the device)
// and the model allocates the same sizes again and again (activation arenas, LM-head chunks,
// scratch), so freed blocks are kept in size classes and handed out again.
//   size classes: requests round up to 512 bytes below 1 MiB, to 2 MiB above;
//   reuse: the smallest cached block of the same class or up to 1.25x larger;
//   out of memory: every cached block is released and the allocation is tried once more; if that
//   fails too, Error(backend) says what was asked, what is in use and cached, and the device's
//   free/total memory.
// Reuse and queued work: a block released while kernels that use it are still queued may be handed
// out again. That is safe because the backend has one stream (the new owner's work runs after the
// old owner's) and waits for the stream before the host touches a block (alloc, tables); emptying
// the cache calls cudaFree, which waits for the device. Thread-safe.
#include <cstddef>
#include <map>
#include <mutex>

#include "common.cuh"

namespace nuri::cuda {

class DeviceAllocator {
 public:
  // managed: cudaMallocManaged (host-accessible) rather than cudaMalloc (device only).
  explicit DeviceAllocator(bool managed) : managed_(managed) {}
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  void* allocate(size_t bytes, const char* what);  // not zeroed; nullptr for 0 bytes
  void release(void* ptr);                         // back to the cache; nullptr is ignored

  static size_t round_size(size_t bytes);  // the size class of a request
  // True when p points into a block in use from this allocator (not host memory).
  bool contains(const void* p);

 private:
  void* device_alloc(size_t bytes);  // nullptr when the device is out of memory
  void empty_cache_locked();

  bool managed_;
  std::mutex mutex_;
  std::multimap<size_t, void*> cached_;         // size class -> free block
  std::map<const char*, size_t> in_use_;        // live block -> its size class (bytes)
  size_t bytes_in_use_ = 0;  // for the out-of-memory message
};

}  // namespace nuri::cuda

#pragma once
// A caching allocator for the cuda backend: cudaMallocManaged is slow (it synchronises the device)
// and the model allocates the same sizes again and again (activation arenas, LM-head chunks,
// scratch), so freed blocks are kept in size classes and handed out again.
//   size classes: requests round up to 512 bytes below 1 MiB, to 2 MiB above;
//   reuse: the smallest cached block of the same class or up to 1.25x larger;
//   out of memory: every cached block is released and the allocation is tried once more; if that
//   fails too, Error(backend) says what was asked, what is in use and cached, and the device's
//   free/total memory.
// Blocks are only returned when the backend has finished all work (it synchronises per op), so a
// reused block is never still in use by a kernel. Thread-safe.
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

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

 private:
  void* device_alloc(size_t bytes);  // nullptr when the device is out of memory
  void empty_cache_locked();

  bool managed_;
  std::mutex mutex_;
  std::multimap<size_t, void*> cached_;         // size class -> free block
  std::unordered_map<void*, size_t> in_use_;    // live block -> its size class
  size_t bytes_in_use_ = 0;  // for the out-of-memory message
};

}  // namespace nuri::cuda

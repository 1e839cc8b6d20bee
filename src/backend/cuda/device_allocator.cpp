// The cuda backend's caching allocator (device_allocator.hpp).
#include "backend/cuda/device_allocator.hpp"

#include <algorithm>
#include <sstream>

#include "nuri/error.hpp"

namespace nuri::cuda {

namespace {
constexpr size_t kSmallLimit = size_t(1) << 20;  // below: 512-byte classes
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;  // above: 2 MiB classes

std::string mib(size_t bytes) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << double(bytes) / double(1 << 20) << " MiB";
  return s.str();
}
}  // namespace

DeviceAllocator::~DeviceAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  empty_cache_locked();
  // Blocks still in use belong to a caller that outlived the backend; free them too, so the
  // process does not leak device memory (the pointers are dangling from here on, as with free()).
  for (auto& [ptr, size] : in_use_) (void)cudaFree(const_cast<char*>(ptr));
  in_use_.clear();
}

size_t DeviceAllocator::round_size(size_t bytes) {
  const size_t r = bytes < kSmallLimit ? kSmallRound : kLargeRound;
  return (bytes + r - 1) / r * r;
}

void* DeviceAllocator::device_alloc(size_t bytes) {
  if (managed_) {
    // Managed memory may oversubscribe the GPU (it pages to the host instead of failing), which
    // would turn a too-large batch into silent thrashing: hold it to the device's free memory.
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && bytes > free_b) return nullptr;
    (void)cudaGetLastError();
  }
  void* ptr = nullptr;
  const cudaError_t e = managed_ ? cudaMallocManaged(&ptr, bytes) : cudaMalloc(&ptr, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky out-of-memory error
    return nullptr;
  }
  return ptr;
}

void* DeviceAllocator::allocate(size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = nullptr;
  size_t got = size;
  // The smallest cached block that fits and wastes at most a quarter.
  auto it = cached_.lower_bound(size);
  if (it != cached_.end() && it->first <= size + size / 4) {
    ptr = it->second;
    got = it->first;
    cached_.erase(it);
  }
  if (!ptr) ptr = device_alloc(size);
  if (!ptr && !cached_.empty()) {  // give the cache back and try once more
    empty_cache_locked();
    ptr = device_alloc(size);
  }
  if (!ptr) {
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    NURI_THROW(backend, "cuda alloc",
               "out of GPU memory allocating " << mib(size) << " for " << what << " (in use by nuri: "
                                               << mib(bytes_in_use_) << ", device free " << mib(free_b)
                                               << " of " << mib(total_b)
                                               << "); lower train.batch_size or train.seq_len, use "
                                                  "activation recompute, or more data-parallel ranks");
  }
  in_use_[static_cast<const char*>(ptr)] = got;
  bytes_in_use_ += got;
  return ptr;
}

void DeviceAllocator::release(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.find(static_cast<const char*>(ptr));
  NURI_CHECK(it != in_use_.end(), backend, "cuda free",
             "pointer " << ptr << " was not allocated by this cuda backend (or was freed twice)");
  const size_t size = it->second;
  in_use_.erase(it);
  bytes_in_use_ -= size;
  cached_.emplace(size, ptr);
}

bool DeviceAllocator::contains(const void* p) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.upper_bound(c);  // the first block starting after c
  if (it == in_use_.begin()) return false;
  --it;
  return c < it->first + it->second;
}

void DeviceAllocator::empty_cache_locked() {
  for (auto& [size, ptr] : cached_) (void)cudaFree(ptr);
  cached_.clear();
}

}  // namespace nuri::cuda

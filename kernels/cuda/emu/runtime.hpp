#pragma once
// The CUDA runtime API subset the cuda backend (src/backend/cuda) calls, emulated on the host, so
// the backend itself — not only its kernels — runs where there is no GPU (tests/cuda_emu trains a
// tiny model through it). Included after emu.hpp, in NURI_CUDA_EMU builds only.
//
// One emulated device ("emulated CUDA device", sm_90). Memory is host memory (aligned to 256 bytes
// like cudaMalloc); copies and memsets happen at once; streams and events exist as handles only,
// since every emulated launch is synchronous (emu.hpp). Errors are reported like the real API
// (cudaErrorInvalidValue for a null pointer or an unknown handle, cudaErrorMemoryAllocation).
#include <cstdlib>
#include <cstring>
#include <new>

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

struct CUevent_st {
  int recorded = 0;
};
using cudaEvent_t = CUevent_st*;
struct CUstream_st {
  int id = 0;
};

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
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97, cudaDevAttrConcurrentManagedAccess = 89 };
// An H100's values: 227 KiB of shared memory per block; concurrent managed access.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value || device != 0) return cudaErrorInvalidValue;
  *value = attr == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 1;
  return cudaSuccess;
}

inline cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return cudaErrorInvalidValue;
  *ptr = bytes ? std::aligned_alloc(256, (bytes + 255) / 256 * 256) : nullptr;
  return bytes && !*ptr ? cudaErrorMemoryAllocation : cudaSuccess;
}
inline cudaError_t cudaMallocManaged(void** ptr, size_t bytes, unsigned flags = cudaMemAttachGlobal) {
  (void)flags;
  return cudaMalloc(ptr, bytes);
}
inline cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t stream = nullptr) {
  (void)kind;
  (void)stream;
  if (bytes && (!dst || !src)) return cudaErrorInvalidValue;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr) {
  (void)stream;
  if (bytes && !dst) return cudaErrorInvalidValue;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  (void)flags;
  if (!stream) return cudaErrorInvalidValue;
  *stream = new (std::nothrow) CUstream_st;
  return *stream ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
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
  (void)stream;
  if (!event) return cudaErrorInvalidValue;
  ++event->recorded;
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  return event ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0) {
  (void)stream;
  (void)flags;
  return event ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return cudaErrorInvalidValue;
  *total_bytes = size_t(1) << 34;
  *free_bytes = *total_bytes;
  return cudaSuccess;
}

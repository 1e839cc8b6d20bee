// make_backend, the one place that maps a backend name to an implementation; and the Backend
// ops with a default (the host-side bf16 packing of saved activations).
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
#if defined(NURI_WITH_CUDA)
#include "backend/cuda/cuda_backend.hpp"
#endif
#include "nuri/backend.hpp"
#include "nuri/error.hpp"

namespace nuri {

void Backend::pack_bf16(float* dst, const float* src, size_t n) {
  synchronize();  // the host reads src
  auto* out = reinterpret_cast<uint16_t*>(dst);
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &src[i], 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
      out[i] = uint16_t((u >> 16) | 0x40u);  // NaN: keep it a (quiet) NaN
    else
      out[i] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // round to nearest even
  }
}

void Backend::unpack_bf16(float* dst, const float* src, size_t n) {
  synchronize();
  const auto* in = reinterpret_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(in[i]) << 16;
    std::memcpy(&dst[i], &u, 4);
  }
}

std::unique_ptr<Backend> make_backend(const std::string& name, int threads,
                                      const std::string& cpu_gemm) {
  if (name == "cpu") {
    cpu::set_gemm_library(cpu::resolve_gemm_library(cpu_gemm.c_str()));
    return std::make_unique<CpuBackend>(threads <= 0 ? default_cpu_threads() : threads);
  }
  if (name == "cuda") {
#if defined(NURI_WITH_CUDA)
    (void)threads;
    return cuda::make_cuda_backend(-1);
#else
    NURI_THROW(backend, "make_backend",
               "backend = \"cuda\" but this build of nuri has no CUDA backend (it was built without nvcc: "
               "install the CUDA toolkit and rebuild, scripts/test.sh shows how), or set backend = \"cpu\"");
#endif
  }
  NURI_THROW(config, "make_backend",
             "unknown backend '" << name << "'; the backends are \"cpu\" and \"cuda\"");
}

}  // namespace nuri

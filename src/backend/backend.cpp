// make_backend: the one place that maps a backend name to an implementation.
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

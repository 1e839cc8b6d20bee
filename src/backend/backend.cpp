// make_backend: the one place that maps a backend name to an implementation.
#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/sgemm.hpp"
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
    NURI_THROW(backend, "make_backend",
               "this build of nuri has no CUDA backend yet (it arrives with the CUDA backend "
               "issue); set backend = \"cpu\"");
  }
  NURI_THROW(config, "make_backend",
             "unknown backend '" << name << "'; the backends are \"cpu\" and \"cuda\"");
}

}  // namespace nuri

#pragma once
// The GEMM autotune table: for each GEMM shape a GPU run measured, which implementation of the
// bf16 product (kernels/cuda/gemm.cuh) to use, ours or cuBLASLt, with the TFLOP/s each reached.
// benchmarks/bench_gemm_cuda --write-table fills it; GemmDispatch (gemm_dispatch.hpp) reads it.
// Pure C++ (no CUDA header), so it is unit-tested on any machine (tests/test_gemm_table.cpp).
//
// File format: text, tab-separated, one shape per line, '#' lines are comments:
//   # nuri GEMM autotune table: NVIDIA H100 80GB HBM3, 2026-11-24 06:10 UTC, bench_gemm_cuda
//   trans_a<TAB>trans_b<TAB>M<TAB>N<TAB>K<TAB>epilogue<TAB>impl<TAB>ours_tflops<TAB>cublaslt_tflops
//   N<TAB>T<TAB>8192<TAB>2304<TAB>768<TAB>bias<TAB>cublaslt<TAB>301.2<TAB>512.7
// trans_a/trans_b: N (as stored) or T (transposed), as gemm_bf16's flags. M, N, K >= 0.
// epilogue: none | bias | bias_gelu (GemmEpilogue). impl: ours | cublaslt. The two TFLOP/s are
// finite and >= 0; 0 means "not measured" (e.g. the implementation refused the shape).
// The first comment line names the GPU and date that produced the table (source()); the header
// line must come before the first entry. A shape appears at most once.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace nuri::cuda {

// The two implementations of the bf16 GEMM.
enum class GemmImpl { ours, cublaslt };

// "ours" / "cublaslt".
const char* gemm_impl_name(GemmImpl impl);
// The implementation named `name` ("ours" or "cublaslt"), or nullopt for any other string.
std::optional<GemmImpl> parse_gemm_impl(std::string_view name);
// True for the epilogue names the table knows: "none", "bias", "bias_gelu".
bool is_gemm_epilogue_name(std::string_view name);

// One GEMM shape as gemm_bf16 sees it (strides are not part of the key: the table is filled at
// contiguous strides, the ones the model uses).
struct GemmShapeKey {
  bool trans_a = false;
  bool trans_b = false;
  int M = 0;
  int N = 0;
  int K = 0;
  std::string epilogue = "none";  // "none" | "bias" | "bias_gelu"

  bool operator<(const GemmShapeKey& o) const {
    return std::tie(trans_a, trans_b, M, N, K, epilogue) <
           std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.epilogue);
  }
  bool operator==(const GemmShapeKey& o) const {
    return std::tie(trans_a, trans_b, M, N, K, epilogue) ==
           std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.epilogue);
  }
};

// What the table says for one shape.
struct GemmChoice {
  GemmImpl impl = GemmImpl::cublaslt;
  double ours_tflops = 0;      // measured TFLOP/s of gemm_bf16 (0: not measured)
  double cublaslt_tflops = 0;  // measured TFLOP/s of cuBLASLt (0: not measured)
};

class GemmTable {
 public:
  // Reads the table at `path`. Throws nuri::Error(io) when the file cannot be opened and
  // nuri::Error(config) naming "path:line" for a malformed line, an unknown implementation or
  // epilogue name, a missing header, or a shape listed twice.
  static GemmTable load(const std::string& path);
  // Writes the table to `path` (the source line, the header, one line per entry in key order),
  // through a temporary file renamed into place. Throws nuri::Error(io) when it cannot.
  void save(const std::string& path) const;

  // The choice for `key`, or nullopt when the table has no such shape.
  std::optional<GemmChoice> lookup(const GemmShapeKey& key) const;
  // Adds or replaces the entry for `key`. Throws nuri::Error(config) for a key or choice that
  // save() could not write back (unknown epilogue, negative size, negative or non-finite TFLOP/s).
  void set(const GemmShapeKey& key, const GemmChoice& choice);

  size_t size() const { return entries_.size(); }
  const std::map<GemmShapeKey, GemmChoice>& entries() const { return entries_; }

  // Which GPU / date / program produced the table (the first comment line, without "# ").
  const std::string& source() const { return source_; }
  void set_source(std::string source) { source_ = std::move(source); }

 private:
  std::map<GemmShapeKey, GemmChoice> entries_;
  std::string source_;
};

}  // namespace nuri::cuda

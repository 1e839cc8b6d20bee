// The GEMM autotune table (src/backend/cuda/gemm_table.hpp): save/load round trip, lookup hits
// and misses, and the load errors: each malformed line is rejected with "path:line" in the
// message, as are an unknown implementation or epilogue name, a missing header and a shape
// listed twice. Pure C++: gemm_table.cpp is compiled into this test, so it runs without CUDA.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "backend/cuda/gemm_table.hpp"
#include "nuri/error.hpp"

namespace {

namespace fs = std::filesystem;
using nuri::cuda::GemmChoice;
using nuri::cuda::GemmImpl;
using nuri::cuda::GemmShapeKey;
using nuri::cuda::GemmTable;

const char* kHeader = "trans_a\ttrans_b\tM\tN\tK\tepilogue\timpl\tours_tflops\tcublaslt_tflops\n";

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "nuri_test_gemm_table";
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path) << text;
  return path;
}

// The message of the nuri::Error that GemmTable::load(path) throws ("" if it throws none).
std::string load_error(const std::string& path) {
  try {
    GemmTable::load(path);
  } catch (const nuri::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("gemm table: save then load gives the same entries and source", "[gemm_table]") {
  GemmTable table;
  table.set_source("nuri GEMM autotune table: test GPU, 2026-11-24");
  table.set({false, true, 8192, 2304, 768, "bias"}, {GemmImpl::cublaslt, 301.25, 512.5});
  table.set({false, false, 8192, 768, 2304, "none"}, {GemmImpl::ours, 420.0, 400.125});
  table.set({true, false, 2304, 768, 8192, "none"}, {GemmImpl::cublaslt, 0.0, 450.0});
  table.set({false, true, 8192, 3072, 768, "bias_gelu"}, {GemmImpl::ours, 350.5, 340.0});
  const std::string path = temp_path("round_trip.tsv");
  table.save(path);

  const GemmTable back = GemmTable::load(path);
  CHECK(back.source() == table.source());
  REQUIRE(back.size() == 4);
  for (const auto& [key, want] : table.entries()) {
    const auto got = back.lookup(key);
    REQUIRE(got.has_value());
    CHECK(got->impl == want.impl);
    CHECK(got->ours_tflops == Approx(want.ours_tflops).epsilon(1e-6));
    CHECK(got->cublaslt_tflops == Approx(want.cublaslt_tflops).epsilon(1e-6));
  }
  // Saving what was loaded writes the same bytes.
  const std::string again = temp_path("round_trip_again.tsv");
  back.save(again);
  std::ifstream a(path), b(again);
  const std::string ta((std::istreambuf_iterator<char>(a)), {}), tb((std::istreambuf_iterator<char>(b)), {});
  CHECK(ta == tb);
}

TEST_CASE("gemm table: lookup misses on any field that differs", "[gemm_table]") {
  GemmTable table;
  const GemmShapeKey key{false, true, 8192, 2304, 768, "bias"};
  table.set(key, {GemmImpl::ours, 1.0, 2.0});
  REQUIRE(table.lookup(key).has_value());
  CHECK_FALSE(table.lookup({true, true, 8192, 2304, 768, "bias"}).has_value());
  CHECK_FALSE(table.lookup({false, false, 8192, 2304, 768, "bias"}).has_value());
  CHECK_FALSE(table.lookup({false, true, 8191, 2304, 768, "bias"}).has_value());
  CHECK_FALSE(table.lookup({false, true, 8192, 2305, 768, "bias"}).has_value());
  CHECK_FALSE(table.lookup({false, true, 8192, 2304, 769, "bias"}).has_value());
  CHECK_FALSE(table.lookup({false, true, 8192, 2304, 768, "none"}).has_value());
  CHECK_FALSE(GemmTable().lookup(key).has_value());
  // set() replaces.
  table.set(key, {GemmImpl::cublaslt, 1.0, 3.0});
  CHECK(table.size() == 1);
  CHECK(table.lookup(key)->impl == GemmImpl::cublaslt);
}

TEST_CASE("gemm table: comments, blank lines and CRLF are accepted", "[gemm_table]") {
  const std::string path = write_file(
      "comments.tsv", std::string("# made on: test GPU\r\n\n# another comment\n") + kHeader +
                          "N\tT\t16\t32\t64\tnone\tours\t1.5\t2\r\n\nT\tN\t1\t2\t3\tbias_gelu\tcublaslt\t0\t7e1\n");
  const GemmTable t = GemmTable::load(path);
  CHECK(t.source() == "made on: test GPU");
  REQUIRE(t.size() == 2);
  CHECK(t.lookup({false, true, 16, 32, 64, "none"})->impl == GemmImpl::ours);
  CHECK(t.lookup({true, false, 1, 2, 3, "bias_gelu"})->cublaslt_tflops == 70.0);
}

TEST_CASE("gemm table: malformed lines are rejected with file and line", "[gemm_table]") {
  struct Case {
    const char* name;
    const char* line;  // written as line 3 (after a comment and the header)
    const char* says;  // part of the message
  };
  const Case cases[] = {
      {"too_few_fields", "N\tT\t16\t32\t64\tnone\tours\t1.5\n", "expected 9 tab-separated fields, found 8"},
      {"too_many_fields", "N\tT\t16\t32\t64\tnone\tours\t1.5\t2\t3\n", "found 10"},
      {"spaces_not_tabs", "N T 16 32 64 none ours 1.5 2\n", "found 1"},
      {"bad_trans", "X\tT\t16\t32\t64\tnone\tours\t1.5\t2\n", "must be N or T"},
      {"negative_size", "N\tT\t-16\t32\t64\tnone\tours\t1.5\t2\n", "integers >= 0"},
      {"size_not_integer", "N\tT\t16.5\t32\t64\tnone\tours\t1.5\t2\n", "integers >= 0"},
      {"size_overflow", "N\tT\t99999999999\t32\t64\tnone\tours\t1.5\t2\n", "integers >= 0"},
      {"bad_epilogue", "N\tT\t16\t32\t64\tgelu\tours\t1.5\t2\n", "unknown epilogue 'gelu'"},
      {"tflops_not_number", "N\tT\t16\t32\t64\tnone\tours\tfast\t2\n", "finite numbers >= 0"},
      {"tflops_nan", "N\tT\t16\t32\t64\tnone\tours\tnan\t2\n", "finite numbers >= 0"},
      {"tflops_negative", "N\tT\t16\t32\t64\tnone\tours\t1\t-2\n", "finite numbers >= 0"},
      {"tflops_empty", "N\tT\t16\t32\t64\tnone\tours\t\t2\n", "finite numbers >= 0"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const std::string path = write_file(std::string(c.name) + ".tsv", std::string("# src\n") + kHeader + c.line);
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains(path + ":3:"));
    CHECK_THAT(msg, Catch::Contains(c.says));
  }
}

TEST_CASE("gemm table: an unknown implementation name is rejected", "[gemm_table]") {
  const std::string path = write_file(
      "unknown_impl.tsv", std::string("# src\n") + kHeader + "N\tT\t16\t32\t64\tnone\tours\t1\t2\n" +
                              "N\tN\t16\t32\t64\tnone\tcutlass\t1\t2\n");
  const std::string msg = load_error(path);
  CHECK_THAT(msg, Catch::Contains(path + ":4:"));
  CHECK_THAT(msg, Catch::Contains("unknown implementation 'cutlass'"));
  CHECK(nuri::cuda::parse_gemm_impl("Ours") == std::nullopt);
  CHECK(nuri::cuda::parse_gemm_impl("cublaslt") == GemmImpl::cublaslt);
  CHECK(std::string(nuri::cuda::gemm_impl_name(GemmImpl::ours)) == "ours");
}

TEST_CASE("gemm table: missing header, duplicate shape, missing file", "[gemm_table]") {
  {
    const std::string path = write_file("no_header.tsv", "# src\nN\tT\t16\t32\t64\tnone\tours\t1\t2\n");
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains(path + ":2:"));
    CHECK_THAT(msg, Catch::Contains("expected the header line"));
  }
  {
    const std::string path = write_file("empty.tsv", "");
    CHECK_THAT(load_error(path), Catch::Contains("no header line"));
  }
  {
    const std::string path = write_file(
        "duplicate.tsv", std::string("# src\n") + kHeader + "N\tT\t16\t32\t64\tnone\tours\t1\t2\n" +
                             "N\tT\t16\t32\t64\tbias\tours\t1\t2\n" + "N\tT\t16\t32\t64\tnone\tcublaslt\t1\t2\n");
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains(path + ":5:"));
    CHECK_THAT(msg, Catch::Contains("already listed on line 3"));
  }
  {
    const std::string path = temp_path("does_not_exist.tsv");
    std::remove(path.c_str());
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains("cannot open"));
    CHECK_THAT(msg, Catch::Contains(path));
  }
}

TEST_CASE("gemm table: set() refuses what save() could not write back", "[gemm_table]") {
  GemmTable t;
  CHECK_THROWS_AS(t.set({false, false, 1, 1, 1, "relu"}, {}), nuri::Error);
  CHECK_THROWS_AS(t.set({false, false, -1, 1, 1, "none"}, {}), nuri::Error);
  CHECK_THROWS_AS(t.set({false, false, 1, 1, 1, "none"}, {GemmImpl::ours, -1.0, 0.0}), nuri::Error);
  CHECK(t.size() == 0);
}

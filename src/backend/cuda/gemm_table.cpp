// The GEMM autotune table: parsing and writing its TSV file (format in gemm_table.hpp).
#include "backend/cuda/gemm_table.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "nuri/error.hpp"

namespace nuri::cuda {

namespace {

constexpr const char* kHeader =
    "trans_a\ttrans_b\tM\tN\tK\tepilogue\timpl\tours_tflops\tcublaslt_tflops";
constexpr int kColumns = 9;
constexpr const char* kFix = "; regenerate the table with `bench_gemm_cuda --write-table PATH` on the GPU";

std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  return fields;
}

bool parse_trans(std::string_view s, bool& out) {
  if (s == "N") { out = false; return true; }
  if (s == "T") { out = true; return true; }
  return false;
}

bool parse_size(std::string_view s, int& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && out >= 0;
}

bool parse_tflops(std::string_view s, double& out) {
  if (s.empty()) return false;
  const std::string copy(s);  // strtod needs a terminated string
  char* end = nullptr;
  errno = 0;
  out = std::strtod(copy.c_str(), &end);
  return errno == 0 && end == copy.c_str() + copy.size() && std::isfinite(out) && out >= 0;
}

}  // namespace

const char* gemm_impl_name(GemmImpl impl) {
  switch (impl) {
    case GemmImpl::ours: return "ours";
    case GemmImpl::cublaslt: return "cublaslt";
  }
  return "?";
}

std::optional<GemmImpl> parse_gemm_impl(std::string_view name) {
  if (name == "ours") return GemmImpl::ours;
  if (name == "cublaslt") return GemmImpl::cublaslt;
  return std::nullopt;
}

bool is_gemm_epilogue_name(std::string_view name) {
  return name == "none" || name == "bias" || name == "bias_gelu";
}

GemmTable GemmTable::load(const std::string& path) {
  std::ifstream in(path);
  NURI_CHECK(in.good(), io, "gemm table",
             "cannot open the GEMM autotune table '" << path
                 << "'; check the path (NURI_GEMM_TABLE or the table path given), or unset it to "
                    "run without a table");
  GemmTable table;
  std::map<GemmShapeKey, int> line_of;  // for the duplicate message
  bool seen_header = false;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // tolerate CRLF
    const std::string where = path + ":" + std::to_string(number);
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (table.source_.empty()) {
        std::string_view text(line);
        text.remove_prefix(1);
        while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
        table.source_ = std::string(text);
      }
      continue;
    }
    if (!seen_header) {
      NURI_CHECK(line == kHeader, config, "gemm table",
                 where << ": expected the header line '" << kHeader << "' (tab-separated) before the "
                       << "first entry, found '" << line << "'" << kFix);
      seen_header = true;
      continue;
    }
    const std::vector<std::string_view> f = split_tabs(line);
    NURI_CHECK(int(f.size()) == kColumns, config, "gemm table",
               where << ": expected " << kColumns << " tab-separated fields, found " << f.size()
                     << " in '" << line << "'" << kFix);
    GemmShapeKey key;
    GemmChoice choice;
    NURI_CHECK(parse_trans(f[0], key.trans_a) && parse_trans(f[1], key.trans_b), config, "gemm table",
               where << ": trans_a and trans_b must be N or T, found '" << f[0] << "' and '" << f[1]
                     << "'" << kFix);
    NURI_CHECK(parse_size(f[2], key.M) && parse_size(f[3], key.N) && parse_size(f[4], key.K), config,
               "gemm table",
               where << ": M, N, K must be integers >= 0, found '" << f[2] << "', '" << f[3] << "', '"
                     << f[4] << "'" << kFix);
    NURI_CHECK(is_gemm_epilogue_name(f[5]), config, "gemm table",
               where << ": unknown epilogue '" << f[5] << "' (none, bias or bias_gelu)" << kFix);
    key.epilogue = std::string(f[5]);
    const std::optional<GemmImpl> impl = parse_gemm_impl(f[6]);
    NURI_CHECK(impl.has_value(), config, "gemm table",
               where << ": unknown implementation '" << f[6] << "' (ours or cublaslt)" << kFix);
    choice.impl = *impl;
    NURI_CHECK(parse_tflops(f[7], choice.ours_tflops) && parse_tflops(f[8], choice.cublaslt_tflops),
               config, "gemm table",
               where << ": ours_tflops and cublaslt_tflops must be finite numbers >= 0, found '" << f[7]
                     << "' and '" << f[8] << "'" << kFix);
    const auto [it, inserted] = line_of.emplace(key, number);
    NURI_CHECK(inserted, config, "gemm table",
               where << ": this shape is already listed on line " << it->second
                     << "; keep one line per shape" << kFix);
    table.entries_.emplace(key, choice);
  }
  NURI_CHECK(!in.bad(), io, "gemm table", "error reading the GEMM autotune table '" << path << "'");
  NURI_CHECK(seen_header, config, "gemm table",
             path << ": no header line '" << kHeader << "' (an empty or truncated file?)" << kFix);
  return table;
}

void GemmTable::save(const std::string& path) const {
  std::string source = source_.empty() ? std::string("nuri GEMM autotune table (source not recorded)") : source_;
  for (char& c : source)
    if (c == '\n' || c == '\r') c = ' ';  // one comment line, whatever set_source() was given
  std::ostringstream text;
  text << "# " << source << "\n" << kHeader << "\n";
  for (const auto& [key, choice] : entries_) {
    char tflops[64];
    std::snprintf(tflops, sizeof tflops, "%.3f\t%.3f", choice.ours_tflops, choice.cublaslt_tflops);
    text << (key.trans_a ? 'T' : 'N') << '\t' << (key.trans_b ? 'T' : 'N') << '\t' << key.M << '\t'
         << key.N << '\t' << key.K << '\t' << key.epilogue << '\t' << gemm_impl_name(choice.impl)
         << '\t' << tflops << '\n';
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    NURI_CHECK(out.good(), io, "gemm table",
               "cannot write '" << tmp << "' (for the GEMM autotune table '" << path
                                << "'); check that the directory exists and is writable");
    out << text.str();
    out.flush();
    NURI_CHECK(out.good(), io, "gemm table", "error writing '" << tmp << "' (disk full?)");
  }
  NURI_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io, "gemm table",
             "cannot rename '" << tmp << "' to '" << path << "'");
}

std::optional<GemmChoice> GemmTable::lookup(const GemmShapeKey& key) const {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void GemmTable::set(const GemmShapeKey& key, const GemmChoice& choice) {
  NURI_CHECK(is_gemm_epilogue_name(key.epilogue), config, "gemm table",
             "unknown epilogue '" << key.epilogue << "' (none, bias or bias_gelu)");
  NURI_CHECK(key.M >= 0 && key.N >= 0 && key.K >= 0, config, "gemm table",
             "negative size M=" << key.M << " N=" << key.N << " K=" << key.K);
  NURI_CHECK(std::isfinite(choice.ours_tflops) && choice.ours_tflops >= 0 &&
                 std::isfinite(choice.cublaslt_tflops) && choice.cublaslt_tflops >= 0,
             config, "gemm table",
             "TFLOP/s must be finite and >= 0, got ours " << choice.ours_tflops << ", cublaslt "
                                                          << choice.cublaslt_tflops);
  entries_[key] = choice;
}

}  // namespace nuri::cuda

#include "nuri/error.hpp"

#include <atomic>
#include <cstring>

namespace nuri {

namespace {
std::atomic<int> g_rank{-1};

// "src/core/config.cpp" from an absolute __FILE__, so messages stay short.
const char* short_path(const char* file) {
  const char* p = std::strstr(file, "/src/");
  if (!p) p = std::strstr(file, "/include/");
  return p ? p + 1 : file;
}

std::string format(ErrorKind kind, const std::string& op, const std::string& message,
                   const char* file, int line, int rank) {
  std::ostringstream s;
  if (rank >= 0) s << "[rank " << rank << "] ";
  s << to_string(kind) << " error";
  if (!op.empty()) s << " in " << op;
  s << ": " << message << " (at " << short_path(file) << ":" << line << ")";
  return s.str();
}
}  // namespace

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::config: return "config";
    case ErrorKind::shape: return "shape";
    case ErrorKind::io: return "I/O";
    case ErrorKind::data: return "data";
    case ErrorKind::numeric: return "numeric";
    case ErrorKind::backend: return "backend";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

void set_process_rank(int rank) { g_rank = rank; }
int process_rank() { return g_rank; }

Error::Error(ErrorKind kind, std::string op, const std::string& message, const char* file,
             int line)
    : std::runtime_error(format(kind, op, message, file, line, g_rank)),
      kind_(kind),
      op_(std::move(op)),
      message_(message),
      rank_(g_rank) {}

}  // namespace nuri

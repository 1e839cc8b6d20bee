#include "nuri/log.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "nuri/error.hpp"

namespace nuri {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
std::atomic<bool> g_rank0_only{true};
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
void set_log_rank0_only(bool on) { g_rank0_only = on; }

void log_message(LogLevel level, const std::string& text) {
  if (static_cast<int>(level) < g_level) return;
  const int rank = process_rank();
  if (level <= LogLevel::info && g_rank0_only && rank > 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  FILE* out = level >= LogLevel::warn ? stderr : stdout;
  const char* tag = level == LogLevel::warn ? "warning: " : level == LogLevel::error ? "error: " : "";
  if (rank >= 0 && (level >= LogLevel::warn || !g_rank0_only)) {
    std::fprintf(out, "[rank %d] %s%s\n", rank, tag, text.c_str());
  } else {
    std::fprintf(out, "%s%s\n", tag, text.c_str());
  }
  std::fflush(out);
}

}  // namespace nuri

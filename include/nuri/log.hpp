#pragma once
// \file
// Logging: one line per message on stderr (info and debug on stdout), prefixed with the rank when set.
// By default only rank 0 prints info; warnings and errors print on every rank.
#include <sstream>
#include <string>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// Message severity, in increasing order.
enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

// Messages below level are dropped on every rank; the default is info. Thread-safe.
void set_log_level(LogLevel level);
// When true (the default), info and debug messages are printed by rank 0 only.
void set_log_rank0_only(bool on);
// Prints text as one line (debug/info on stdout, warn/error on stderr with a "warning: " or
// "error: " tag), serialized by a mutex so lines from threads do not interleave.
// NURI_LOG, NURI_INFO and NURI_WARN build text from a stream expression and call this.
void log_message(LogLevel level, const std::string& text);

}  // namespace nuri
NURI_API_END

// NURI_LOG(level, stream-expression): logs at LogLevel::level, e.g.
//   NURI_LOG(debug, "bucket " << i << " ready");
#define NURI_LOG(level, msg)                                   \
  do {                                                         \
    std::ostringstream nuri_log_;                              \
    nuri_log_ << msg;                                          \
    ::nuri::log_message(::nuri::LogLevel::level, nuri_log_.str()); \
  } while (0)
// NURI_INFO(stream-expression): NURI_LOG at info (printed by rank 0 only, by default).
#define NURI_INFO(msg) NURI_LOG(info, msg)
// NURI_WARN(stream-expression): NURI_LOG at warn (stderr, every rank).
#define NURI_WARN(msg) NURI_LOG(warn, msg)

#pragma once
// Logging: one line per message on stderr (info on stdout), prefixed with the rank when set.
// By default only rank 0 prints info; warnings and errors print on every rank.
#include <sstream>
#include <string>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

void set_log_level(LogLevel level);
// When true (the default), info and debug messages are printed by rank 0 only.
void set_log_rank0_only(bool on);
void log_message(LogLevel level, const std::string& text);

}  // namespace nuri
NURI_API_END

#define NURI_LOG(level, msg)                                   \
  do {                                                         \
    std::ostringstream nuri_log_;                              \
    nuri_log_ << msg;                                          \
    ::nuri::log_message(::nuri::LogLevel::level, nuri_log_.str()); \
  } while (0)
#define NURI_INFO(msg) NURI_LOG(info, msg)
#define NURI_WARN(msg) NURI_LOG(warn, msg)

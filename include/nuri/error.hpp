#pragma once
// \file
// Errors with context. Library code throws nuri::Error; only main() decides to exit.
// Every message says what went wrong, where (rank, op, file:line) and, where possible, what to do.
#include <sstream>
#include <stdexcept>
#include <string>

#include "nuri/export.hpp"

NURI_API_BEGIN
namespace nuri {

// What kind of failure an Error reports; lets callers react (e.g. exit code 2 for config/shape).
enum class ErrorKind {
  config,    // a wrong config key or value
  shape,     // shapes that do not fit together (e.g. n_head does not divide d_model)
  io,        // a missing, unreadable or truncated file
  data,      // input data that cannot be used (e.g. too few tokens)
  numeric,   // non-finite loss or gradients
  backend,   // a backend that is absent or failed
  internal,  // a broken invariant: a bug in nuri
};

// A short lowercase name for kind ("config", "shape", "I/O", ...); a static string, never null.
const char* to_string(ErrorKind kind);

// The process rank printed in every message ("[rank 3]"); -1 (the default) prints no rank.
// Process-wide and thread-safe (an atomic); MpiEnvironment sets it when the world has >1 rank.
void set_process_rank(int rank);
// The rank set by set_process_rank(), or -1 when none was set.
int process_rank();

// The exception nuri's library code throws. what() is the full line with context, e.g.
// "[rank 3] config error in config: unknown key 'foo' (at src/core/config.cpp:42)".
class Error : public std::runtime_error {
 public:
  // message: the sentence for the user. op: what nuri was doing ("config", "attention_forward").
  // file/line: where in nuri's source the error was raised.
  Error(ErrorKind kind, std::string op, const std::string& message, const char* file, int line);
  ErrorKind kind() const { return kind_; }                  // the kind of failure
  const std::string& op() const { return op_; }             // what nuri was doing, may be empty
  const std::string& message() const { return message_; }   // the bare sentence, without context
  int rank() const { return rank_; }  // process_rank() when thrown; -1 when none was set

 private:
  ErrorKind kind_;
  std::string op_;
  std::string message_;
  int rank_;
};

}  // namespace nuri
NURI_API_END

// NURI_THROW(kind, op, stream-expression): throws nuri::Error with file:line.
//   NURI_THROW(config, "config", "unknown key '" << key << "'");
#define NURI_THROW(kind, op, msg)                                                 \
  do {                                                                            \
    std::ostringstream nuri_msg_;                                                 \
    nuri_msg_ << msg;                                                             \
    throw ::nuri::Error(::nuri::ErrorKind::kind, (op), nuri_msg_.str(), __FILE__, \
                        __LINE__);                                                \
  } while (0)

// NURI_CHECK(cond, kind, op, msg): throws when cond is false.
#define NURI_CHECK(cond, kind, op, msg) \
  do {                                  \
    if (!(cond)) NURI_THROW(kind, op, msg); \
  } while (0)

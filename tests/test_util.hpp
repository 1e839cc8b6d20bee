#pragma once
// Helpers shared by the Catch2 tests.
#include <catch2/catch.hpp>
#include <initializer_list>
#include <string>

#include "nuri/error.hpp"

namespace nuri::testing {

// Runs f, expects a nuri::Error of `kind` whose message contains every string in `parts`.
template <typename F>
void expect_error(F&& f, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL("no error thrown");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(e.kind() == kind);
    for (const auto& p : parts) CHECK(std::string(e.what()).find(p) != std::string::npos);
  }
}

}  // namespace nuri::testing

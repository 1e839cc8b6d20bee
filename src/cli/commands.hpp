#pragma once
// The `nuri` subcommands. Each registers itself on the app; its callback does the work and
// throws nuri::Error on failure (main() prints it and exits non-zero).
#include <CLI/CLI.hpp>

namespace nuri::cli {

void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_tokenizer_train_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);

}  // namespace nuri::cli

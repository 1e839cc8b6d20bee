#pragma once
// The `nuri` subcommands. Each registers itself on the app; its callback does the work and
// throws nuri::Error on failure (main() prints it and exits non-zero).
// Commands that use the job's ranks get main()'s MPI environment: null when nuri was not started
// by an MPI launcher (a world of one rank, without MPI).
#include <CLI/CLI.hpp>

namespace nuri {
class MpiEnvironment;
}

namespace nuri::cli {

void add_train_command(CLI::App& app, const MpiEnvironment* mpi);
void add_generate_command(CLI::App& app);
void add_tokenizer_train_command(CLI::App& app);
void add_tokenize_command(CLI::App& app, const MpiEnvironment* mpi);
// nuri export / nuri import: Hugging Face model directories (hf_commands.cpp).
void add_export_command(CLI::App& app);
void add_import_command(CLI::App& app);

}  // namespace nuri::cli

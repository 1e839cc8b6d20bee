// nuri: the command-line entry point. Only here do errors turn into exit codes:
//   0 success, 1 a run-time error (data, numbers, I/O), 2 a usage or configuration error.
// main() owns the one MPI environment of the process. Started by mpirun/srun, MPI is initialized
// before anything else; started without a launcher the process is a world of one and never touches
// MPI (a singleton MPI_Init costs about half a second and a helper daemon). Under a world of more
// than one rank an error on any rank ends the whole job through abort_job, so no rank waits
// forever in a collective for a rank that has left.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "cli/commands.hpp"
#include "nuri/comm.hpp"
#include "nuri/error.hpp"
#include "nuri/version.hpp"

namespace {
// Started by an MPI launcher (Open MPI's mpirun, or a PMI/PMIx one such as srun --mpi=pmix)?
bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(var)) return true;
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<nuri::MpiEnvironment> mpi;  // null: a world of one, without MPI
  if (launched_by_mpi()) {
    try {
      mpi = std::make_unique<nuri::MpiEnvironment>(&argc, &argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "nuri: %s\n", e.what());
      return 1;
    }
  }
  const bool many_ranks = mpi && mpi->world_size() > 1;
  // Prints the error and gives the exit code; with other ranks alive, aborts the job instead.
  auto fail = [&](const std::string& text, int code) {
    if (many_ranks) nuri::abort_job(text, code);
    std::fprintf(stderr, "nuri: %s\n", text.c_str());
    return code;
  };

  CLI::App app{"nuri: train decoder language models on CPUs and GPUs, launched with mpirun"};
  app.set_version_flag("--version", std::string("nuri ") + nuri::version() +
                                        (NURI_BUILT_WITH_NCCL ? " (with NCCL)" : " (CPU; built without NCCL)"));
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  nuri train --config examples/configs/quickstart.toml\n"
      "  nuri train --config run.toml --set optim.lr=1e-3 --set train.steps=100\n"
      "  mpirun -np 4 nuri train --config run.toml          # data parallel over 4 ranks\n"
      "  nuri train --config run.toml --dry-run\n"
      "  nuri generate --model runs/quickstart/model.bin --prompt \"이 문서는\"\n"
      "Run 'nuri <command> --help' for a command's options.");
  nuri::cli::add_train_command(app, mpi.get());
  nuri::cli::add_generate_command(app);
  nuri::cli::add_tokenizer_train_command(app);
  nuri::cli::add_tokenize_command(app, mpi.get());
  nuri::cli::add_export_command(app);
  nuri::cli::add_import_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error prints CLI11's message and exits 2.
    // Every rank parses the same arguments, so every rank leaves here alike.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const nuri::Error& e) {
    return fail(e.what(), e.kind() == nuri::ErrorKind::config || e.kind() == nuri::ErrorKind::shape ? 2 : 1);
  } catch (const std::bad_alloc&) {
    return fail("out of memory; see `nuri train --dry-run` for the estimate, and lower "
                "train.batch_size, turn on model.recompute or choose a smaller model", 1);
  } catch (const std::exception& e) {
    return fail(std::string("unexpected error: ") + e.what(), 1);
  }
  return 0;
}

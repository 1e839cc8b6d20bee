// nuri: the command-line entry point. Only here do errors turn into exit codes:
//   0 success, 1 a run-time error (data, numbers, I/O), 2 a usage or configuration error.
#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.hpp"
#include "nuri/error.hpp"

#ifndef NURI_VERSION
#define NURI_VERSION "0.1.0"
#endif

int main(int argc, char** argv) {
  CLI::App app{"nuri: train decoder language models on CPUs and GPUs, launched with mpirun"};
  app.set_version_flag("--version", "nuri " NURI_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  nuri train --config examples/configs/quickstart.toml\n"
      "  nuri train --config run.toml --set optim.lr=1e-3 --set train.steps=100\n"
      "  nuri train --config run.toml --dry-run\n"
      "  nuri generate --model runs/quickstart/model.bin --prompt \"이 문서는 \"\n"
      "Run 'nuri <command> --help' for a command's options.");
  nuri::cli::add_train_command(app);
  nuri::cli::add_generate_command(app);
  nuri::cli::add_tokenizer_train_command(app);
  nuri::cli::add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a usage error prints CLI11's message and exits 2.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const nuri::Error& e) {
    std::fprintf(stderr, "nuri: %s\n", e.what());
    return e.kind() == nuri::ErrorKind::config || e.kind() == nuri::ErrorKind::shape ? 2 : 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "nuri: out of memory; see `nuri train --dry-run` for the estimate, and lower "
                         "train.batch_size, turn on model.recompute or choose a smaller model\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nuri: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}

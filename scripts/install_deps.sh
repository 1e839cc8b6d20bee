#!/usr/bin/env bash
# Installs the Debian 12 packages nuri needs to build, test and run — only the ones missing.
#
#   scripts/install_deps.sh            check, and install what is missing to build and run (apt-get)
#   scripts/install_deps.sh --tests    also what only the test suite needs (scripts/test.sh passes it)
#   NURI_SKIP_DEPS=1 scripts/...       skip this step (you installed the equivalents yourself)
#
# Quick and silent-ish when everything is present; safe to run any number of times.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config xz-utils          # toolchain; xz unpacks the corpus
  openmpi-bin libopenmpi-dev                                     # mpirun and MPI
  libeigen3-dev libopenblas-openmp-dev                           # linear algebra (OpenMP OpenBLAS)
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev            # config, CLI, JSON
  libxxhash-dev libpcre2-dev libutf8proc-dev                     # checksums; tokenizer regexes, NFC/NFKC
  catch2                                                         # the unit tests, built by default
  python3 python3-matplotlib                                     # loss plots
)
# Only the test suite needs these; the quickstart does not install them.
TEST_PACKAGES=(
  python3-torch python3-numpy                                    # PyTorch parity tests
  clang libclang-rt-14-dev                                       # libFuzzer + ASan for the fuzz tests
  iproute2                                                       # simulated hosts (network namespaces) for tests/multinode
  slurmctld slurmd slurm-client                                  # a local Slurm for tests/multinode/test_slurm.sh (brings munge)
  doxygen                                                        # the API reference (scripts/docs.sh), built warning-free by a test
)
if [[ ${1:-} == --tests ]]; then
  PACKAGES+=("${TEST_PACKAGES[@]}")
elif [[ -n ${1:-} ]]; then
  echo "install_deps: unknown argument '$1' (the only option is --tests)" >&2
  exit 2
fi

say() { echo "install_deps: $*"; }

if [[ ${NURI_SKIP_DEPS:-0} == 1 ]]; then
  say "NURI_SKIP_DEPS=1: not checking system packages"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  say "this script knows Debian/Ubuntu (apt) only. Install the equivalents of:"
  say "  ${PACKAGES[*]}"
  say "then run with NURI_SKIP_DEPS=1 to skip this check."
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$pkg")
done
# Node.js + npm run the tokenizer reference implementations (GPT-2, tiktoken, HF tokenizers) in
# the parity tests and the tokenizer benchmark's peer. Any node >= 18 will do, so the command is
# checked rather than Debian's package (a NodeSource node brings its own npm).
if [[ ${1:-} == --tests ]] && { ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; }; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  say "all ${#PACKAGES[@]} required packages are installed${1:+ (with node/npm for the tests)}"
  exit 0
fi

say "missing ${#missing[@]} of ${#PACKAGES[@]} packages: ${missing[*]}"

install_cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
sudo_cmd=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
    say "not root: using sudo"
  else
    say "not root and no sudo. Run this as root, then run me again:"
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive ${install_cmd[*]}"
    exit 1
  fi
fi

# apt-get update can fail on a flaky mirror; try a few times.
for attempt in 1 2 3; do
  say "apt-get update (attempt $attempt)"
  if "${sudo_cmd[@]}" apt-get update -q; then break; fi
  if ((attempt == 3)); then
    say "apt-get update failed three times; check the network and /etc/apt/sources.list*"
    exit 1
  fi
  sleep 5
done

say "installing: ${missing[*]}"
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive "${install_cmd[@]}"
say "done"

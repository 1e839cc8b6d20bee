#!/usr/bin/env bash
# Installs missing dependencies, builds, and runs the whole test suite with ctest:
# unit tests, gradient checks, PyTorch parity, end-to-end training runs and bad-input checks.
#
#   scripts/test.sh                       everything
#   NURI_TEST_JOBS=2 scripts/test.sh      run tests in parallel (each test uses 2 threads)
#   scripts/test.sh -R test_model         extra arguments go to ctest (here: a regex of tests)
#
# The exit code is ctest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
stamp() { printf '[%dm%02ds]' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }

echo "$(stamp) test: checking system packages"
bash scripts/install_deps.sh --tests

if [[ ${CI:-} == true ]]; then
  # Versions, for whoever reads a CI log later.
  echo "$(stamp) test: $(uname -srm); $(nproc) cores"
  { cmake --version | head -n1; c++ --version | head -n1; mpirun --version 2>&1 | head -n1; } |
    sed 's/^/  /'
fi

echo "$(stamp) test: building"
bash scripts/build.sh

# MPI tests run under mpirun; Open MPI refuses to start as root without these.
if ((EUID == 0)); then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

jobs=${NURI_TEST_JOBS:-1}
log=build/ctest.log
echo "$(stamp) test: running ctest with $jobs job(s); full log in $log"
set +e
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 1500 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

summary=$(grep -E '(tests passed|No tests were found)' "$log" | tail -n1 || true)
echo "$(stamp) test: ${summary:-ctest printed no summary} (exit code $rc)"
exit "$rc"

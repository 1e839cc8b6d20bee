#!/usr/bin/env bash
# Configures (once) and builds nuri into build/ with every core: the library, the `nuri` CLI
# (build/src/nuri), the tests and benchmarks, and the bundled corpus decompressed into
# build/data/corpus/.
#
#   scripts/build.sh                      Release build with Ninja
#   scripts/build.sh -DNURI_BENCHMARKS=OFF   extra arguments go to the cmake configure step
#   NURI_BUILD_JOBS=1 scripts/build.sh    fewer parallel compile jobs (default: all cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=build
jobs=${NURI_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}

if [[ -f $build_dir/CMakeCache.txt ]]; then
  # Reuse the existing build directory and whatever generator it was made with.
  echo "build: reusing $build_dir/ (delete it for a clean build)"
  cmake -S . -B "$build_dir" "$@"
else
  echo "build: configuring $build_dir/ (Release, Ninja)"
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi

echo "build: compiling with $jobs parallel jobs"
cmake --build "$build_dir" --parallel "$jobs"
echo "build: done — the CLI is $build_dir/src/nuri"

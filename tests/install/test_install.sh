#!/usr/bin/env bash
# nuri as an installed library, used exactly as a user would:
#   1. `cmake --install` into a temporary prefix: the public headers (and nothing of src/), both
#      libraries, the CLI, the CMake package and the pkg-config file are there; `nuri --version`
#      says the version of the generated header.
#   2. Every installed header compiles on its own against the prefix alone (MPI's flags aside),
#      and none of them includes a CUDA header.
#   3. libnuri.so exports the public API and hides internals.
#   4. examples/installed is configured out of tree with find_package(nuri) from the prefix and
#      built; parallel_loop trains under mpirun at tp 2 x dp 2 and writes a checkpoint, which
#      perplexity (shared and static builds) scores; the two agree; custom_decoder, a model defined
#      outside nuri, passes its gradient check and trains with nuri's DataParallel under mpirun.
#   5. A program built with `pkg-config --cflags --libs nuri` runs.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR WORKDIR CORPUS_DIR MPIEXEC
set -u
build=$1 src=$2 work=$3 corpus=$4 mpiexec=$5
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

# ---- 1. install -------------------------------------------------------------------------------
if ! cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1; then
  bad "cmake --install failed:"; tail -5 "$work/install.log"; exit 1
fi
want_headers=$(cd "$src/include/nuri" && ls *.hpp | sort | tr '\n' ' ')
got_headers=$(cd "$prefix/include/nuri" && ls *.hpp | grep -v '^version.hpp$' | sort | tr '\n' ' ')
[ "$want_headers" = "$got_headers" ] || bad "installed headers differ from include/nuri: $got_headers"
[ -f "$prefix/include/nuri/version.hpp" ] || bad "version.hpp was not installed"
find "$prefix/include" -name '*.hpp' -path '*/src/*' | grep -q . && bad "internal headers were installed"
for f in lib/libnuri.a lib/libnuri.so bin/nuri lib/cmake/nuri/nuriConfig.cmake lib/cmake/nuri/nuriConfigVersion.cmake \
         lib/cmake/nuri/nuriTargets.cmake lib/pkgconfig/nuri.pc; do
  [ -e "$prefix/$f" ] || bad "$f was not installed"
done
version=$(sed -nE 's/#define NURI_VERSION_STRING "(.*)"/\1/p' "$prefix/include/nuri/version.hpp")
cli=$("$prefix/bin/nuri" --version 2>&1)
[[ $cli == "nuri $version "* ]] || bad "nuri --version says '$cli', the header $version"
ok "installed $(ls "$prefix/include/nuri" | wc -l) headers, libnuri.a, libnuri.so, bin/nuri ($cli), CMake package, nuri.pc"

# ---- 2. header hygiene against the prefix ---------------------------------------------------------
mpi_flags=$(mpicxx --showme:compile)
n=0
for h in "$prefix"/include/nuri/*.hpp; do
  name=$(basename "$h")
  printf '#include "nuri/%s"\n#include "nuri/%s"\nint main() { return 0; }\n' "$name" "$name" > "$work/hyg.cpp"
  if ! g++ -std=c++20 -fsyntax-only -Wall -Wextra -I"$prefix/include" $mpi_flags "$work/hyg.cpp" 2> "$work/hyg.log"; then
    bad "nuri/$name does not compile on its own against the prefix:"; head -5 "$work/hyg.log"
  fi
  n=$((n + 1))
done
if grep -lE '#include\s*[<"](cuda|cublas|cudnn|nccl|cuda_runtime)' "$prefix"/include/nuri/*.hpp; then
  bad "an installed header includes a CUDA header"
else
  ok "$n installed headers compile alone (twice included) with no CUDA on the include path, and none includes a CUDA header"
fi

# ---- 3. symbols -------------------------------------------------------------------------------------
syms=$(nm -DC --defined-only "$prefix/lib/libnuri.so")
for public in 'nuri::make_backend' 'nuri::Model::forward_backward' 'nuri::save_checkpoint' 'nuri::version()' \
              'typeinfo for nuri::Error'; do
  grep -qF "$public" <<< "$syms" || bad "libnuri.so does not export $public"
done
for internal in 'nuri::CpuBackend' 'nuri::cpu::sgemm' 'nuri::model_config_to_json' 'toml::' 'pcre2_'; do
  grep -qF "$internal" <<< "$syms" && bad "libnuri.so exports the internal $internal"
done
ok "libnuri.so exports the public API ($(grep -c 'nuri::' <<< "$syms") nuri:: symbols) and hides internals (CpuBackend, sgemm, toml++, PCRE2)"

# ---- 4. the examples, out of tree, from the installed package ----------------------------------------
if ! cmake -S "$src/examples/installed" -B "$work/examples" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
       > "$work/examples.log" 2>&1 || ! cmake --build "$work/examples" -j2 >> "$work/examples.log" 2>&1; then
  bad "examples/installed did not configure and build against the prefix:"; tail -15 "$work/examples.log"
else
  ok "examples/installed built against $prefix (find_package(nuri) $version)"
  mpi=("$mpiexec" --oversubscribe --bind-to none)
  [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
  head -c 200000 "$corpus/en_moby_dick.txt" > "$work/text.txt"
  if OMP_NUM_THREADS=1 "${mpi[@]}" -np 4 "$work/examples/parallel_loop" --tp 2 --steps 30 --text "$work/text.txt" \
       --out "$work/run" > "$work/loop.log" 2>&1; then
    ok "parallel_loop (mpirun -np 4, tp 2 x dp 2, ZeRO-1): $(grep -m1 -o 'loss .* -> .*' "$work/loop.log")"
  else
    bad "parallel_loop failed or its loss did not fall:"; tail -5 "$work/loop.log"
  fi
  if OMP_NUM_THREADS=1 "${mpi[@]}" -np 2 "$work/examples/custom_decoder" --steps 40 --text "$work/text.txt" \
       > "$work/custom.log" 2>&1; then
    ok "custom_decoder (mpirun -np 2, nuri's DataParallel + ZeRO-1 on a model defined outside nuri): $(grep -m1 -o 'gradient check: .*' "$work/custom.log"); $(grep -m1 -o 'loss .* -> [0-9.]*' "$work/custom.log")"
  else
    bad "custom_decoder failed (its gradient check or training):"; tail -5 "$work/custom.log"
  fi
  head -c 20000 "$corpus/en_brown.txt" > "$work/score.txt"
  a=$("$work/examples/perplexity" "$work/run" "$work/score.txt" 2>&1) || bad "perplexity: $a"
  b=$("$work/examples/perplexity_static" "$work/run" "$work/score.txt" 2>&1) || bad "perplexity_static: $b"
  [ -n "$a" ] && [ "$a" = "$b" ] && ok "perplexity of the 2x2 checkpoint, shared = static: $a" ||
    bad "perplexity shared and static differ: '$a' vs '$b'"
  ldd "$work/examples/perplexity_static" | grep -q libnuri && bad "perplexity_static links libnuri.so"
fi

# ---- 5. pkg-config ------------------------------------------------------------------------------------
cat > "$work/pc.cpp" <<'CPP'
#include <cstdio>
#include "nuri/nuri.hpp"
#include "nuri/version.hpp"
int main() {
  auto be = nuri::make_backend("cpu", 1);
  nuri::Model m(nuri::model_preset("gpt2-tiny"), *be);
  std::printf("nuri %s (headers %s): %zu parameters\n", nuri::version(), NURI_VERSION_STRING, m.num_params());
  return 0;
}
CPP
if PKG_CONFIG_PATH="$prefix/lib/pkgconfig" g++ "$work/pc.cpp" -o "$work/pc" \
     $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs nuri) 2> "$work/pc.log" && out=$("$work/pc"); then
  ok "pkg-config build: $out"
else
  bad "a program built with pkg-config --cflags --libs nuri failed:"; head -5 "$work/pc.log"
fi

[ $fail -eq 0 ] && echo "ok: nuri installs, and programs build and run against the installed package"
exit $fail

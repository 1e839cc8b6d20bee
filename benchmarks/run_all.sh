#!/usr/bin/env bash
# Runs every CPU benchmark and prints the figures the README quotes: GEMM GFLOP/s (OpenBLAS vs
# Eigen), training-step tokens/s and MFU for gpt2-tiny and gpt2-124m at T=256 on 2 threads, the
# peak RSS against the estimate, and the PyTorch peer on the same model, batch and cores.
#
# Where the machine sets OPENBLAS_CORETYPE (which holds OpenBLAS, and so PyTorch's matmuls, to an
# older kernel), everything runs twice: as the machine is set up, and with OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset for nuri and the peer alike, so each side also gets its best kernels.
# Last, nuri's opt-in mixed precision (cpu_gemm = "bf16", where the CPU has AVX512_BF16) against
# the best PyTorch figure seen for the same model.
#   benchmarks/run_all.sh [build-dir]      (NURI_BENCH_STEPS=N for more timed steps)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${NURI_BENCH_STEPS:-6}
export OMP_NUM_THREADS=2
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "cpu family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)"

declare -A best_peer=()
run_pair() {  # label preset batch [env -u ...]
  local label=$1 preset=$2 batch=$3
  shift 3
  echo "== training step ($label): $preset, B=$batch, T=256"
  local nuri_out peer_out ours peer
  nuri_out=$("$@" "$build/benchmarks/bench_step" --preset "$preset" --batch "$batch" --seq 256 --steps "$steps")
  echo "$nuri_out"
  peer_out=$("$@" /usr/bin/python3 benchmarks/peer_pytorch.py --preset "$preset" --batch "$batch" --seq 256 --mode best)
  grep -v '^  step' <<<"$peer_out"
  ours=$(grep '^NURI' <<<"$nuri_out" | sed -E 's/.*tokens_per_s=([0-9.]+).*/\1/')
  peer=$(grep '^PEER' <<<"$peer_out" | sed -E 's/.*tokens_per_s=([0-9.]+).*/\1/')
  echo "RESULT [$label] $preset B=$batch T=256: nuri $ours tokens/s, PyTorch $peer tokens/s," \
       "ratio $(awk -v a="$ours" -v b="$peer" 'BEGIN{printf "%.2f", a/b}')x"
  if awk -v a="$peer" -v b="${best_peer[$preset]:-0}" 'BEGIN{exit !(a > b)}'; then best_peer[$preset]=$peer; fi
}

envs=("as set up (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})")
runners=("env")
if [[ -n ${OPENBLAS_CORETYPE:-} || -n ${OPENBLAS_L2_SIZE:-} ]]; then
  envs+=("OPENBLAS_CORETYPE unset")
  runners+=("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE")
fi
for i in "${!envs[@]}"; do
  # shellcheck disable=SC2086  # the runner is a command with its arguments
  echo "== GEMM (${envs[i]})"
  ${runners[i]} "$build/benchmarks/bench_gemm" 2
  # shellcheck disable=SC2086
  run_pair "${envs[i]}" gpt2-tiny 8 ${runners[i]}
  # shellcheck disable=SC2086
  run_pair "${envs[i]}" gpt2-124m 4 ${runners[i]}
done

if grep -qw avx512_bf16 /proc/cpuinfo; then
  for pb in "gpt2-tiny 8" "gpt2-124m 4"; do
    read -r preset batch <<<"$pb"
    echo "== training step (nuri cpu_gemm=bf16, as set up): $preset, B=$batch, T=256"
    out=$(NURI_CPU_GEMM=bf16 "$build/benchmarks/bench_step" --preset "$preset" --batch "$batch" --seq 256 --steps "$steps")
    echo "$out"
    ours=$(grep '^NURI' <<<"$out" | sed -E 's/.*tokens_per_s=([0-9.]+).*/\1/')
    peer=${best_peer[$preset]}
    echo "RESULT [nuri bf16 GEMM vs best PyTorch fp32] $preset B=$batch T=256: nuri $ours tokens/s," \
         "PyTorch $peer tokens/s, ratio $(awk -v a="$ours" -v b="$peer" 'BEGIN{printf "%.2f", a/b}')x"
  done
else
  echo "== bf16: this CPU has no AVX512_BF16; skipped"
fi

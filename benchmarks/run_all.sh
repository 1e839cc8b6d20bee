#!/usr/bin/env bash
# Runs every CPU benchmark and prints the figures the README quotes: GEMM GFLOP/s (OpenBLAS vs
# Eigen), training-step tokens/s and MFU for gpt2-tiny and gpt2-124m at T=256 on 2 threads, the
# peak RSS against the estimate, and the PyTorch peer on the same model, batch and cores.
#   benchmarks/run_all.sh [build-dir]      (NURI_BENCH_STEPS=N for more timed steps)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${NURI_BENCH_STEPS:-6}
export OMP_NUM_THREADS=2
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== GEMM"
"$build/benchmarks/bench_gemm" 2

run_pair() {  # preset batch
  local preset=$1 batch=$2
  echo "== training step: $preset, B=$batch, T=256"
  local nuri_line peer_line
  nuri_line=$("$build/benchmarks/bench_step" --preset "$preset" --batch "$batch" --seq 256 --steps "$steps" | tee /dev/stderr | grep '^NURI')
  peer_line=$(/usr/bin/python3 benchmarks/peer_pytorch.py --preset "$preset" --batch "$batch" --seq 256 --mode best | tee /dev/stderr | grep '^PEER')
  local ours peer
  ours=$(sed -E 's/.*tokens_per_s=([0-9.]+).*/\1/' <<<"$nuri_line")
  peer=$(sed -E 's/.*tokens_per_s=([0-9.]+).*/\1/' <<<"$peer_line")
  echo "RESULT $preset B=$batch T=256: nuri $ours tokens/s, PyTorch $peer tokens/s, ratio $(awk -v a="$ours" -v b="$peer" 'BEGIN{printf "%.2f", a/b}')x"
}
run_pair gpt2-tiny 8
run_pair gpt2-124m 4

#!/usr/bin/env bash
# Checkpoint save/stall/load for gpt2-124m (bench_checkpoint) against PyTorch's torch.save /
# torch.load of the same state (peer_checkpoint.py), in the same run, same disk.
#   benchmarks/checkpoint.sh [build-dir] [preset]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
preset=${2:-gpt2-124m}
export OMP_WAIT_POLICY=PASSIVE  # no spinning OpenMP threads beside the writer
out=$("$build/benchmarks/bench_checkpoint" --preset "$preset")
echo "$out"
bytes=$(grep '^NURI' <<<"$out" | sed -E 's/.* bytes=([0-9]+).*/\1/')
peer=$(/usr/bin/python3 benchmarks/peer_checkpoint.py --params $((bytes / 12)) --repeats 4)
echo "$peer"
val() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$2"; }
ours=$(grep '^NURI' <<<"$out")
echo "RESULT $preset: blocking save nuri $(val save_s "$ours") s vs torch.save $(val save_s "$peer") s" \
     "(ratio $(awk -v a="$(val save_s "$peer")" -v b="$(val save_s "$ours")" 'BEGIN{printf "%.2f", a/b}')x);" \
     "training stall with nuri's background save $(val stall_s "$ours") s;" \
     "load nuri $(val load_s "$ours") s (+ $(val verify_s "$ours") s verify) vs torch.load $(val load_s "$peer") s"

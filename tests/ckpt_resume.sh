#!/usr/bin/env bash
# Checkpoints never lose a run. `nuri train` with a tiny llama (4 heads, 2 kv heads) on byte
# shards, 20 steps; every comparison is against one process training straight through:
#   exact resume    stop at step 10 (train.stop_at) + resume = straight, BITWISE (losses and
#                   final parameters), at (tp, dp) = (1,1) and (2,2) with ZeRO-1;
#   any layout      saved at one layout, resumed at another, within fp32 reduction order (1e-5):
#                   2x2 ZeRO-1 -> 1x1, 1x2 -> 2x1, 1x1 -> 4x1 (kv heads replicated);
#   retention       checkpoint.every 1, keep_last 2, keep_every 4 keeps steps 4, 8, 9, 10;
#   bad input       a truncated rank file, a flipped byte, a missing rank file, another model, a
#                   layout the heads cannot split, a full disk during a save (ulimit -f): each a
#                   non-zero exit with a message naming the problem, and nothing overwritten;
#   SIGKILL         runs killed at random moments while saving every step always leave `latest`
#                   naming a checkpoint that loads.
# Usage: ckpt_resume.sh NURI DP_COMPARE WORKDIR CORPUS_DIR MPIEXEC
set -u
nuri=$1 compare=$2 work=$3 corpus=$4 mpiexec=$5
rm -rf "$work"
mkdir -p "$work"
mpi=("$mpiexec" --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
export OMP_NUM_THREADS=1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

"$nuri" tokenize --tokenizer bytes --val-fraction 0.02 --quiet -o "$work/shards" "$corpus/en_moby_dick.txt" || exit 1

common=(--set model.preset=llama-tiny --set model.vocab_size=257 --set model.max_seq_len=32 --set model.n_layer=2
        --set model.d_model=64 --set model.n_head=4 --set model.n_kv_head=2 --set model.d_ff=190
        --set train.seq_len=32 --set train.steps=20 --set train.eval_every=10 --set train.eval_batches=2
        --set train.peak_gflops=100 --set train.sample_tokens=0 --set train.threads=1 --set train.log_every=100
        --set optim.lr=1e-3 --set optim.warmup_steps=5 --set "data.datasets=[\"$work/shards\"]"
        --set parallel.bucket_mb=0.1)
# run NAME NP [args...]: trains into $work/NAME (NP 0: no mpirun); the exit code is returned.
run() {
  local name=$1 np=$2
  shift 2
  local cmd=("$nuri" train "${common[@]}" --set "train.run_dir=\"$work/$name\"" "$@")
  [ "$np" -gt 0 ] && cmd=("${mpi[@]}" -np "$np" "${cmd[@]}")
  "${cmd[@]}" >> "$work/$name.log" 2>&1
}
train() {  # like run, but a failure is a test failure
  run "$@" || { bad "$1 did not train:"; tail -5 "$work/$1.log"; }
}
check() { "$compare" "$work/$1" "$work/$2" "${@:3}" || fail=1; }
resumed_line() { grep -m1 -o "resumed from .*" "$work/$1.log" || bad "$1: no 'resumed from' line"; }

# ---- exact resume ------------------------------------------------------------------------------
train straight 0 --set train.batch_size=4
train stop1x1 0 --set train.batch_size=4 --set train.stop_at=10
train stop1x1 0 --set train.batch_size=4
echo "1x1: $(resumed_line stop1x1)"
check straight stop1x1 --loss-rtol 0 --param-atol 0

# Resumed from the older step-10 again, the run re-saves step 20 over the existing one: the new
# directory is swapped in, the result is the same, nothing is left behind.
train stop1x1 0 --set train.batch_size=4 --resume "$work/stop1x1/checkpoints/step-00000010"
check straight stop1x1 --loss-rtol 0 --param-atol 0
[ "$(cat "$work/stop1x1/checkpoints/latest")" = step-00000020 ] || bad "re-save: latest is not step-00000020"
ls -a "$work/stop1x1/checkpoints" | grep -qE '^\.(tmp|old)-' && bad "re-save: a temporary directory was left behind"

train straight2x2 4 --set train.batch_size=2 --set parallel.tp=2 --set parallel.zero1=true
train stop2x2 4 --set train.batch_size=2 --set parallel.tp=2 --set parallel.zero1=true --set train.stop_at=10
train stop2x2 4 --set train.batch_size=2 --set parallel.tp=2 --set parallel.zero1=true
echo "2x2: $(resumed_line stop2x2)"
check straight2x2 stop2x2 --loss-rtol 0 --param-atol 0 --expect-layout 2 2

# ---- any layout --------------------------------------------------------------------------------
layout_case() {  # NAME NP_SAVE "SAVE ARGS" NP_LOAD "LOAD ARGS"
  local name=$1
  train "$name" "$2" $3 --set train.stop_at=10
  train "$name" "$4" $5
  echo "$name: $(resumed_line "$name")"
  check straight "$name"
}
layout_case a22to11 4 "--set train.batch_size=2 --set parallel.tp=2 --set parallel.zero1=true" 0 "--set train.batch_size=4"
layout_case a12to21 2 "--set train.batch_size=2" 2 "--set train.batch_size=4 --set parallel.tp=2"
layout_case a11to41 0 "--set train.batch_size=4" 4 "--set train.batch_size=4 --set parallel.tp=4"

# ---- export from a checkpoint, and start a run from imported weights --------------------------------
# The 2x2 ZeRO-1 checkpoint of step 20, assembled from its four rank files, must export exactly
# what the run's model.bin (gathered from the TP slices at the end) exports.
if "$nuri" export --model "$work/stop2x2" --out "$work/hf_ckpt" > "$work/export_ckpt.log" 2>&1 &&
   "$nuri" export --model "$work/stop2x2/model.bin" --out "$work/hf_bin" > "$work/export_bin.log" 2>&1 &&
   cmp -s "$work/hf_ckpt/model.safetensors" "$work/hf_bin/model.safetensors"; then
  echo "ok: export of the 2x2 checkpoint = export of its model.bin ($(head -1 "$work/export_ckpt.log"))"
else
  bad "export from the checkpoint differs from the model file's (logs: $work/export_*.log)"
fi
if "$nuri" import --hf "$work/hf_ckpt" --out "$work/imported/model.bin" > "$work/import.log" 2>&1; then
  train init 0 --set train.batch_size=4 --set train.steps=2 --set "train.init_from=\"$work/imported/model.bin\""
  grep -q "starting from the weights in" "$work/init.log" || bad "init_from: no 'starting from' line"
  first=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"train\"" in l][0]["loss"])' "$work/init/metrics.jsonl")
  fresh=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"train\"" in l][0]["loss"])' "$work/straight/metrics.jsonl")
  python3 -c "import sys; sys.exit(0 if $first < $fresh - 0.5 else 1)" && echo "ok: init_from the imported weights: first loss $first (fresh weights: $fresh)" ||
    bad "init_from: first loss $first is not well below a fresh start's $fresh"
else
  bad "import of the exported checkpoint failed:"; tail -3 "$work/import.log"
fi

# ---- retention -----------------------------------------------------------------------------------
train keep 0 --set train.batch_size=4 --set train.steps=10 --set checkpoint.every=1 --set checkpoint.keep_last=2 \
  --set checkpoint.keep_every=4
kept=$(cd "$work/keep/checkpoints" && echo step-*)
[ "$kept" = "step-00000004 step-00000008 step-00000009 step-00000010" ] || bad "retention kept: $kept"
[ "$(cat "$work/keep/checkpoints/latest")" = step-00000010 ] || bad "retention: latest is $(cat "$work/keep/checkpoints/latest")"
echo "retention: kept $kept"

# ---- bad input -------------------------------------------------------------------------------------
# expect_fail NAME PATTERN NP [args...]: the run must fail, its log must match PATTERN.
expect_fail() {
  local name=$1 pattern=$2
  shift 2
  if run "$name" "$@"; then
    bad "$name: trained, expected an error matching '$pattern'"
  elif ! grep -qE "$pattern" "$work/$name.log"; then
    bad "$name: no message matching '$pattern':"; tail -3 "$work/$name.log"
  else
    echo "ok: $name: $(grep -m1 -oE "$pattern.{0,80}" "$work/$name.log")"
  fi
}
base=$work/stop1x1/checkpoints/step-00000010
snapshot() { (cd "$1" && cat manifest.json rank-*.bin | md5sum); }
variant() {  # variant NAME: a copy of the step-10 checkpoint to damage
  rm -rf "$work/$1"
  cp -r "$base" "$work/$1"
}
variant trunc; truncate -s -100 "$work/trunc/rank-00000.bin"
expect_fail r_trunc "is truncated" 0 --set train.batch_size=4 --resume "$work/trunc"
variant flip; printf '\x55' | dd of="$work/flip/rank-00000.bin" bs=1 seek=5000 conv=notrunc status=none
expect_fail r_flip "fails its checksum" 0 --set train.batch_size=4 --resume "$work/flip"
rm -rf "$work/missing"; cp -r "$work/stop2x2/checkpoints/step-00000010" "$work/missing"; rm "$work/missing/rank-00002.bin"
expect_fail r_missing "rank-00002.bin' is missing" 0 --set train.batch_size=4 --resume "$work/missing"
expect_fail r_model "holds another model: model.d_model is 64 there and 96" 0 --set train.batch_size=4 \
  --set model.d_model=96 --resume "$base"
expect_fail r_layout "parallel.tp = 3 does not divide model.n_head = 4" 3 --set train.batch_size=4 \
  --set parallel.tp=3 --resume "$base"
# A full disk during a save: a file-size limit makes the rank file's write fail (SIGXFSZ ignored
# so the write returns EFBIG). The earlier checkpoint and `latest` must be untouched.
rm -rf "$work/full"; cp -r "$work/stop1x1" "$work/full"; rm -f "$work/full.log"
before=$(snapshot "$work/full/checkpoints/step-00000020")
if (trap '' XFSZ; ulimit -f 64; run full 0 --set train.batch_size=4 --set train.steps=22 --set train.save=false); then
  bad "full disk: the run succeeded"
elif ! grep -qE "rank-00000.bin' failed after [0-9]+ bytes: File too large \(disk full" "$work/full.log"; then
  bad "full disk: no clear message:"; tail -3 "$work/full.log"
else
  echo "ok: full disk: $(grep -m1 -oE "writing '[^']*' failed.{0,60}" "$work/full.log")"
fi
[ "$(cat "$work/full/checkpoints/latest")" = step-00000020 ] || bad "full disk: latest changed to $(cat "$work/full/checkpoints/latest")"
[ "$(snapshot "$work/full/checkpoints/step-00000020")" = "$before" ] || bad "full disk: step-00000020 changed"
ls -a "$work/full/checkpoints" | grep -q '^\.tmp-' && bad "full disk: a temporary directory was left behind"

# ---- SIGKILL at random moments while saving ---------------------------------------------------------
# A wider model (5.6 M parameters, 67 MB per checkpoint) so that saving is most of each step; a
# checkpoint every step; kill -9 at a random moment. A stale .tmp-* directory means the kill
# landed inside a save.
for i in 1 2 3 4 5; do
  rm -rf "$work/kill" "$work/kill.log"
  ( exec "$nuri" train "${common[@]}" --set model.d_model=512 --set model.d_ff=2048 --set train.batch_size=1 \
      --set train.steps=200 --set checkpoint.every=1 --set checkpoint.verify=false --set train.eval_every=0 \
      --set "train.run_dir=\"$work/kill\"" > "$work/kill.log" 2>&1 ) &
  pid=$!
  sleep "$(awk -v s=$RANDOM 'BEGIN { printf "%.2f", 1.0 + (s % 100) / 50 }')"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  latest=$(cat "$work/kill/checkpoints/latest" 2>/dev/null || echo none)
  if [ "$latest" = none ]; then
    echo "kill $i: killed before the first checkpoint (nothing to check)"
    continue
  fi
  step=$((10#${latest#step-}))
  stale=$(ls -a "$work/kill/checkpoints" | grep -c '^\.tmp-')
  if "$nuri" train "${common[@]}" --set model.d_model=512 --set model.d_ff=2048 --set train.batch_size=1 \
       --set train.steps=200 --set train.stop_at=$((step + 1)) --set checkpoint.every=0 --set train.eval_every=0 \
       --set "train.run_dir=\"$work/kill\"" > "$work/kill.resume.log" 2>&1 &&
     grep -q "resumed from .*$latest: step $step" "$work/kill.resume.log"; then
    echo "ok: kill $i: latest = $latest loads and training continues$([ "$stale" -gt 0 ] && echo " (killed inside a save: $stale partial directory)")"
  else
    bad "kill $i: latest = $latest does not resume:"; tail -3 "$work/kill.resume.log"
  fi
done

[ $fail -eq 0 ] && echo "ok: checkpoints resume exactly, at any layout, and survive bad input and SIGKILL"
exit $fail

#!/usr/bin/env bash
# `nuri tokenize` must write the same token stream (shards in manifest order) on 1 and 2 threads
# and under `mpirun -np 2`, whatever the shard and work-unit sizes; then `nuri train` runs on the
# shards. The stream is compared by the xxh64 that `nuri tokenize --verify` prints per split.
# Usage: tokenize_mpi.sh NURI WORKDIR CORPUS_DIR
set -eu
nuri=$1 work=$2 corpus=$3
rm -rf "$work"
mkdir -p "$work"
inputs=("$corpus/en_moby_dick.txt" "$corpus/ko_prose.txt")
common=(--tokenizer bytes --val-fraction 0.02 --quiet)

"$nuri" tokenize "${common[@]}" --threads 1 -o "$work/t1" "${inputs[@]}"
"$nuri" tokenize "${common[@]}" --threads 2 --shard-tokens 700000 --unit-bytes 300000 -o "$work/t2" "${inputs[@]}"
mpi=(mpirun -np 2 --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
"${mpi[@]}" "$nuri" tokenize "${common[@]}" --threads 1 --shard-tokens 500000 --unit-bytes 250000 \
  -o "$work/mpi2" "${inputs[@]}"

# The stream hashes, token and document counts: everything but the shard layout.
streams() { "$nuri" tokenize --verify "$1" --tokenizer bytes | grep -E '^  (train|val) ' | sed -E 's/ +[0-9]+ shard\(s\)//'; }
ref=$(streams "$work/t1")
echo "$ref"
fail=0
for d in t2 mpi2; do
  got=$(streams "$work/$d")
  if [ "$got" != "$ref" ]; then
    echo "FAIL: $d differs from t1:"; echo "$got"; fail=1
  else
    echo "ok   $d: same token streams ($(ls "$work/$d"/*.bin | wc -l) shard files)"
  fi
done
# The MPI run really split the work: both ranks wrote shards.
if ! ls "$work/mpi2"/train-00001-*.bin >/dev/null 2>&1; then echo "FAIL: rank 1 wrote no shard"; fail=1; fi

# A short training run on the shards (two datasets, weighted).
"$nuri" train --set model.preset=gpt2-tiny --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 \
  --set model.n_kv_head=2 --set model.vocab_size=257 --set train.steps=3 --set train.seq_len=32 \
  --set train.batch_size=2 --set train.eval_every=0 --set train.eval_batches=2 --set train.peak_gflops=100 \
  --set train.sample_tokens=0 --set train.save=false --set "train.run_dir=\"$work/run\"" \
  --set "data.datasets=[\"$work/t1\", \"$work/mpi2\"]" --set "data.weights=[1, 1]" --set data.verify_shards=true \
  > "$work/train.log" 2>&1 || { echo "FAIL: nuri train on the shards"; tail -5 "$work/train.log"; fail=1; }
grep -q "step 3/3" "$work/train.log" && echo "ok   nuri train on the shards: $(grep -m1 'shard dataset' "$work/train.log")"
exit $fail

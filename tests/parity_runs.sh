# Sourced by dp_parity.sh and tp_parity.sh: the shared set-up of a parity test that trains the
# same tiny model at several layouts and compares the runs (tests/dp_compare.cpp).
#   source parity_runs.sh NURI DP_COMPARE WORKDIR CORPUS_DIR MPIEXEC
# Sets nuri, compare, work, mpi (mpirun and its flags), common (the shared --set flags, on byte
# shards of Moby-Dick tokenized into $work/shards) and fail=0, and defines:
#   train NAME NP [--set ...]   one run into $work/NAME with "${model[@]}" (NP 0: no mpirun)
#   check REF RUN [options]     dp_compare REF RUN; a difference sets fail=1
nuri=$1 compare=$2 work=$3 corpus=$4 mpiexec=$5
rm -rf "$work"
mkdir -p "$work"
mpi=("$mpiexec" --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
export OMP_NUM_THREADS=1

"$nuri" tokenize --tokenizer bytes --val-fraction 0.02 --quiet -o "$work/shards" "$corpus/en_moby_dick.txt"

common=(--set model.vocab_size=257 --set model.max_seq_len=32 --set model.n_layer=2 --set model.d_model=64
        --set model.n_head=4 --set train.seq_len=32 --set train.steps=20 --set train.eval_every=10
        --set train.eval_batches=2 --set train.peak_gflops=100 --set train.sample_tokens=0 --set train.threads=1
        --set train.log_every=100 --set optim.lr=1e-3 --set optim.warmup_steps=5
        --set "data.datasets=[\"$work/shards\"]" --set parallel.bucket_mb=0.1)
fail=0
train() {
  local name=$1 np=$2
  shift 2
  local cmd=("$nuri" train "${common[@]}" "${model[@]}" --set "train.run_dir=\"$work/$name\"" "$@")
  [ "$np" -gt 0 ] && cmd=("${mpi[@]}" -np "$np" "${cmd[@]}")
  if ! "${cmd[@]}" > "$work/$name.log" 2>&1; then
    echo "FAIL: $name did not train:"; tail -5 "$work/$name.log"; fail=1
  fi
}
check() {
  "$compare" "$work/$1" "$work/$2" "${@:3}" || fail=1
}

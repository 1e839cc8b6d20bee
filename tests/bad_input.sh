#!/usr/bin/env bash
# Bad input through the CLI: each case must exit non-zero, print a message that names the
# problem, and not crash (no signal exit codes). Usage: bad_input.sh NURI WORKDIR CORPUS_DIR
set -u
nuri=$1 work=$2 corpus=$3
mkdir -p "$work"
failures=0 cases=0

# expect NAME EXPECTED_EXIT PATTERN -- ARGS...
expect() {
  local name=$1 want=$2 pattern=$3
  shift 4
  cases=$((cases + 1))
  local out rc
  out=$("$nuri" "$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL $name: exit code $rc, expected $want. Output:"; echo "$out" | tail -5
    failures=$((failures + 1))
  elif ! grep -qF -- "$pattern" <<<"$out"; then
    echo "FAIL $name: message lacks '$pattern'. Output:"; echo "$out" | tail -5
    failures=$((failures + 1))
  else
    echo "ok   $name: $(grep -F -- "$pattern" <<<"$out" | head -1)"
  fi
}

base=(train --set model.preset=gpt2-tiny --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 --set model.n_kv_head=2
      --set model.vocab_size=257 --set train.steps=2 --set train.seq_len=32 --set train.batch_size=2
      --set train.peak_gflops=100 --set "train.run_dir=\"$work/run\""
      --set "data.train_files=[\"$corpus/en_moby_dick.txt\"]")

printf '[model]\nn_layers = 4\n' > "$work/typo.toml"
expect "unknown config key" 2 "unknown key 'model.n_layers' at $work/typo.toml:2 (did you mean 'model.n_layer'?)" -- \
  train --config "$work/typo.toml"
expect "unknown --set key" 2 "unknown key 'optim.learning_rate'" -- "${base[@]}" --set optim.learning_rate=1
expect "n_head not dividing d_model" 2 "model.n_head (3) must divide model.d_model (32); the nearest that do are 2 and 4" -- \
  "${base[@]}" --set model.n_head=3 --set model.n_kv_head=3
expect "missing data file" 1 "cannot open data file '$work/missing.txt'" -- \
  "${base[@]}" --set "data.train_files=[\"$work/missing.txt\"]"
expect "data path is a directory" 1 "'$work' (data.train_files) is a directory" -- \
  "${base[@]}" --set "data.train_files=[\"$work\"]"
printf 'fine text\n\n\xb4\xeb\xc7\xd1 (EUC-KR)\n' > "$work/euckr.txt"
expect "invalid UTF-8 in data" 1 "'$work/euckr.txt' is not valid UTF-8: byte 11 (line 3)" -- \
  "${base[@]}" --set "data.train_files=[\"$work/euckr.txt\"]"
expect "run larger than memory" 1 "MiB are available; lower train.batch_size, turn on model.recompute" -- \
  "${base[@]}" --set model.preset=gpt2-1.5b --set model.vocab_size=50257 --set model.n_layer=48 --set model.max_seq_len=1024 \
  --set model.d_model=1600 --set model.n_head=25 --set model.n_kv_head=25 --set train.batch_size=65536 --set train.seq_len=1024
expect "empty run_dir" 2 "train.run_dir must not be empty" -- "${base[@]}" --set train.run_dir=
expect "unwritable run_dir" 1 "cannot create train.run_dir '/proc/nuri'" -- "${base[@]}" --set train.run_dir=/proc/nuri
expect "missing config file" 1 "cannot open config file '$work/nope.toml'" -- train --config "$work/nope.toml"
expect "bad value type" 2 "key 'train.steps' at --set train.steps=many must be an integer" -- \
  "${base[@]}" --set train.steps=many
expect "vocab smaller than tokenizer" 2 "model.vocab_size (100) is smaller than the bytes tokenizer's vocabulary (257)" -- \
  "${base[@]}" --set model.vocab_size=100
expect "cuda requested but absent" 1 "CUDA" -- "${base[@]}" --set backend=cuda
expect "nccl gradients without the cuda backend" 2 "parallel.dp_comm = \"nccl\" reduces gradients in GPU memory: it needs backend = \"cuda\"" -- \
  "${base[@]}" --set parallel.dp_comm=nccl
expect "unknown dp_comm" 2 "parallel.dp_comm" -- "${base[@]}" --set parallel.dp_comm=tcp
expect "NaN loss stops the run" 1 "stopping (train.nonfinite = \"stop\")" -- \
  "${base[@]}" --set optim.lr=1e10 --set optim.min_lr=1e10 --set optim.warmup_steps=0 --set optim.grad_clip=0 \
  --set train.steps=40 --set train.nonfinite=stop
printf 'garbage' > "$work/model.bin"
expect "generate from a non-model file" 1 "is not a nuri model file" -- generate --model "$work/model.bin" --prompt hi
expect "generate without --model" 2 "--model is required" -- generate --prompt hi

# Token shards: a good directory, then damaged copies of it.
if "$nuri" tokenize --tokenizer bytes --quiet -o "$work/shards" "$corpus/en_moby_dick.txt"; then
  text_base=("${base[@]:0:${#base[@]}-2}")  # base without data.train_files
  shard=$(cd "$work/shards" && ls train-*.bin | head -1)
  rm -rf "$work/trunc" "$work/foreign" "$work/otherhash"
  cp -r "$work/shards" "$work/trunc"
  truncate -s -1000 "$work/trunc/$shard"
  expect "truncated shard (verify)" 1 "token shard '$work/trunc/$shard' is truncated: the header promises" -- \
    tokenize --verify "$work/trunc"
  expect "truncated shard (train)" 1 "token shard '$work/trunc/$shard' is truncated" -- \
    "${text_base[@]}" --set "data.datasets=[\"$work/trunc\"]"
  cp -r "$work/shards" "$work/foreign"
  cp "$corpus/en_moby_dick.txt" "$work/foreign/$shard"
  expect "foreign file as a shard" 1 "'$work/foreign/$shard' is not a nuri token shard" -- \
    "${text_base[@]}" --set "data.datasets=[\"$work/foreign\"]"
  cp -r "$work/shards" "$work/otherhash"
  sed -i 's/"hash": "0x[0-9a-f]*"/"hash": "0x00000000000000ff"/' "$work/otherhash/manifest.json"
  expect "tokenizer hash mismatch" 1 "were made by tokenizer 'bytes' (hash 0x00000000000000ff" -- \
    "${text_base[@]}" --set "data.datasets=[\"$work/otherhash\"]"
  expect "not a shard directory" 1 "'$work' has no manifest.json" -- \
    "${text_base[@]}" --set "data.datasets=[\"$work\"]"
  expect "both train_files and datasets" 2 "both data.train_files and data.datasets are set" -- \
    "${base[@]}" --set "data.datasets=[\"$work/shards\"]"
  expect "no training data" 2 "no training data: set data.train_files" -- "${text_base[@]}"
else
  echo "FAIL nuri tokenize could not write $work/shards"; failures=$((failures + 1))
fi
expect "tokenize without --tokenizer" 2 "--tokenizer is required" -- tokenize -o "$work/x" "$corpus/en_moby_dick.txt"
expect "tokenize a missing input" 1 "'$work/none.txt' does not exist" -- \
  tokenize --tokenizer bytes -o "$work/x" "$work/none.txt"

expect "no subcommand" 2 "A subcommand is required" --
# A tokenizer error while encoding inside tokenize's worker threads is reported, not a crash
# (an exception must not escape an OpenMP region): a pattern whose match overruns PCRE2's JIT
# stack on a 2 MB line.
"$nuri" tokenizer-train --quiet --vocab-size 300 --pattern '(?:(a|b)|(?:c|\S))+' \
  -o "$work/deep.json" "$corpus/en_moby_dick.txt" >/dev/null 2>&1
head -c 2000000 /dev/zero | tr '\0' 'a' >"$work/deep.txt"
for t in 1 2; do
  expect "encoding error in tokenize ($t thread(s))" 2 "JIT stack limit reached" -- \
    tokenize --quiet --tokenizer "$work/deep.json" --threads $t -o "$work/deep_out$t" "$work/deep.txt"
done

echo "$((cases - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]

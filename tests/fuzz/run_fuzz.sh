#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time.
#
#   tests/fuzz/run_fuzz.sh NURI_BINARY WORKDIR CORPUS_DIR [SECONDS_PER_TARGET]
#
# Seeds are made fresh: small tokenizers trained by `nuri tokenizer-train` and written in each
# file format (for fuzz_formats), and lines of the bundled corpus plus hard strings (for
# fuzz_encode, which runs on those tokenizers and on the bundled data/tokenizer). A crash, a
# sanitizer report or a broken property exits non-zero and leaves the input in WORKDIR/artifacts.
# Prints a line starting with SKIPPED: (and exits 0) where clang's libFuzzer is not installed.
set -euo pipefail
nuri=$1
work=$2
corpus=$3
seconds=${4:-45}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v clang++ >/dev/null 2>&1; then
  echo "SKIPPED: clang++ is not installed (apt-get install clang libclang-rt-14-dev)"
  exit 0
fi
mkdir -p "$work"
probe=$work/probe.cpp
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe"
if ! clang++ -fsanitize=fuzzer,address "$probe" -o "$work/probe" >/dev/null 2>&1; then
  echo "SKIPPED: clang++ cannot link libFuzzer here (apt-get install libclang-rt-14-dev)"
  exit 0
fi

echo "fuzz: building the targets with clang (ASan + UBSan) in $work/build"
CXX=clang++ cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" ||
  { cat "$work/configure.log"; exit 1; }
ninja -C "$work/build" >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; exit 1; }

# Seeds for the file readers: one small tokenizer per format, prefixed with its format byte.
seeds=$work/seeds
rm -rf "$seeds"
mkdir -p "$seeds/formats" "$seeds/encode" "$work/tok"
head -n 400 "$corpus/ko_prose.txt" >"$work/tok/text.txt"
head -n 400 "$corpus/en_moby_dick.txt" >>"$work/tok/text.txt"
"$nuri" tokenizer-train --quiet --vocab-size 320 --out "$work/tok/small.json" "$work/tok/text.txt"
"$nuri" tokenizer-train --quiet --vocab-size 320 --pattern gpt2 --normalization none \
  --out "$work/tok/gpt2like.json" "$work/tok/text.txt"
"$nuri" tokenizer-train --quiet --vocab-size 300 --format tiktoken --out "$work/tok/small.tiktoken" "$work/tok/text.txt"
"$nuri" tokenizer-train --quiet --vocab-size 300 --format gpt2 --out "$work/tok/gpt2dir" "$work/tok/text.txt"
{ printf '\x00'; cat "$work/tok/small.json"; } >"$seeds/formats/hf"
{ printf '\x01'; cat "$work/tok/small.tiktoken"; } >"$seeds/formats/tiktoken"
{ printf '\x02'; cat "$work/tok/gpt2dir/encoder.json"; printf '\x00'; cat "$work/tok/gpt2dir/vocab.bpe"; } >"$seeds/formats/gpt2"

# Seeds for the encoder: corpus lines and strings that have broken tokenizers before.
i=0
while IFS= read -r line && ((i < 200)); do
  printf '%s\n' "$line" >"$seeds/encode/line$i"
  i=$((i + 1))
done < <(grep -v '^$' "$work/tok/text.txt" | awk 'NR % 7 == 0')
printf '안녕하세요 <|endoftext|> world\r\n\t  123456789 😀👨‍👩‍👧' >"$seeds/encode/mixed"
printf '\xff\xfe\xed\xa0\x80 \xc3\x28 \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 \xe3\x80\xae' >"$seeds/encode/invalid"

tokenizers="$work/tok/small.json:$work/tok/gpt2like.json"
for bundled in "$root"/data/tokenizer/*.json; do
  [[ -f $bundled ]] && tokenizers="$tokenizers:$bundled"
done

mkdir -p "$work/artifacts"
run() {  # target seeds max_len
  local target=$1 seed_dir=$2 max_len=$3
  local live=$work/live_$target
  mkdir -p "$live"
  echo "fuzz: $target for ${seconds}s (seeds: $(ls "$seed_dir" | wc -l))"
  if ! NURI_FUZZ_TOKENIZERS=$tokenizers "$work/build/$target" "$live" "$seed_dir" \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=20 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$work/artifacts/$target-" >"$work/$target.log" 2>&1; then
    tail -n 60 "$work/$target.log"
    echo "fuzz: $target FAILED; the input is in $work/artifacts/"
    return 1
  fi
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work/$target.log" | sed "s/^/fuzz: $target /"
  echo "fuzz: $target passed: no crash, sanitizer report or broken property"
}
status=0
run fuzz_encode "$seeds/encode" 4096 || status=1
run fuzz_formats "$seeds/formats" 131072 || status=1
exit $status

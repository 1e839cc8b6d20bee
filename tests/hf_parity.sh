#!/usr/bin/env bash
# Hugging Face interop (docs/hf.md), checked by an independent PyTorch reader (tests/hf_parity.py):
#   export   a random nuri model (gpt2 tied; llama GQA 4 heads / 2 kv, untied) -> `nuri export`
#            (single file, and sharded with an index) -> PyTorch built from the HF names and
#            conventions gives nuri's logits within 1e-4
#   import   PyTorch writes HF files (gpt2 fp32 without the "transformer." prefix; llama bf16 in
#            3 shards; llama tied fp16) -> `nuri import` -> nuri's logits match PyTorch's
#   round trip  export -> import gives the same parameters bit for bit
#   bad input   truncated file, model_type "bert", a missing tensor, gpt2 with GQA: each exits
#            non-zero with a message naming the file
# Usage: hf_parity.sh NURI HF_LOGITS WORKDIR
set -eu
nuri=$1 helper=$2 work=$3
py=/usr/bin/python3
script="$(dirname "$0")/hf_parity.py"
rm -rf "$work"
mkdir -p "$work"
B=2 T=11 V=97
fail=0

"$py" "$script" tokens --out "$work/tokens.bin" --batch $B --seq $T --vocab $V

# check_logits LABEL MODEL.bin HF_DIR [--expect-shards N]: nuri's logits of MODEL against PyTorch on HF_DIR.
check_logits() {
  local label=$1 model=$2 dir=$3
  shift 3
  "$helper" logits "$model" "$work/tokens.bin" $B $T "$work/$label.logits.bin"
  "$py" "$script" check --label "$label" --hf "$dir" --tokens "$work/tokens.bin" --logits "$work/$label.logits.bin" \
    --batch $B --seq $T "$@" || fail=1
}

# expect_failure LABEL PATTERN COMMAND...: the command must fail and print PATTERN.
expect_failure() {
  local label=$1 pattern=$2
  shift 2
  if "$@" > "$work/$label.out" 2>&1; then
    echo "FAIL: $label: succeeded, expected an error"; fail=1
  elif ! grep -qF -- "$pattern" "$work/$label.out"; then
    echo "FAIL: $label: the message does not name '$pattern':"; cat "$work/$label.out"; fail=1
  else
    echo "ok: $label: $(head -c 300 "$work/$label.out")"
  fi
}

echo "== export: nuri -> Hugging Face -> PyTorch"
"$helper" init gpt2 "$work/gpt2.bin"
"$helper" init llama "$work/llama.bin" --n_kv_head 2 --tied 0
echo '{"model": {"type": "BPE"}}' > "$work/tokenizer.json"  # found beside the model file
for family in gpt2 llama; do
  "$nuri" export --model "$work/$family.bin" --out "$work/$family-hf"
  check_logits "export-$family" "$work/$family.bin" "$work/$family-hf"
  # ~30 KB shards: the sharded path and its index.
  "$nuri" export --model "$work/$family.bin" --out "$work/$family-hf-sharded" --max-shard-mb 0.03
  shards=$(ls "$work/$family-hf-sharded"/model-*-of-*.safetensors | wc -l)
  [ "$shards" -gt 1 ] || { echo "FAIL: $family: expected several shards, got $shards"; fail=1; }
  check_logits "export-$family-sharded" "$work/$family.bin" "$work/$family-hf-sharded" --expect-shards "$shards"
  cmp -s "$work/tokenizer.json" "$work/$family-hf/tokenizer.json" || { echo "FAIL: tokenizer.json not exported"; fail=1; }

  echo "== round trip: export -> import ($family)"
  "$nuri" import --hf "$work/$family-hf-sharded" --out "$work/$family-roundtrip/model.bin"
  "$py" "$script" compare-models "$work/$family.bin" "$work/$family-roundtrip/model.bin" || fail=1
  cmp -s "$work/tokenizer.json" "$work/$family-roundtrip/tokenizer.json" || { echo "FAIL: tokenizer.json not imported"; fail=1; }
done

echo "== import: PyTorch-written Hugging Face files -> nuri"
"$py" "$script" make --family gpt2 --out "$work/torch-gpt2" --dtype F32 --tied 1 --bare-names
"$py" "$script" make --family llama --out "$work/torch-llama" --dtype BF16 --tied 0 --shards 3
"$py" "$script" make --family llama --out "$work/torch-llama-tied" --dtype F16 --tied 1
for name in torch-gpt2 torch-llama torch-llama-tied; do
  "$nuri" import --hf "$work/$name" --out "$work/$name-nuri/model.bin"
  check_logits "import-$name" "$work/$name-nuri/model.bin" "$work/$name"
done

echo "== bad input"
cp -r "$work/gpt2-hf" "$work/bad-truncated"
head -c 20000 "$work/gpt2-hf/model.safetensors" > "$work/bad-truncated/model.safetensors"
expect_failure truncated "bad-truncated/model.safetensors" "$nuri" import --hf "$work/bad-truncated" --out "$work/bad.bin"
cp -r "$work/gpt2-hf" "$work/bad-bert"
sed -i 's/"model_type": "gpt2"/"model_type": "bert"/' "$work/bad-bert/config.json"
expect_failure bert-config "bad-bert/config.json" "$nuri" import --hf "$work/bad-bert" --out "$work/bad.bin"
grep -q '"bert"' "$work/bert-config.out" || { echo "FAIL: the message does not name the type"; fail=1; }
"$py" "$script" make --family llama --out "$work/bad-missing" --tied 0 --drop model.layers.1.mlp.up_proj.weight > /dev/null
expect_failure missing-tensor "model.layers.1.mlp.up_proj.weight" "$nuri" import --hf "$work/bad-missing" --out "$work/bad.bin"
grep -q "bad-missing/model.safetensors" "$work/missing-tensor.out" || { echo "FAIL: the message does not name the file"; fail=1; }
"$py" "$script" make --family llama --out "$work/bad-untied" --tied 0 --drop lm_head.weight > /dev/null
expect_failure untied-no-head "tie_word_embeddings = false" "$nuri" import --hf "$work/bad-untied" --out "$work/bad.bin"
cp -r "$work/llama-hf" "$work/bad-shape"
sed -i 's/"intermediate_size": 48/"intermediate_size": 40/' "$work/bad-shape/config.json"
expect_failure wrong-shape "bad-shape/model.safetensors" "$nuri" import --hf "$work/bad-shape" --out "$work/bad.bin"
"$helper" init gpt2 "$work/gpt2-gqa.bin" --n_kv_head 2
expect_failure gpt2-gqa "n_kv_head" "$nuri" export --model "$work/gpt2-gqa.bin" --out "$work/bad-gqa"
expect_failure no-weights "$work/empty" bash -c "mkdir -p '$work/empty' && cp '$work/gpt2-hf/config.json' '$work/empty/' && '$nuri' import --hf '$work/empty' --out '$work/bad.bin'"

[ $fail -eq 0 ] && echo "ok: Hugging Face export, import and round trip match PyTorch and nuri"
exit $fail

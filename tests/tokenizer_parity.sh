#!/usr/bin/env bash
# Parity of nuri's BPE tokenizer with reference implementations from npm: gpt-3-encoder (GPT-2),
# tiktoken (WASM; gpt2, cl100k_base, o200k_base), js-tiktoken (reported only) and
# @huggingface/tokenizers (loads the tokenizer.json files nuri writes). See tokenizer_ref.js.
# Usage: tokenizer_parity.sh TOKENIZER_DUMP WORKDIR CORPUS_DIR
# Prints "SKIPPED: ..." and exits 0 when node/npm are absent or the packages cannot be installed.
set -u
dump=$1 work=$2 corpus=$3
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: node or npm not found; the tokenizer parity test needs both"
  exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "SKIPPED: node $node_major is too old (need 18 or newer)"
  exit 0
fi

packages=(gpt-3-encoder@1.1.4 js-tiktoken@1.0.21 tiktoken@1.0.22 @huggingface/tokenizers@0.2.0)
have_all=1
for p in gpt-3-encoder js-tiktoken tiktoken @huggingface/tokenizers; do
  [ -f "$work/node_modules/$p/package.json" ] || have_all=0
done
if [ "$have_all" -eq 0 ]; then
  echo "installing ${packages[*]} into $work/node_modules"
  if ! npm install --no-audit --no-fund --prefix "$work" "${packages[@]}" >"$work/npm.log" 2>&1; then
    echo "SKIPPED: npm install failed (offline?); see $work/npm.log"
    exit 0
  fi
fi

NODE_PATH="$work/node_modules" exec node "$here/tokenizer_ref.js" "$dump" "$work" "$corpus"

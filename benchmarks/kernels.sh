#!/usr/bin/env bash
# The GPU benchmarks in one command, for the day a GPU host is lent (about 6-8 minutes on an H100,
# build not included). Writes OUT/kernels.md, a report of:
#   0. first `ctest -R '^gpu$'` (the kernels and the cuda backend against the CPU, and bf16
#      training), with the backend's ops asynchronous as in training; if it fails, once more with
#      NURI_CUDA_SYNC=1 so that a kernel fault is named by the op that caused it;
#   1. GEMM: our bf16 tensor-core kernel against cuBLASLt, TFLOP/s over the three products of every
#      linear layer of gpt2-124m and llama-1b (bench_gemm_cuda), and the autotune table it measured
#      (OUT/gemm_table.tsv: point NURI_GEMM_TABLE at it to use it in training);
#   2. attention: ours (bf16 tensor cores, and the fp32 SIMT fallback) against cuDNN SDPA, forward
#      and backward TFLOP/s at the models' shapes (bench_attention_cuda);
#   3. one training step of gpt2-124m and llama-1b on one GPU through the cuda backend: tokens/s
#      and MFU against the GPU's bf16 data-sheet peak (bench_step --backend cuda), first with the
#      default choices, then with the autotune table of step 1; and gpt2-124m once more with
#      NURI_CUDA_SYNC=1 (a host wait after every op, as before the ops became asynchronous), whose
#      ratio to the first is what the asynchronous ops are worth.
# Goals on an H100 (issue 6): GEMM >= 80% of cuBLASLt, attention >= 80% of cuDNN SDPA forward and
# backward, gpt2-124m >= 50% MFU. Without a GPU every step prints SKIPPED and the report says so.
#
# Usage: benchmarks/kernels.sh [BUILD_DIR] [OUT_DIR]   (build with NURI_CUDA=ON first)
#   env: STEPS=10 (timed training steps), GPT2_BATCH=16, LLAMA_BATCH=4
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
out=${2:-$build/kernels}
STEPS=${STEPS:-10} GPT2_BATCH=${GPT2_BATCH:-16} LLAMA_BATCH=${LLAMA_BATCH:-4}
mkdir -p "$out"
report=$out/kernels.md
for b in bench_gemm_cuda bench_step; do
  [ -x "$build/benchmarks/$b" ] || { echo "kernels.sh: $build/benchmarks/$b not found; build with CUDA first"; exit 1; }
done
# bench_attention_cuda is built only where cuDNN was found (it measures against cuDNN SDPA).
have_attention=0
[ -x "$build/benchmarks/bench_attention_cuda" ] && have_attention=1
started=$(date +%s)
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
{
  echo "# nuri GPU kernels and step report"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: ${gpu:-none found (nvidia-smi)}"
  echo
} > "$report"

section() {  # title command...
  local title=$1
  shift
  echo "== $title"
  local log=$out/$(echo "$title" | tr ' /' '__').log
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  {
    echo "## $title"
    echo
    echo '```'
    # Indented detail lines are left out, except the correctness verdicts and refusals.
    awk '!/^  / || /check|FAIL|ok |refused|not run|error|GELU/' "$log" | tail -80
    echo '```'
    [ "$rc" = 0 ] || echo "**exit status $rc**"
    echo
  } >> "$report"
  return "$rc"
}

gpu_test() { ctest --test-dir "$build" -R '^gpu$' --output-on-failure; }
if ! section "gpu test (kernels, backend, bf16 training against the CPU)" gpu_test; then
  NURI_CUDA_SYNC=1 section "gpu test again with NURI_CUDA_SYNC=1 (faults named by op)" gpu_test
fi
section "GEMM vs cuBLASLt" "$build/benchmarks/bench_gemm_cuda" --write-table "$out/gemm_table.tsv" --report "$out/gemm.md"
if [ "$have_attention" = 1 ]; then
  section "attention vs cuDNN SDPA" "$build/benchmarks/bench_attention_cuda" --report "$out/attention.md"
else
  printf '## attention vs cuDNN SDPA\n\nnot run: this build found no cuDNN, so bench_attention_cuda was not built\n\n' >> "$report"
fi
section "gpt2-124m step" "$build/benchmarks/bench_step" --backend cuda --preset gpt2-124m --batch "$GPT2_BATCH" --seq 1024 --steps "$STEPS"
section "llama-1b step" "$build/benchmarks/bench_step" --backend cuda --preset llama-1b --batch "$LLAMA_BATCH" --seq 2048 --steps "$STEPS"
if [ -s "$out/gemm_table.tsv" ]; then
  NURI_GEMM_TABLE=$out/gemm_table.tsv section "gpt2-124m step, autotuned GEMM" "$build/benchmarks/bench_step" --backend cuda --preset gpt2-124m --batch "$GPT2_BATCH" --seq 1024 --steps "$STEPS"
  NURI_GEMM_TABLE=$out/gemm_table.tsv section "llama-1b step, autotuned GEMM" "$build/benchmarks/bench_step" --backend cuda --preset llama-1b --batch "$LLAMA_BATCH" --seq 2048 --steps "$STEPS"
fi
NURI_CUDA_SYNC=1 section "gpt2-124m step, NURI_CUDA_SYNC=1 (a wait after every op)" "$build/benchmarks/bench_step" --backend cuda --preset gpt2-124m --batch "$GPT2_BATCH" --seq 1024 --steps "$STEPS"
echo "Report: $report ($(( $(date +%s) - started )) s)"

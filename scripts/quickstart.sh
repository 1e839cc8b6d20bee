#!/usr/bin/env bash
# From a fresh clone to a trained model: installs what is missing, builds nuri, trains a small
# GPT-2-style model on Korean prose and Moby-Dick (byte-level, CPU), samples from it and plots
# the loss curve.
#
#   scripts/quickstart.sh                          the whole thing (1200 steps, about 4 minutes of training)
#   scripts/quickstart.sh --set train.steps=50     extra arguments go to `nuri train`
#   scripts/quickstart.sh --dry-run                parameter count and memory estimate only
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=examples/configs/quickstart.toml
nuri=build/src/nuri
start=$SECONDS
stamp() { printf '[%dm%02ds]' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
step() { printf '\n%s %s\n' "$(stamp)" "$*"; }

# The run directory: the config's, unless overridden with --set train.run_dir=...
run_dir=runs/quickstart
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[i]}
  if [[ $a == --set && $((i + 1)) -lt ${#args[@]} ]]; then a=${args[i + 1]}; fi
  a=${a#--set=}
  if [[ $a == train.run_dir=* ]]; then
    run_dir=${a#train.run_dir=}
    run_dir=${run_dir//\"/}
    run_dir=${run_dir//\'/}
  fi
done

step "1/4 Checking that the system packages nuri needs are installed (scripts/install_deps.sh)."
bash scripts/install_deps.sh

step "2/4 Building nuri (Release) into build/ and unpacking the bundled corpus (scripts/build.sh)."
echo "     The first build compiles everything and takes a few minutes; later ones are quick."
bash scripts/build.sh
for name in ko_prose en_moby_dick; do
  # The corpus is unpacked by the test tree's nuri_corpus target; do it here if that was skipped.
  if [[ ! -s build/data/corpus/$name.txt ]]; then
    mkdir -p build/data/corpus
    xz -dc "data/corpus/$name.txt.xz" >"build/data/corpus/$name.txt"
  fi
done

mpi=(mpirun -np 1 --bind-to none)
if ((EUID == 0)); then mpi+=(--allow-run-as-root); fi

step "3/4 Training a 4-layer, 256-wide GPT-2-style model (about 3.3M parameters) that reads
     Korean documentation prose and Moby-Dick one byte at a time: 1200 steps, about 4 minutes
     (--set train.steps=N to change). A progress line every 10 steps: loss, learning rate,
     gradient norm, tokens/s, MFU, ETA. Every 300 steps it measures the loss on held-out text
     against a unigram baseline; at the end it continues the prompt
     \"이 문서는 \" (\"This document...\") and saves the weights.
     \$ ${mpi[*]} $nuri train --config $config${*:+ $*}"
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
"${mpi[@]}" "$nuri" train --config "$config" "$@"

metrics=$run_dir/metrics.jsonl
if [[ ! -s $metrics || ! $metrics -nt $marker ]]; then
  step "Done (no training ran, so there is nothing new to plot)."
  exit 0
fi

step "4/4 Plotting the loss curve."
plot=""
if /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; then
  if /usr/bin/python3 scripts/plot_metrics.py "$metrics" -o "$run_dir/metrics.png"; then
    plot=$run_dir/metrics.png
  fi
else
  echo "     matplotlib is not available to /usr/bin/python3 (python3-matplotlib); skipping."
fi

step "Done. What the run left in $run_dir/:"
[[ -f $run_dir/model.bin ]] && echo "  model.bin      the trained weights"
echo "  metrics.jsonl  one JSON line per step (loss, lr, tokens/s, ...) and per evaluation"
[[ -f $run_dir/config.toml ]] && echo "  config.toml    the full configuration this run used"
[[ -f $run_dir/sample.txt ]] && echo "  sample.txt     the text sampled at the end"
[[ -n $plot ]] && echo "  metrics.png    loss and tokens/s against the step"
if [[ -f $run_dir/model.bin ]]; then
  echo
  echo "Generate more text from it:"
  echo "  $nuri generate --model $run_dir/model.bin --prompt '이 문서는 ' --max-tokens 200"
fi

#!/usr/bin/env bash
# Data parallelism trains exactly like one process: `nuri train` under mpirun with dp ranks of
# batch B must give, step for step, the losses and the final parameters of one process with batch
# dp*B (both read the same token shards through the DataLoader), within fp32 reduction order:
#   dp=2 and dp=4 against one process; ZeRO-1 on against off; gradient accumulation 2 under dp=2
#   against one process with a 4x batch; and bucket reductions really start during backward.
# For a tiny gpt2 and a tiny llama (GQA), 20 steps each.
# Usage: dp_parity.sh NURI DP_COMPARE WORKDIR CORPUS_DIR MPIEXEC
set -eu
source "$(dirname "$0")/parity_runs.sh" "$@"  # nuri, compare, work, mpi, common, train, check

for family in gpt2 llama; do
  if [ $family = gpt2 ]; then
    model=(--set model.preset=gpt2-tiny --set model.n_kv_head=4 --set model.d_ff=256)
  else
    model=(--set model.preset=llama-tiny --set model.n_kv_head=2 --set model.d_ff=192)  # GQA: 4 heads, 2 kv
  fi
  echo "== $family"
  train $family-b4 0 --set train.batch_size=4
  train $family-b8 0 --set train.batch_size=8
  train $family-dp2 2 --set train.batch_size=2
  train $family-dp4 4 --set train.batch_size=2
  train $family-dp2-zero1 2 --set train.batch_size=2 --set parallel.zero1=true
  train $family-dp4-zero1 4 --set train.batch_size=2 --set parallel.zero1=true
  train $family-dp2-accum2 2 --set train.batch_size=2 --set train.grad_accum=2
  check $family-b4 $family-dp2 --expect-overlap
  check $family-b8 $family-dp4 --expect-overlap
  check $family-dp2 $family-dp2-zero1 --expect-overlap
  check $family-dp4 $family-dp4-zero1
  check $family-b8 $family-dp4-zero1
  # Evaluation batches are dp x batch_size rows (4 here, 8 for the reference): training only.
  check $family-b8 $family-dp2-accum2 --skip-val
done
[ $fail -eq 0 ] && echo "ok: every data-parallel layout matches one process"
exit $fail

#!/usr/bin/env bash
# Tensor parallelism trains exactly like one process: `nuri train` under mpirun at (tp, dp) with
# per-rank batch B must give, step for step, the losses and the final parameters (gathered from
# the TP slices into model.bin) of one process with batch dp*B, within fp32 reduction order:
#   (tp, dp) = (2,1), (4,1), (2,2) against one process; (1,2) is dp_parity's; sequence parallelism
#   at (2,1) and (4,1); ZeRO-1 at (2,2) against ZeRO-1 off; gradient accumulation 2 at (2,1)
#   against one process with a 2x batch.
# For a tiny gpt2 (4 heads, kv split) and a tiny llama (4 heads, 2 kv heads: split at tp 2,
# replicated over 2 ranks at tp 4), 20 steps each. Then a layout that cannot split is refused.
# Usage: tp_parity.sh NURI DP_COMPARE WORKDIR CORPUS_DIR MPIEXEC
set -eu
source "$(dirname "$0")/parity_runs.sh" "$@"  # nuri, compare, work, mpi, common, train, check

for family in gpt2 llama; do
  if [ $family = gpt2 ]; then
    model=(--set model.preset=gpt2-tiny --set model.n_kv_head=4 --set model.d_ff=256)
  else
    # GQA, and d_ff = 190 does not divide by 4: uneven MLP slices (48, 48, 47, 47).
    model=(--set model.preset=llama-tiny --set model.n_kv_head=2 --set model.d_ff=190)
  fi
  echo "== $family"
  train $family-b4 0 --set train.batch_size=4
  train $family-b8 0 --set train.batch_size=8
  train $family-tp2 2 --set train.batch_size=4 --set parallel.tp=2
  train $family-tp4 4 --set train.batch_size=4 --set parallel.tp=4
  train $family-tp2-dp2 4 --set train.batch_size=2 --set parallel.tp=2
  train $family-tp2-dp2-zero1 4 --set train.batch_size=2 --set parallel.tp=2 --set parallel.zero1=true
  train $family-tp2-sp 2 --set train.batch_size=4 --set parallel.tp=2 --set parallel.sequence_parallel=true
  train $family-tp4-sp 4 --set train.batch_size=4 --set parallel.tp=4 --set parallel.sequence_parallel=true
  train $family-tp2-accum2 2 --set train.batch_size=4 --set parallel.tp=2 --set train.grad_accum=2
  check $family-b4 $family-tp2 --expect-layout 2 1
  check $family-b4 $family-tp4 --expect-layout 4 1
  check $family-b4 $family-tp2-dp2 --expect-layout 2 2 --expect-overlap
  check $family-tp2-dp2 $family-tp2-dp2-zero1 --expect-layout 2 2
  check $family-b4 $family-tp2-dp2-zero1
  check $family-b4 $family-tp2-sp --expect-layout 2 1
  check $family-b4 $family-tp4-sp --expect-layout 4 1
  # Evaluation batches are batch_size rows (4 here, 8 for the reference): training only.
  check $family-b8 $family-tp2-accum2 --skip-val --expect-layout 2 1
done

# A split that cannot be made is refused before anything is allocated, on every rank, saying why.
model=(--set model.preset=llama-tiny --set model.n_kv_head=2 --set model.d_ff=192)
if "${mpi[@]}" -np 3 "$nuri" train "${common[@]}" "${model[@]}" --set parallel.tp=3 \
     --set "train.run_dir=\"$work/bad\"" > "$work/bad.log" 2>&1; then
  echo "FAIL: tp = 3 with 4 heads trained"; fail=1
elif ! grep -q "parallel.tp = 3 does not divide model.n_head = 4" "$work/bad.log"; then
  echo "FAIL: tp = 3 with 4 heads: no clear error:"; tail -5 "$work/bad.log"; fail=1
else
  echo "ok: tp = 3 with 4 heads is refused: $(grep -m1 -o 'parallel.tp = 3 does not divide.*' "$work/bad.log" | cut -c1-120)"
fi
if "${mpi[@]}" -np 2 "$nuri" train "${common[@]}" "${model[@]}" --set parallel.tp=2 --set train.batch_size=1 \
     --set train.seq_len=31 --set parallel.sequence_parallel=true --set "train.run_dir=\"$work/bad2\"" > "$work/bad2.log" 2>&1; then
  echo "FAIL: sequence parallelism with 31 rows over 2 ranks trained"; fail=1
elif ! grep -q "does not divide them" "$work/bad2.log"; then
  echo "FAIL: sequence parallelism with 31 rows: no clear error:"; tail -5 "$work/bad2.log"; fail=1
else
  echo "ok: sequence parallelism with 31 rows over 2 ranks is refused"
fi
[ $fail -eq 0 ] && echo "ok: every tensor-parallel layout matches one process"
exit $fail

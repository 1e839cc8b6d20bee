#!/usr/bin/env bash
# scripts/nuri-launch on its own: the mpirun command lines it builds (--dry-run), its errors for bad
# input, and a real 2-rank launch on this machine (bindings, threads, NURI_* forwarding, per-rank
# logs, GPU binding through the per-rank wrapper).
# Usage: test_launch_cli.sh WORKDIR
set -euo pipefail
work=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
launch=$here/../../scripts/nuri-launch
rm -rf "$work"
mkdir -p "$work"
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# expect_line NAME PATTERN ARGS...: --dry-run output matches the extended regex PATTERN.
expect_line() {
  local name=$1 pattern=$2 out
  shift 2
  if out=$("$launch" --dry-run "$@" 2>&1) && grep -qE -- "$pattern" <<<"$out"; then
    ok "$name"
  else
    bad "$name: expected /$pattern/, got: $out"
  fi
}
# expect_error NAME PATTERN ARGS...: exits non-zero with a message matching PATTERN.
expect_error() {
  local name=$1 pattern=$2 out
  shift 2
  if out=$("$launch" "$@" 2>&1); then
    bad "$name: succeeded, expected an error /$pattern/"
  elif grep -qE -- "$pattern" <<<"$out"; then
    ok "$name"
  else
    bad "$name: expected /$pattern/, got: $out"
  fi
}

cores=$(lscpu -p=CORE,SOCKET | grep -v '^#' | sort -u | wc -l)
expect_line "--hosts with slots, cpu binding" \
  "-np 8 --host a:4,b:4 --map-by ppr:4:node:PE=2 --bind-to core" --hosts a:4,b:4 --cores-per-node 8 -- x
expect_line "--hosts without slots takes --ranks-per-node" \
  "-np 4 --host a:2,b:2 --map-by ppr:2:node:PE=4 --bind-to core" --hosts a,b --ranks-per-node 2 --cores-per-node 8 -- x
printf 'n1 slots=2  # first\n\nn2 slots=2\n' >"$work/hosts"
expect_line "--hostfile, socket binding" "-np 4 --hostfile $work/hosts --map-by ppr:2:node --bind-to socket" \
  --hostfile "$work/hosts" --bind socket -- x
expect_line "--bind none, --oversubscribe, --mca, --log-dir" \
  "--map-by ppr:2:node --bind-to none --oversubscribe --output-filename $work/logs .*--mca btl tcp,self" \
  --hosts a:2 --bind none --oversubscribe --log-dir "$work/logs" --mca btl tcp,self -- x
OMP_NUM_THREADS='' expect_line "OMP_NUM_THREADS from the cores per rank" "-x OMP_NUM_THREADS=4 " --hosts a:2 --cores-per-node 8 -- x
OMP_NUM_THREADS=3 NURI_FOO=1 expect_line "NURI_* and --env forwarded" "-x OMP_NUM_THREADS -x NURI_FOO -x BAR=2" \
  --env BAR=2 -- x
if ((EUID == 0)); then root_pattern="^mpirun --allow-run-as-root -np 1 "; else root_pattern="^mpirun -np 1 "; fi
expect_line "--allow-run-as-root when root" "$root_pattern" -- x
expect_line "the command after -- is kept whole, quoted" "nuri train --config 'a b\\.toml' --set 'x=\"it'\\\\''s\"'$" \
  -- nuri train --config "a b.toml" --set "x=\"it's\""
expect_line "--gpus-per-node wraps the command" "bash -c .*CUDA_VISIBLE_DEVICES.* nuri-rank 4 nuri train$" \
  --hosts a:4 --cores-per-node 8 --gpus-per-node 4 -- nuri train

expect_error "no command" "no command" --hosts a:2
expect_error "bad host spec" "bad host spec 'b:x'" --hosts a:2,b:x -- x
expect_error "bad host spec (empty slots)" "bad host spec 'a:'" --hosts a: -- x
expect_error "missing hostfile" "hostfile '$work/nope' does not exist" --hostfile "$work/nope" -- x
printf 'n1 slots=two\n' >"$work/badhosts"
expect_error "bad hostfile line" "badhosts:1: 'slots=two'" --hostfile "$work/badhosts" -- x
expect_error "both --hosts and --hostfile" "not both" --hosts a --hostfile "$work/hosts" -- x
expect_error "bad --bind" "--bind must be cpu, socket or none" --bind gpu -- x
expect_error "more ranks than cores" "only $cores cores" -n $((cores * 2)) -- x
expect_error "unset --env" "NURI_LAUNCH_TEST_UNSET is not set" --env NURI_LAUNCH_TEST_UNSET -- x
expect_error "unknown option" "unknown option '--frobnicate'" --frobnicate -- x
mkdir -p "$work/bin"
ln -sf "$(command -v bash)" "$work/bin/bash"
if out=$(PATH=$work/bin "$work/bin/bash" "$launch" -- x 2>&1); then
  bad "no mpirun: succeeded"
elif grep -q "mpirun not found" <<<"$out"; then ok "no mpirun on PATH"; else bad "no mpirun: $out"; fi

# A real launch: 2 ranks here, each bound to its own core(s), with the environment forwarded.
if ((cores >= 2)); then
  log=$work/run.log
  if env -u OMP_NUM_THREADS NURI_LAUNCH_TEST=42 "$launch" --hosts localhost:2 --log-dir "$work/ranklogs" --gpus-per-node 2 -- \
    sh -c 'echo "rank=$OMPI_COMM_WORLD_RANK threads=$OMP_NUM_THREADS nuri=$NURI_LAUNCH_TEST gpu=$CUDA_VISIBLE_DEVICES $(grep Cpus_allowed_list /proc/self/status | tr -d "\t")"' \
    >"$log" 2>&1; then
    want_threads=$((cores / 2))
    for r in 0 1; do
      line=$(grep "^rank=$r " "$work/ranklogs/1/rank.$r/stdout" || true)
      if [[ $line == *"threads=$want_threads nuri=42 gpu=$r "* ]]; then ok "rank $r: $line (log $work/ranklogs/1/rank.$r/stdout)"; else bad "rank $r: '$line'"; fi
    done
    a=$(grep -h -o 'Cpus_allowed_list:.*' "$work"/ranklogs/1/rank.*/stdout | sort -u | wc -l)
    ((a == 2)) && ok "the two ranks are bound to different cores" || bad "ranks not bound apart: $(cat "$work"/ranklogs/1/rank.*/stdout)"
  else
    bad "a 2-rank launch failed: $(tail -5 "$log")"
  fi
fi

if ((fail)); then echo "test_launch_cli: FAILED"; exit 1; fi
echo "test_launch_cli: passed"

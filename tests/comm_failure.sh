#!/usr/bin/env bash
# A failing rank ends the whole MPI job quickly and says who failed; nothing hangs.
#   comm_failure.sh PROBE [MPIRUN]
# Under mpirun -np 4:
#   ok     the probe loop completes (exit 0)
#   throw  rank 2 throws mid-loop    -> non-zero exit within 30 s, output names rank 2
#   kill   rank 1 is SIGKILLed       -> non-zero exit within 30 s, output names rank 1
#   skip   rank 3 skips a collective -> the 3 s timeout fires; the message names rank 3 missing
#   stall  rank 0 stops calling MPI  -> the others time out; rank 0's watchdog still answers
#                                      and rank 0 is named missing
#   count  rank 3 passes a shorter count, with NURI_COMM_CHECK=1 -> every rank throws an error
#                                      naming the counts per rank, and the job ends
# Each line prints the exit code, the job's wall time, and the time from the injected failure to
# the end of the job.
set -uo pipefail
probe=$1
mpirun=${2:-mpirun}
if ((EUID == 0)); then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
failures=0

# run NAME EXPECT_RC(0|nonzero) MAX_SECONDS PATTERN... : runs the probe, checks rc, time, output.
run() {
  local name=$1 expect=$2 max_s=$3 mode=$4 rank=$5
  shift 5
  local out start end elapsed rc
  out=$(mktemp)
  start=$(date +%s.%N)
  timeout 120 "$mpirun" -np 4 --oversubscribe --bind-to none ${MPIRUN_EXTRA:-} \
    "$probe" "$mode" "$rank" 3 >"$out" 2>&1
  rc=$?
  end=$(date +%s.%N)
  elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  local ok=1
  if [[ $expect == 0 && $rc != 0 ]] || [[ $expect != 0 && $rc == 0 ]]; then ok=0; fi
  if ((rc == 124)); then ok=0; fi  # timeout(1): the job hung
  if awk -v e="$elapsed" -v m="$max_s" 'BEGIN { exit !(e > m) }'; then ok=0; fi
  for pattern in "$@"; do
    grep -Eq -- "$pattern" "$out" || { echo "  missing in output: $pattern"; ok=0; }
  done
  local injected after=""
  injected=$(sed -n "s/^probe: rank [0-9]* injects '[a-z]*' at \([0-9.]*\)$/\1/p" "$out" | head -n1)
  if [[ -n $injected ]]; then
    after=$(awk -v a="$injected" -v b="$end" 'BEGIN { printf "; %.1f s after the failure", b - a }')
  fi
  if ((ok)); then
    echo "PASS $name: exit $rc after ${elapsed} s${after}"
  else
    echo "FAIL $name: exit $rc after ${elapsed} s (expected ${expect/nonzero/non-zero} within ${max_s} s); output:"
    sed 's/^/  | /' "$out"
    failures=$((failures + 1))
  fi
  grep -E 'nuri|noticed|rank' "$out" | head -n 6 | sed 's/^/  > /'
  rm -f "$out"
}

run ok 0 30 ok -1 'probe: done'
run "throw (rank 2)" nonzero 30 throw 2 \
  '\[rank 2\] numeric error in probe: loss is NaN' 'nuri: fatal'
run "SIGKILL (rank 1)" nonzero 30 kill 1 \
  'process rank 1 .*(signal 9|Killed)'
run "skip (rank 3)" nonzero 30 skip 3 \
  'comm timeout: all_reduce \(float x 4096, avg\) #20 on group .world. \(size 4\)' \
  'did not arrive \(world ranks\): 3;' 'rank 3: has started 19 collectives' 'waiting to finalize'
run "stall (rank 0)" nonzero 30 stall 0 \
  'comm timeout: all_reduce .* #11 on group .world. \(size 4\)' \
  'did not arrive \(world ranks\): 0;' 'rank 0: has started 10 collectives .*not in a collective'

MPIRUN_EXTRA="-x NURI_COMM_CHECK=1" run "count (rank 3), checked" nonzero 30 count 3 \
  'shape error in comm: all_reduce \(float x 409[56], avg\) #11 on group .world. \(size 4\): the ranks disagree on the count: 4095 on rank 3, 4096 on ranks 0-2'

if ((failures)); then
  echo "comm_failure: $failures case(s) failed"
  exit 1
fi
echo "comm_failure: all cases passed"

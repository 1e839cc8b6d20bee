#!/usr/bin/env bash
# Multi-node runs on one machine: two simulated hosts (network namespaces joined through a bridge,
# addresses 192.0.2.1 and 192.0.2.2, see netns_hosts.sh), reached by mpirun through a launch agent
# that runs `ip netns exec` instead of ssh (rsh_netns.sh), with Open MPI held to TCP over the
# simulated network (no shared memory between the "hosts"). Every run goes through
# scripts/nuri-launch with a hostfile, as it would on a cluster.
#
#   1. test_comm (the comm module's Catch tests) across the hosts at 2 ranks (1 per host) and
#      4 ranks (2 per host); the bytes that crossed the simulated wire are counted.
#   2. nuri train across the hosts at 2 and 4 ranks, data-parallel, tensor-parallel (tp 2) and
#      both (tp 2 x dp 2): its per-step losses must
#      match the same command on one host with the same rank count (within 1e-6). Runs only when
#      `nuri train` knows parallel.dp; otherwise says NOT RUN and why.
#
# Usage: test_multinode.sh NURI_BIN TEST_COMM_BIN WORKDIR CORPUS_DIR
# Prints one line starting with SKIPPED: and exits 0 where namespaces cannot be made (not root,
# no iproute2, no permission). Namespaces are removed on exit, failure or interrupt.
set -euo pipefail

(($# == 4)) || { echo "usage: $0 NURI_BIN TEST_COMM_BIN WORKDIR CORPUS_DIR" >&2; exit 2; }
nuri=$(realpath "$1") test_comm=$(realpath "$2") work=$3 corpus=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
agent=$here/rsh_netns.sh
launch=$root/scripts/nuri-launch
# shellcheck source=tests/multinode/netns_hosts.sh
source "$here/netns_hosts.sh"

start=$SECONDS
say() { printf '[%3ds] %s\n' $((SECONDS - start)) "$*"; }
fail=0
bad() { echo "FAIL: $*"; fail=1; }

if ! why=$(netns_check); then
  echo "SKIPPED: cannot simulate hosts with network namespaces here: $why"
  exit 0
fi
command -v mpirun >/dev/null || { echo "SKIPPED: no mpirun"; exit 0; }

tag="t$$"
cleanup() {
  netns_down "$tag"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")

say "creating two simulated hosts (namespaces nuri_h1_$tag, nuri_h2_$tag; switch nuri_sw_$tag)"
netns_up "$tag" 2 | sed 's/^/         /'
h1=$(netns_name "$tag" 1) sw=$(netns_switch "$tag")

export NURI_NETNS_MAP
NURI_NETNS_MAP=$(netns_map "$tag" 2)
export NURI_NETNS_HOSTNAMES=1 # each host has its own hostname: nuri-h1, nuri-h2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI: daemons started through the agent; MPI traffic and its out-of-band channel both on the
# simulated network only, over TCP (ob1), so no byte goes through shared memory or loopback
# between the hosts.
# shellcheck disable=SC2054  # btl tcp,self is one argument
net_mca=(--mca plm rsh --mca plm_rsh_agent "$agent"
  --mca pml ob1 --mca btl tcp,self
  --mca btl_tcp_if_include "$NETNS_SUBNET" --mca oob_tcp_if_include "$NETNS_SUBNET")

# across NP LOG [nuri-launch options] -- COMMAND...: NP ranks spread evenly over the two hosts;
# mpirun itself runs on host 1 (with its hostname).
across() {
  local np=$1 log=$2
  shift 2
  local hf=$work/hosts.$np
  printf '%s slots=%d\n%s slots=%d\n' "$(netns_addr 1)" $((np / 2)) "$(netns_addr 2)" $((np / 2)) >"$hf"
  ip netns exec "$h1" unshare --uts /bin/sh -c 'hostname nuri-h1 && exec "$@"' sh \
    "$launch" --hostfile "$hf" "${net_mca[@]}" "$@" >"$log" 2>&1
}
# single NP LOG [nuri-launch options] -- COMMAND...: NP ranks on this machine, default transports.
single() {
  local np=$1 log=$2
  shift 2
  "$launch" --hosts "localhost:$np" "$@" >"$log" 2>&1
}
wire_bytes() { # bytes that crossed host 2's cable, both ways
  local rx tx
  rx=$(ip netns exec "$sw" cat /sys/class/net/h2/statistics/rx_bytes)
  tx=$(ip netns exec "$sw" cat /sys/class/net/h2/statistics/tx_bytes)
  echo $((rx + tx))
}

# ---- 1. collectives across the hosts ------------------------------------------------------------------
# The whole of test_comm, its [grid] case included: that case derives node and local rank from the
# hosts the ranks report, so across the two hosts it must see 2 nodes with np/2 ranks each. The
# layout rank 0 prints must agree row by row.
for np in 2 4; do
  before=$(wire_bytes)
  t0=$SECONDS
  log=$work/test_comm.np$np.log
  if across "$np" "$log" --bind cpu --report-bindings --env OMP_NUM_THREADS=1 -- "$test_comm" --use-colour no; then
    passed=$(grep -c 'All tests passed' "$log" || true)
    summary="$passed of $np ranks report 'All tests passed' ($(grep -m1 -oE '[0-9]+ assertions in [0-9]+ test cases' "$log"))"
    hosts_seen=$(grep -oE '^\[nuri-h[12]' "$log" | tr -d '[' | sort -u | tr '\n' ' ')
    say "ok   test_comm, $np ranks across 2 hosts ($((np / 2)) per host): $summary; $((SECONDS - t0)) s; ranks bound on: ${hosts_seen:-?}"
    ((passed == np)) || bad "test_comm at $np ranks: only $passed ranks said 'All tests passed'"
  else
    bad "test_comm, $np ranks across 2 hosts (log: $log)"
    tail -30 "$log"
  fi
  # The layout table that rank 0 prints: rank tp dp node local host.
  layout=$(awk -v half=$((np / 2)) '$1 ~ /^[0-9]+$/ && NF == 6 && $6 ~ /^nuri-h/ {
      n++; want_node = int($1 / half); if ($4 != want_node || $5 != $1 % half || $6 != "nuri-h" want_node + 1) bad++ }
      END { print n + 0, bad + 0 }' "$log" | head -1)
  rows=${layout% *} wrong=${layout#* }
  if ! grep -q "$np ranks = .* 2 nodes" "$log" || ((rows == 0 || wrong != 0)); then
    bad "ProcessGrid, $np ranks: the printed layout does not show 2 nodes with $((np / 2)) ranks each (log: $log)"
    grep -A$((np + 1)) 'process grid' "$log" | head -$((np + 2))
  else
    say "ok   ProcessGrid across hosts, $np ranks: 2 nodes, node/local rank/host right in all $rows rows of the printed layouts"
  fi
  moved=$(($(wire_bytes) - before))
  say "     $moved bytes crossed the simulated wire for the $np-rank runs"
  ((moved > 10000)) || bad "test_comm at $np ranks moved only $moved bytes over the simulated network"
done

# ---- 2. data-parallel training across the hosts vs one host -----------------------------------------
shards=$work/shards
if ! "$nuri" tokenize --tokenizer bytes --val-fraction 0.05 --quiet -o "$shards" "$corpus/ko_prose.txt" >"$work/tokenize.log" 2>&1; then
  bad "nuri tokenize (log: $work/tokenize.log)"
  tail -5 "$work/tokenize.log"
  exit 1
fi

# A tiny model, a few steps; everything else fixed so two runs can differ only by where they ran.
train_args() { # train_args NP RUN_DIR [TP]: sets targs
  local tp=${3:-1}
  targs=(train --set model.preset=gpt2-tiny --set model.n_layer=1 --set model.d_model=32 --set model.n_head=2 \
    --set model.n_kv_head=2 --set model.vocab_size=257 --set train.steps=6 --set train.seq_len=32 \
    --set train.batch_size=2 --set train.eval_every=0 --set train.sample_tokens=0 --set train.save=false \
    --set train.peak_gflops=100 --set "parallel.dp=$(($1 / tp))" --set "parallel.tp=$tp" --set "train.run_dir=\"$2\"" \
    --set "data.datasets=[\"$shards\"]")
}
losses() { # the per-step training losses of a run, one "step loss" per line
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") == "train":
        print(r["step"], repr(float(r["loss"])))' "$1/metrics.jsonl"
}

# Has data-parallel training landed? A one-rank run with parallel.dp tells.
probe_log=$work/train_probe.log
train_args 1 "$work/run_probe"
if ! "$nuri" "${targs[@]}" >"$probe_log" 2>&1; then
  if grep -q "parallel" "$probe_log"; then
    say "NOT RUN: the training comparison: this nuri train does not know parallel.dp yet ($(grep -m1 -o "unknown key[^.]*" "$probe_log" || tail -1 "$probe_log"))"
  else
    bad "nuri train on one rank (log: $probe_log)"
    tail -5 "$probe_log"
  fi
else
  # np tp: data parallel at 2 and 4 ranks; tensor parallel at 2 (one rank per host: the TP
  # group's all-reduces cross the wire) and tp 2 x dp 2 at 4 (TP inside each host, DP across).
  for layout in "2 1" "4 1" "2 2" "4 2"; do
    read -r np tp <<< "$layout"
    t0=$SECONDS
    train_args "$np" "$work/run.single.np$np.tp$tp" "$tp"
    dp=$((np / tp)) rt=np$np.tp$tp
    if ! single "$np" "$work/train.single.$rt.log" --bind none --oversubscribe --env OMP_NUM_THREADS=1 -- \
      "$nuri" "${targs[@]}"; then
      bad "nuri train, $np ranks (tp $tp) on one host (log: $work/train.single.$rt.log)"
      tail -20 "$work/train.single.$rt.log"
      continue
    fi
    t1=$SECONDS
    before=$(wire_bytes)
    train_args "$np" "$work/run.across.$rt" "$tp"
    if ! across "$np" "$work/train.across.$rt.log" --bind cpu --env OMP_NUM_THREADS=1 -- \
      "$nuri" "${targs[@]}"; then
      bad "nuri train, $np ranks (tp $tp) across 2 hosts (log: $work/train.across.$rt.log)"
      tail -20 "$work/train.across.$rt.log"
      continue
    fi
    moved=$(($(wire_bytes) - before))
    # The run really was one job of this layout over both hosts.
    grep -qE "process grid: $np ranks = tp $tp x dp $dp .*2 nodes" "$work/train.across.$rt.log" ||
      bad "nuri train, $np ranks across 2 hosts: no 'process grid: $np ranks = tp $tp x dp $dp ... 2 nodes' in its log"
    a=$(losses "$work/run.single.$rt") b=$(losses "$work/run.across.$rt")
    if [[ -z $a ]]; then
      bad "nuri train, $np ranks (tp $tp): no training losses in $work/run.single.$rt/metrics.jsonl"
      continue
    fi
    if cmp=$(python3 -c '
import sys
a = [l.split() for l in sys.argv[1].splitlines()]
b = [l.split() for l in sys.argv[2].splitlines()]
if [s for s, _ in a] != [s for s, _ in b]:
    sys.exit("different steps: %s vs %s" % ([s for s, _ in a], [s for s, _ in b]))
d = max(abs(float(x) - float(y)) for (_, x), (_, y) in zip(a, b))
if d > 1e-6:
    sys.exit("losses differ by up to %.3g:\n  one host: %s\n  across:   %s" % (d, [x for _, x in a], [y for _, y in b]))
print("%d steps, max |difference| %.3g, last loss %s" % (len(a), d, a[-1][1]))' "$a" "$b" 2>&1); then
      say "ok   nuri train, $np ranks (tp $tp x dp $dp) across 2 hosts = one host: $cmp; one host $((t1 - t0)) s, across $((SECONDS - t1)) s; $moved bytes on the wire"
      ((moved > 10000)) || bad "nuri train at $np ranks (tp $tp) moved only $moved bytes over the simulated network"
    else
      bad "nuri train, $np ranks (tp $tp) across 2 hosts differs from one host: $cmp"
    fi
  done
fi

say "namespaces are removed on exit"
if ((fail)); then
  echo "test_multinode: FAILED (logs in $work)"
  exit 1
fi
echo "test_multinode: passed"

#!/usr/bin/env bash
# Data- and tensor-parallel scaling of one training step (bench_parallel_step) over 1, 2 and 4 ranks:
#   weak scaling      - DP, fixed per-rank batch (BATCH), so the global batch grows with the ranks;
#   strong scaling    - DP, fixed global batch (GLOBAL), split over the ranks;
#   tp-weak scaling   - TP over all ranks, fixed work per rank: batch BATCH x ranks, each rank
#                       holding 1/ranks of the model;
#   tp-strong scaling - TP over all ranks, fixed batch GLOBAL: the same step, the model split.
# TP splits attention by heads, so the TP rows use a model with HEADS_TP heads (default 8 for
# gpt2-tiny's 6, so that 4 divides it) and their 1-rank baseline is that same model.
# Prints a table (tokens/s, speedup, efficiency, step time split into compute / communication in
# flight / exposed communication) and writes OUT/scaling.tsv and OUT/scaling.png.
#
# Fair on a small machine: every rank runs ONE thread (train.threads = 1), so the 1-rank baseline
# is 1 rank x 1 thread on one core, and 2 ranks use one core each. Efficiency(n) = tokens/s(n) /
# (n x tokens/s(1)). With more ranks than cores (4 ranks on 2 cores) the ranks share cores: those
# rows are marked oversubscribed and also get a per-core efficiency, tokens/s(n) / (cores x
# tokens/s(1)), which is what the hardware can give at best. For context, one more row runs 1 rank
# x all cores' threads on the weak-scaling global batch of `cores` ranks.
# Each configuration runs REPEATS times, interleaved with the others (so that a burst of load from
# elsewhere hits all of them alike); each run reports the median over STEPS timed steps, and the
# table shows the median over the repeats. The load average is printed before and after: other
# work on the machine lowers the multi-rank figures most.
#
# Usage: benchmarks/scaling.sh [BUILD_DIR] [OUT_DIR]
#   env: PRESET=gpt2-tiny SEQ=256 BATCH=8 GLOBAL=16 STEPS=6 WARMUP=2 REPEATS=3 BUCKET_MB=25 ZERO1=0
#        HEADS_TP=8 SP=0 (SP=1: sequence parallelism in the TP rows)
#        PLOT_ONLY=1: redo the table and plot from OUT_DIR/scaling.tsv without running anything
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
out=${2:-$build/scaling}
bench=$build/benchmarks/bench_parallel_step
tsv=$out/scaling.tsv
[ "${PLOT_ONLY:-0}" = 1 ] || [ -x "$bench" ] || { echo "scaling.sh: $bench not found; build first (ninja -C $build bench_parallel_step)"; exit 1; }
PRESET=${PRESET:-gpt2-tiny} SEQ=${SEQ:-256} BATCH=${BATCH:-8} GLOBAL=${GLOBAL:-16} STEPS=${STEPS:-6}
WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-3} BUCKET_MB=${BUCKET_MB:-25} ZERO1=${ZERO1:-0}
HEADS_TP=${HEADS_TP:-8} SP=${SP:-0}
cores=$(nproc)
mkdir -p "$out"
mpi=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
extra=(--preset "$PRESET" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP" --bucket-mb "$BUCKET_MB")
[ "$ZERO1" = 1 ] && extra+=(--zero1)
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

# mode ranks threads per_dp_rank_batch tp
configs=()
for n in 1 2 4; do configs+=("weak $n 1 $BATCH 1"); done
for n in 1 2 4; do
  [ $((GLOBAL % n)) -eq 0 ] || { echo "scaling.sh: GLOBAL=$GLOBAL is not divisible by $n"; exit 1; }
  configs+=("strong $n 1 $((GLOBAL / n)) 1")
done
for n in 1 2 4; do configs+=("tp-weak $n 1 $((BATCH * n)) $n"); done
for n in 1 2 4; do configs+=("tp-strong $n 1 $GLOBAL $n"); done
configs+=("reference 1 $cores $((BATCH * cores)) 1")

if [ "${PLOT_ONLY:-0}" = 1 ]; then
  read -r load_before < "$out/scaling.load_before"
  read -r load_after < "$out/scaling.load_after"
else
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "$load_before" > "$out/scaling.load_before"
  echo "scaling: $PRESET, seq $SEQ, weak batch $BATCH per rank, strong global batch $GLOBAL, TP rows with $HEADS_TP heads$([ "$SP" = 1 ] && echo ' and sequence parallelism'), $STEPS steps x $REPEATS repeats, bucket $BUCKET_MB MiB$([ "$ZERO1" = 1 ] && echo ', ZeRO-1'); $cores cores; load average $load_before"
  printf "mode\tranks\tthreads\tbatch\ttp\trepeat\tstep_s\tcompute_s\tcomm_s\texposed_s\ttp_comm_s\ttokens_per_s\n" > "$tsv"
  for ((r = 1; r <= REPEATS; ++r)); do
    for c in "${configs[@]}"; do
      read -r mode n t b tp <<< "$c"
      env=()
      [ "$t" -gt 1 ] && env=(-x OMP_NUM_THREADS="$t")
      tpargs=()
      case $mode in tp-*) tpargs=(--tp "$tp" --heads "$HEADS_TP"); [ "$SP" = 1 ] && tpargs+=(--sp) ;; esac
      line=$("${mpi[@]}" -np "$n" "${env[@]}" "$bench" "${extra[@]}" "${tpargs[@]}" --batch "$b" --threads "$t" | grep '^NURI ') || {
        echo "scaling.sh: the run '$c' failed"; exit 1; }
      val() { sed -E "s/.* $1=([^ ]+).*/\1/" <<< "$line"; }
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$mode" "$n" "$t" "$b" "$tp" "$r" "$(val step_s)" \
        "$(val compute_s)" "$(val comm_s)" "$(val exposed_s)" "$(val tp_comm_s)" "$(val tokens_per_s)" >> "$tsv"
      echo "  repeat $r: $mode, $n rank(s) x $t thread(s), tp $tp, batch $b per DP rank: $(val tokens_per_s) tokens/s"
    done
  done
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "$load_after" > "$out/scaling.load_after"
fi

/usr/bin/python3 - "$tsv" "$out/scaling.png" "$cores" "$load_before" "$load_after" "$PRESET" <<'EOF'
import csv, statistics, sys
tsv, png, cores, load_before, load_after, preset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["mode"], int(r["ranks"]), int(r["threads"]), int(r["batch"])), []).append(r)
def med(rs, k): return statistics.median(float(r[k]) for r in rs)
table = []
for (mode, n, t, b), rs in groups.items():
    tp = int(rs[0]["tp"])
    table.append(dict(mode=mode, ranks=n, threads=t, batch=b, global_batch=b * n // tp, repeats=len(rs),
                      step=med(rs, "step_s"), compute=med(rs, "compute_s"), comm=med(rs, "comm_s"),
                      exposed=med(rs, "exposed_s"), tps=med(rs, "tokens_per_s"),
                      spread=(max(float(r["tokens_per_s"]) for r in rs) - min(float(r["tokens_per_s"]) for r in rs))))
modes = ("weak", "strong", "tp-weak", "tp-strong")
base = {m: next(x for x in table if x["mode"] == m and x["ranks"] == 1) for m in modes}
print()
print(f"{'mode':<9} {'ranks':>5} {'thr':>3} {'batch':>5} {'global':>6} {'tokens/s':>9} {'+-':>6} {'speedup':>7} {'eff.':>6} "
      f"{'eff/core':>8} {'step s':>7} {'compute':>8} {'comm':>7} {'exposed':>8}  note")
for x in table:
    b = base.get(x["mode"])
    speed = x["tps"] / b["tps"] if b else float("nan")
    eff = speed / x["ranks"] if b else float("nan")
    eff_core = speed / min(x["ranks"], cores) if b else float("nan")
    x.update(speedup=speed, eff=eff, eff_core=eff_core)
    note = []
    if x["ranks"] > cores: note.append(f"oversubscribed: {x['ranks']} ranks on {cores} cores")
    if x["mode"] == "reference": note.append(f"1 process x {x['threads']} threads, for context")
    fmt = lambda v: "   -" if v != v else f"{100 * v:5.1f}%"
    print(f"{x['mode']:<9} {x['ranks']:>5} {x['threads']:>3} {x['batch']:>5} {x['global_batch']:>6} {x['tps']:>9.0f} "
          f"{x['spread']:>6.0f} {(f'{speed:.2f}x' if b else '-'):>7} {fmt(eff):>6} {fmt(eff_core) if x['ranks'] > cores else '':>8} "
          f"{x['step']:>7.3f} {x['compute']:>8.3f} {x['comm']:>7.4f} {x['exposed']:>8.4f}  {'; '.join(note)}")
print(f"\nmedians over {table[0]['repeats']} repeats (+- : max - min tokens/s); step times in seconds; comm = collectives "
      f"in flight (DP buckets beside backward, TP blocking), exposed = time the training thread waited for them (all TP "
      f"time is exposed); tp rows: batch per TP group; load average {load_before} before, {load_after} after")

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
for mode, color in (("weak", "tab:blue"), ("strong", "tab:orange"), ("tp-weak", "tab:green"), ("tp-strong", "tab:red")):
    xs = [x for x in table if x["mode"] == mode]
    n = [x["ranks"] for x in xs]
    axes[0].plot(n, [x["tps"] for x in xs], "o-", color=color, label=f"{mode} scaling")
    axes[0].plot(n, [base[mode]["tps"] * min(k, cores) for k in n], ":", color=color, alpha=0.6,
                 label=f"{mode}: linear up to {cores} cores")
    axes[1].plot(n, [100 * x["eff"] for x in xs], "o-", color=color, label=mode)
    over = [x for x in xs if x["ranks"] > cores]
    axes[1].plot([x["ranks"] for x in over], [100 * x["eff_core"] for x in over], "s", mfc="none", color=color,
                 label=f"{mode}, per core ({cores} cores)")
ref = [x for x in table if x["mode"] == "reference"]
if ref:
    axes[0].axhline(ref[0]["tps"], color="gray", ls="--", label=f"1 rank x {ref[0]['threads']} threads")
axes[0].set(xlabel="ranks (1 thread each)", ylabel="tokens/s", title=f"{preset}: global tokens/s", xticks=[1, 2, 4])
axes[0].legend(fontsize=8)
axes[1].axhline(100, color="gray", lw=0.5)
axes[1].axvspan(cores + 0.5, 4.5, color="red", alpha=0.08, label="oversubscribed")
axes[1].set(xlabel="ranks", ylabel="efficiency (%)", title="efficiency = tokens/s(n) / (n x tokens/s(1))",
            xticks=[1, 2, 4], ylim=(0, 110))
axes[1].legend(fontsize=8)
labels, comp, exp_, comm = [], [], [], []
for x in table:
    if x["mode"] == "reference": continue
    labels.append({"weak": "w", "strong": "s", "tp-weak": "tw", "tp-strong": "ts"}[x["mode"]] + str(x["ranks"]))
    comp.append(x["step"] - x["exposed"]); exp_.append(x["exposed"]); comm.append(x["comm"])
pos = list(range(len(labels)))
axes[2].bar([p - 0.2 for p in pos], comp, 0.4, label="compute", color="tab:olive")
axes[2].bar([p - 0.2 for p in pos], exp_, 0.4, bottom=comp, label="exposed comm (step = both)", color="tab:red")
axes[2].bar([p + 0.2 for p in pos], comm, 0.4, label="comm in flight (mostly beside backward)", color="tab:purple",
            alpha=0.6)
axes[2].set_xticks(pos, labels)
axes[2].set(ylabel="seconds per step", title="step time (w/s: DP weak/strong, tw/ts: TP; ranks)")
axes[2].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
fig.suptitle(f"nuri data- and tensor-parallel scaling on {cores} CPU cores; load average {load_before} -> {load_after}", fontsize=10)
fig.tight_layout()
fig.savefig(png, dpi=110)
print(f"plot: {png}   data: {tsv}")
EOF

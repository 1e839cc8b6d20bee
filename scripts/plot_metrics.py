#!/usr/bin/python3
"""Plots a nuri metrics.jsonl: loss and tokens/s against the training step.

    scripts/plot_metrics.py runs/quickstart/metrics.jsonl            -> runs/quickstart/metrics.png
    scripts/plot_metrics.py runs/quickstart/metrics.jsonl -o out.png

Top panel: training loss per step, validation loss at each evaluation, and the unigram baseline
(the loss of predicting every token by its frequency alone) as a dashed line. Bottom panel:
training throughput in tokens/s. Needs matplotlib (Debian: python3-matplotlib, seen by
/usr/bin/python3).
"""
import argparse
import json
import math
import os
import sys


def fail(message):
    print(f"plot_metrics: {message}", file=sys.stderr)
    sys.exit(1)


def number(value):
    """A finite float, or None (nuri writes a non-finite loss as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(path):
    if not os.path.exists(path):
        fail(f"'{path}' does not exist; train first (scripts/quickstart.sh) or check the path")
    if os.path.isdir(path):
        fail(f"'{path}' is a directory; give its metrics.jsonl")
    train, evals = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # a run still writing its last line
                print(f"plot_metrics: ignoring the incomplete last line {lineno}", file=sys.stderr)
                continue
            fail(f"{path}:{lineno} is not JSON ({e.msg}); is this a nuri metrics.jsonl?")
        if not isinstance(record, dict) or "type" not in record:
            fail(f"{path}:{lineno} has no 'type'; is this a nuri metrics.jsonl?")
        kind = record.get("type")
        if kind in ("train", "eval") and "step" not in record:
            fail(f"{path}:{lineno} is a {kind} record without 'step'; is this a nuri metrics.jsonl?")
        # Other records (e.g. the end-of-run "parallel" summary) are not plotted.
        if kind == "train":
            train.append(record)
        elif kind == "eval":
            evals.append(record)
    if not train and not evals:
        fail(f"'{path}' holds no train or eval records (is the run still starting?)")
    return train, evals


def series(records, key):
    xs, ys = [], []
    for r in records:
        if r.get("skipped"):  # a non-finite step: nuri logs its loss as -1
            continue
        y = number(r.get(key))
        if y is not None:
            xs.append(r["step"])
            ys.append(y)
    return xs, ys


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", help="metrics.jsonl written by `nuri train`")
    parser.add_argument("-o", "--output", help="PNG to write (default: beside the metrics file)")
    args = parser.parse_args()

    train, evals = read_metrics(args.metrics)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)),
                                         "metrics.png")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        fail("matplotlib is missing; install python3-matplotlib and run with /usr/bin/python3")

    fig, (ax_loss, ax_tps) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 1]})

    steps, loss = series(train, "loss")
    if steps:
        ax_loss.plot(steps, loss, color="tab:blue", linewidth=1, label="train loss")
    val_steps, val_loss = series(evals, "val_loss")
    if val_steps:
        ax_loss.plot(val_steps, val_loss, "o", color="tab:orange", markersize=5,
                     label="validation loss")
    _, unigram = series(evals, "unigram_val_loss")
    if unigram:
        ax_loss.axhline(unigram[-1], color="tab:gray", linestyle="--", linewidth=1,
                        label=f"unigram baseline ({unigram[-1]:.3f})")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(True, alpha=0.3)
    if ax_loss.has_data():
        ax_loss.legend(loc="upper right")
    title = os.path.basename(os.path.dirname(os.path.abspath(args.metrics))) or args.metrics
    summary = []
    if loss:
        summary.append(f"last train loss {loss[-1]:.3f}")
    if val_loss:
        summary.append(f"last val loss {val_loss[-1]:.3f}")
    ax_loss.set_title(title + ("  —  " + ", ".join(summary) if summary else ""))

    tps_steps, tps = series(train, "tokens_per_s")
    if tps_steps:
        ax_tps.plot(tps_steps, tps, color="tab:green", linewidth=1)
    ax_tps.set_ylabel("tokens/s")
    ax_tps.set_xlabel("step")
    ax_tps.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_tps.set_ylim(bottom=0)
    ax_tps.grid(True, alpha=0.3)

    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(output, dpi=110)
    print(f"plot_metrics: wrote {output}")


if __name__ == "__main__":
    main()

"""The PyTorch peer of bench_checkpoint: torch.save and torch.load of the same training state
(parameters and AdamW moments of the same shapes, fp32), fsynced, medians over repeats after two
warm-up rounds.
   /usr/bin/python3 benchmarks/peer_checkpoint.py --params N [--dir D] [--repeats 3]
Prints one line: PEER bytes=.. save_s=.. save_gbs=.. load_s=.."""
import argparse, os, statistics, time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--params", type=int, required=True)
ap.add_argument("--dir", default="/tmp/nuri-bench-ckpt-peer")
ap.add_argument("--repeats", type=int, default=3)
a = ap.parse_args()
os.makedirs(a.dir, exist_ok=True)
n = a.params
state = {"model": torch.randn(n), "exp_avg": torch.randn(n), "exp_avg_sq": torch.rand(n), "step": 1}
path = os.path.join(a.dir, "state.pt")
saves, loads = [], []
for r in range(a.repeats + 2):  # the first two are warm-up (page cache), as in bench_checkpoint
    t = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    torch.load(path)
    if r >= 2:
        saves.append(save_s)
        loads.append(time.perf_counter() - t)
os.remove(path)
b = 12.0 * n
s = statistics.median(saves)
print(f"PEER bytes={b:.0f} save_s={s:.4f} save_gbs={b / s / 1e9:.3f} load_s={statistics.median(loads):.4f}")

"""Parity of nuri's model with an independent PyTorch implementation (tests/torch_ref.py).

    /usr/bin/python3 tests/torch_parity.py --dump build/tests/parity_dump --workdir /tmp/parity

For each case below, `parity_dump` (tests/parity_dump.cpp) runs one forward, backward and AdamW
step of a small nuri model and writes the inputs and nuri's results; this script recomputes them
in float64 from the same float32 parameters and checks:

  logits       max |nuri - torch|                                       <= 1e-4 (logits are O(1))
  loss         |nuri - torch|, for forward_backward and forward_loss     <= 1e-4
  grads        per tensor: max |nuri - torch| / max |torch|               <= 1e-3
               (qkv tensors per q, k and v section; see grad_sections)
  step         parameters after one AdamW step, max |nuri - torch|       <= 1e-4, and also
               <= 1e-3 lr (1e-6 here; the table shows diff / lr): the update right to 0.1% of a
               step, which catches weight decay on the wrong tensors, a change of only
               lr * wd * |p| (a few 1e-3 lr for the 0.02-scale matrices).

The AdamW step is checked twice, because Adam's first step is lr * g / (|g| + eps) ~ lr * sign(g):
an element whose gradient is ~0 can flip sign under fp32 rounding of g and move by 2 lr while
nuri is right.
  step[own]    torch's AdamW on torch's own gradients (the end-to-end check). Elements whose
               update the measured gradient error dg of their tensor could shift by more than a
               tenth of the update tolerance (nonzero |g| below 10 dg, where the sign itself is in
               doubt, or below sqrt(10 eps dg / 1e-3)) are excluded from the tests above, counted
               in the table, and held only to the bound |diff| <= 2 lr (1 + wd |p|) that any first
               Adam step obeys.
  step[nuri]   torch's AdamW fed nuri's own gradients: the optimizer alone, every element.
The optimizer runs in float64 like the model: nuri's step is fp32, so the reference should carry
no rounding of its own, and the residual differences (~1e-7, fp32 rounding of p ~ 1) show as such.

Exits 0 when every check passes; otherwise prints which check failed by how much and exits 1.
A missing PyTorch is a failure (install Debian's python3-torch; run with /usr/bin/python3).
"""
import argparse
import json
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"torch_parity: FAILED: PyTorch/numpy not importable by {sys.executable} ({e}); install "
          f"Debian's python3-torch and run this with /usr/bin/python3")
    sys.exit(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref  # noqa: E402

LOGITS_TOL = 1e-4
LOSS_TOL = 1e-4
GRAD_REL_TOL = 1e-3
STEP_TOL = 1e-4
UPDATE_REL_TOL = 1e-3  # of lr


def dump_args(**opts):
    """parity_dump options from keyword arguments, every one spelled out in CASES."""
    args = []
    for key, value in opts.items():
        args += [f"--{key}", str(int(value) if isinstance(value, bool) else value)]
    return args


# (name, family, options). Shapes are awkward on purpose: T=11 (prime, < max_seq), V=97 (prime).
CASES = [
    ("gpt2-tied", "gpt2",
     dump_args(n_layer=2, d_model=32, n_head=4, n_kv_head=4, d_ff=64, vocab=97, seq=11, batch=3,
               max_seq=16, tied=True, attn_gain=6.0)),
    ("gpt2-untied-fullT", "gpt2",
     dump_args(n_layer=1, d_model=24, n_head=3, n_kv_head=3, d_ff=40, vocab=53, seq=16, batch=2,
               max_seq=16, tied=False, attn_gain=6.0)),
    ("gpt2-recompute", "gpt2",
     dump_args(n_layer=2, d_model=32, n_head=4, n_kv_head=4, d_ff=64, vocab=97, seq=11, batch=3,
               max_seq=16, tied=True, recompute=True, attn_gain=6.0)),
    ("llama-gqa-untied", "llama",
     dump_args(n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab=97, seq=11, batch=3,
               max_seq=16, tied=False, attn_gain=6.0)),
    ("llama-mqa-tied", "llama",
     dump_args(n_layer=2, d_model=32, n_head=4, n_kv_head=1, d_ff=40, vocab=61, seq=16, batch=2,
               max_seq=16, tied=True, rope_theta=500.0, attn_gain=6.0)),
    ("llama-recompute", "llama",
     dump_args(n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab=97, seq=11, batch=3,
               max_seq=16, tied=False, recompute=True, attn_gain=6.0)),
    # longer rows and sequences, past any row chunk or attention tile of a few dozen
    ("gpt2-many-rows", "gpt2",
     dump_args(n_layer=1, d_model=32, n_head=2, n_kv_head=2, d_ff=64, vocab=257, seq=37, batch=9,
               max_seq=40, tied=True, attn_gain=6.0)),
    ("llama-long", "llama",
     dump_args(n_layer=1, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab=131, seq=67, batch=5,
               max_seq=80, tied=False, attn_gain=6.0)),
]


class Failure(Exception):
    pass


def read_bin(path, dtype, count):
    data = np.fromfile(path, dtype=dtype)
    if data.size != count:
        raise Failure(f"{path}: {data.size} values, expected {count}")
    return data


def load_dump(outdir):
    with open(os.path.join(outdir, "meta.json")) as f:
        meta = json.load(f)
    P = int(meta["num_params"])
    B, T = int(meta["B"]), int(meta["T"])
    V = int(meta["config"]["vocab_size"])
    d = {"meta": meta}
    for name in ("params", "grads", "params_step1"):
        d[name] = read_bin(os.path.join(outdir, f"{name}.bin"), "<f4", P)
    d["logits"] = read_bin(os.path.join(outdir, "logits.bin"), "<f4", B * T * V).reshape(B, T, V)
    for name in ("tokens", "targets"):
        d[name] = read_bin(os.path.join(outdir, f"{name}.bin"), "<i4", B * T).reshape(B, T)
    # The tensor table must tile the flat buffer without overlap (gaps for alignment are fine).
    end = 0
    for t in sorted(meta["tensors"], key=lambda t: t["offset"]):
        if t["offset"] < end or t["offset"] + t["numel"] > P:
            raise Failure(f"tensor {t['name']} at offset {t['offset']} overlaps or overruns")
        if int(np.prod(t["shape"])) != t["numel"]:
            raise Failure(f"tensor {t['name']}: shape {t['shape']} but numel {t['numel']}")
        end = t["offset"] + t["numel"]
    return d


def views(flat, meta):
    """name -> float64 tensor view of a flat float32 buffer."""
    return {t["name"]: torch.from_numpy(
                flat[t["offset"]:t["offset"] + t["numel"]].astype(np.float64)
            ).reshape(t["shape"]) for t in meta["tensors"]}


def grad_sections(cfg, torch_grads, nuri_grads):
    """(label, torch grad, nuri grad, floor of the relative-error denominator) per tensor, with
    each qkv tensor split into its q, k and v rows: q and k gradients are orders of magnitude
    below v's, so a check relative to the whole tensor would hardly see them. The floor, 1e-3 of
    the whole tensor's max |grad|, keeps a section whose gradient is zero in exact arithmetic
    (the k bias: softmax ignores a shift of a query's scores) from dividing rounding by rounding."""
    H, KV, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    sections = {"q": (0, H * D), "k": (H * D, (H + KV) * D), "v": ((H + KV) * D, (H + 2 * KV) * D)}
    for name, g in torch_grads.items():
        if ".attn.qkv." not in name:
            yield name, g, nuri_grads[name], 0.0
            continue
        floor = 1e-3 * g.abs().max().item()
        for part, (a, b) in sections.items():
            yield f"{name}[{part}]", g[a:b], nuri_grads[name][a:b], floor


def adamw_step(cfg, params, grads, opt_cfg):
    """One torch AdamW step from float64 params with the given grads; returns name -> new param."""
    model = torch_ref.ReferenceModel(cfg, params)
    for name, t in model.params.items():
        t.grad = grads[name].to(torch.float64).clone()
    opt = model.adamw(lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]),
                      eps=opt_cfg["eps"], weight_decay=opt_cfg["weight_decay"])
    opt.step()
    return {name: t.detach() for name, t in model.params.items()}


def check_case(name, family, options, dump, workdir):
    """Runs one case; returns (row of figures, list of failure messages)."""
    outdir = os.path.join(workdir, name)
    cmd = [dump, family, outdir] + options
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise Failure(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    d = load_dump(outdir)
    meta = d["meta"]
    cfg = torch_ref.Config.from_dict(meta["config"])
    if cfg.family != family:
        raise Failure(f"dump says family {cfg.family!r}, asked for {family!r}")
    specs = {n: decay for n, _, decay in torch_ref.param_specs(cfg)}
    for t in meta["tensors"]:
        if t["name"] in specs and bool(t["weight_decay"]) != specs[t["name"]]:
            raise Failure(f"tensor {t['name']}: weight_decay={t['weight_decay']}, expected "
                          f"{specs[t['name']]} (decay matrices and embeddings, not norms/biases)")
    params0 = views(d["params"], meta)
    model = torch_ref.ReferenceModel(cfg, params0)  # checks names and shapes
    tokens = torch.from_numpy(d["tokens"].astype(np.int64))
    targets = torch.from_numpy(d["targets"].astype(np.int64))
    if not (targets < 0).any():
        raise Failure("the dump has no ignored targets (< 0); the test needs some")

    failures = []
    row = {"case": name, "lr": meta["adamw"]["lr"]}
    logits = model.logits(tokens)
    row["logits"] = (logits.detach() - torch.from_numpy(d["logits"]).double()).abs().max().item()
    if not row["logits"] <= LOGITS_TOL:
        failures.append(f"logits: max |diff| {row['logits']:.3g} > {LOGITS_TOL}")

    loss = torch_ref.cross_entropy(logits, targets)
    row["loss"] = abs(loss.item() - meta["loss"])
    row["loss_eval"] = abs(loss.item() - meta["loss_eval"])
    for key, label in (("loss", "forward_backward"), ("loss_eval", "forward_loss")):
        if not row[key] <= LOSS_TOL:
            failures.append(f"loss from {label}: nuri {meta[key]:.7f}, torch {loss.item():.7f}, "
                            f"|diff| {row[key]:.3g} > {LOSS_TOL}")

    loss.backward()
    torch_grads = model.grads()
    nuri_grads = views(d["grads"], meta)
    worst_name, worst = None, -1.0
    for part, g, g_nuri, floor in grad_sections(cfg, torch_grads, nuri_grads):
        scale = max(g.abs().max().item(), floor)
        err = (g_nuri - g).abs().max().item()
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        if rel > worst:
            worst_name, worst = part, rel
        if not rel <= GRAD_REL_TOL:
            failures.append(f"grad {part}: max |diff| {err:.3g} = {rel:.3g} of its max |grad| "
                            f"{scale:.3g} > {GRAD_REL_TOL}")
    row["grad"], row["grad_worst"] = worst, worst_name

    opt_cfg = meta["adamw"]
    lr, wd = opt_cfg["lr"], opt_cfg["weight_decay"]
    nuri_p1 = views(d["params_step1"], meta)

    # step[own]: torch's AdamW on torch's gradients.
    own = adamw_step(cfg, params0, torch_grads, opt_cfg)
    step_err, excluded, total = 0.0, 0, 0
    for n, p1 in own.items():
        g = torch_grads[n]
        # The measured gradient error dg of this tensor can move lr * g / (|g| + eps) by up to
        # lr * eps * dg / g^2, and by 2 lr when |g| <= dg. Elements where that exceeds a tenth of
        # the update tolerance are ambiguous: |g| below 10 dg or below sqrt(10 eps dg / tol).
        dg = (nuri_grads[n] - g).abs().max().item()
        threshold = max(10 * dg, (10 * opt_cfg["eps"] * dg / UPDATE_REL_TOL) ** 0.5)
        ambiguous = (g != 0) & (g.abs() <= threshold)
        diff = (nuri_p1[n] - p1).abs()
        excluded += int(ambiguous.sum())
        total += g.numel()
        if not ambiguous.all():
            step_err = max(step_err, diff[~ambiguous].max().item())
        if ambiguous.any():
            bound = 2 * lr * (1 + (wd if specs[n] else 0) * params0[n].abs()) + 1e-6
            over = (diff - bound)[ambiguous].max().item()
            if over > 0:
                failures.append(f"step[own] {n}: an element with a near-zero grad moved "
                                f"{over:.3g} beyond the 2 lr bound of a first Adam step")
    row["step_own"], row["excluded"], row["total"] = step_err, excluded, total
    if not step_err <= min(STEP_TOL, UPDATE_REL_TOL * lr):
        failures.append(f"step[own]: max |param diff| {step_err:.3g} = {step_err / lr:.3g} lr; "
                        f"allowed {min(STEP_TOL, UPDATE_REL_TOL * lr):.3g}")

    # step[nuri]: torch's AdamW on nuri's gradients, every element.
    fed = adamw_step(cfg, params0, nuri_grads, opt_cfg)
    step_err, worst_step = 0.0, None
    for n, p1 in fed.items():
        e = (nuri_p1[n] - p1).abs().max().item()
        if e > step_err:
            step_err, worst_step = e, n
    row["step_nuri"] = step_err
    if not step_err <= min(STEP_TOL, UPDATE_REL_TOL * lr):
        failures.append(f"step[nuri]: max |param diff| {step_err:.3g} = {step_err / lr:.3g} lr in "
                        f"{worst_step}; allowed {min(STEP_TOL, UPDATE_REL_TOL * lr):.3g} (weight "
                        f"decay, wd={wd}, applied to the wrong tensors?)")
    return row, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dump", required=True, help="path to the parity_dump executable")
    ap.add_argument("--workdir", required=True, help="directory for the dumps")
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this")
    ap.add_argument("--skip-self-test", action="store_true",
                    help="skip torch_ref's own check against PyTorch ops and finite differences")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if not args.skip_self_test:
        problems = torch_ref.self_test()
        if problems:
            for p in problems:
                print(f"torch_parity: FAILED: the reference itself is wrong: {p}")
            return 1
        print("torch_ref self-test (ops vs PyTorch built-ins, autograd vs finite differences): ok")

    os.makedirs(args.workdir, exist_ok=True)
    cases = [c for c in CASES if not args.only or args.only in c[0]]
    if not cases:
        print(f"torch_parity: FAILED: no case matches --only {args.only!r}; cases: "
              f"{', '.join(c[0] for c in CASES)}")
        return 1
    rows, failures = [], []
    for name, family, options in cases:
        try:
            row, fails = check_case(name, family, options, args.dump, args.workdir)
            rows.append(row)
            failures += [f"{name}: {f}" for f in fails]
        except Failure as e:
            failures.append(f"{name}: {e}")
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            failures.append(f"{name}: {type(e).__name__}: {e}")

    print(f"{'case':<20} {'logits':>9} {'loss':>9} {'loss_ev':>9} {'grad rel':>9} "
          f"{'step own':>9} {'/lr':>9} {'excluded':>12} {'step nuri':>9} {'/lr':>9}  "
          f"worst grad tensor")
    for r in rows:
        print(f"{r['case']:<20} {r['logits']:9.2e} {r['loss']:9.2e} {r['loss_eval']:9.2e} "
              f"{r['grad']:9.2e} {r['step_own']:9.2e} {r['step_own'] / r['lr']:9.2e} "
              f"{r['excluded']:>5}/{r['total']:<6} {r['step_nuri']:9.2e} "
              f"{r['step_nuri'] / r['lr']:9.2e}  "
              f"{r['grad_worst']}")
    print(f"tolerances: logits {LOGITS_TOL}, loss {LOSS_TOL}, grad rel {GRAD_REL_TOL}, "
          f"step {STEP_TOL} and {UPDATE_REL_TOL} lr; 'excluded' = elements of step[own] whose "
          f"gradient is too near zero for a definite first Adam step (held to the 2 lr bound); "
          f"the k part of qkv has such gradients by nature (softmax ignores a shift of the scores)")
    if failures:
        for f in failures:
            print(f"torch_parity: FAILED: {f}")
        return 1
    print(f"torch_parity: ok ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

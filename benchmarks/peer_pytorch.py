"""The peer to beat: the same GPT-2 model trained with PyTorch on the CPU, in tokens per second.

    /usr/bin/python3 benchmarks/peer_pytorch.py --preset gpt2-tiny --batch 8 --mode best

Same architecture as nuri's gpt2 family (tests/torch_ref.py states the math): learned positions,
pre-LayerNorm blocks with a fused qkv linear, causal attention, GELU (tanh) MLP, tied LM head,
mean cross-entropy, AdamW (decay on matrices and embeddings only). Random tokens, fp32, T=256.
PyTorch is used the fast way here (nn.Linear, F.gelu(approximate="tanh"), batched matmuls, the
foreach AdamW); tests/torch_ref.py is the readable reference.

Debian's torch 1.13 runs its matmuls in OpenBLAS's own thread pool, which torch.set_num_threads
does not govern; with defaults the OpenMP and OpenBLAS pools fight over the cores. A fair peer:
  --mode threads  one process, OMP_WAIT_POLICY=PASSIVE, OMP/OpenBLAS threads = --threads (2)
  --mode ddp      --procs (2) processes, 1 thread each, gloo DistributedDataParallel, the global
                  batch split between them; tokens/s counts all of them
  --mode best     both (each in its own process), and the better one is reported
Both modes also keep freed memory in glibc's heap (see thread_env). The environment must be set
before torch is imported, so this script re-executes itself with it. The last line is machine-readable:  PEER tokens_per_s=<float> mode=<mode>
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

PRESETS = {
    # name: (n_layer, d_model, n_head, d_ff, vocab_size, max_seq_len); all tied, gpt2 family
    "gpt2-tiny": (6, 384, 6, 1536, 8192, 256),
    "gpt2-124m": (12, 768, 12, 3072, 50257, 1024),
}
CHILD_FLAG = "NURI_PEER_CHILD"


def thread_env(threads):
    """The environment of a fair peer: one bounded thread pool that sleeps when idle, and glibc
    malloc keeping freed memory rather than unmapping (and page-faulting back) the large
    activation buffers every step, as PyTorch's CPU tuning guide gets from jemalloc/tcmalloc
    (measured here: ~+20% on gpt2-tiny)."""
    big = str(4 << 30)
    return {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "MALLOC_MMAP_THRESHOLD_": big, "MALLOC_TRIM_THRESHOLD_": big,
            "MALLOC_TOP_PAD_": str(512 << 20)}


def reexec_with(env_updates):
    """Re-executes this script with env_updates unless they are already in effect."""
    if os.environ.get(CHILD_FLAG) == "1" and all(os.environ.get(k) == v
                                                 for k, v in env_updates.items()):
        return
    env = dict(os.environ, **env_updates, **{CHILD_FLAG: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def flops_per_token(n_layer, d_model, d_ff, vocab, seq):
    """6 N + 12 L T d, N without the position table (nuri's convention)."""
    n = vocab * d_model + n_layer * (4 * d_model * d_model + 2 * d_model * d_ff
                                     + 9 * d_model + d_ff) + 2 * d_model
    return 6.0 * n + 12.0 * n_layer * seq * d_model


def build(args, torch):
    """The model, its AdamW and a function running one training step on (tokens, targets)."""
    import math
    import torch.nn as nn
    import torch.nn.functional as F

    n_layer, C, H, d_ff, V, max_seq = PRESETS[args.preset]
    D = C // H

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(C)
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)
            self.ln2 = nn.LayerNorm(C)
            self.fc = nn.Linear(C, d_ff)
            self.mlp_proj = nn.Linear(d_ff, C)

        def forward(self, x, mask_bias):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k, v = (t.reshape(B * H, T, D) for t in (q, k, v))
            # scores = mask + q k^T / sqrt(D) in one batched gemm
            scores = torch.baddbmm(mask_bias, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(D))
            y = torch.bmm(torch.softmax(scores, dim=-1), v)                 # (B*H, T, D)
            y = y.view(B, H, T, D).transpose(1, 2).reshape(B, T, C)
            x = x + self.proj(y)
            return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(max_seq, C)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(C)
            for name, p in self.named_parameters():  # GPT-2 initialisation
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, tokens, targets):
            T = tokens.shape[1]
            x = self.wte(tokens) + self.wpe.weight[:T]
            mask_bias = torch.full((T, T), float("-inf")).triu_(1)
            for block in self.blocks:
                x = block(x, mask_bias)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    torch.manual_seed(1234)
    model = GPT()
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    n_params = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    return model, decay, no_decay, n_params


def train_loop(args, torch, model, opt, batch, log):
    """Runs warm-up + timed steps on random tokens; returns the list of timed step seconds."""
    V, T = PRESETS[args.preset][4], args.seq
    g = torch.Generator().manual_seed(42 + (torch.distributed.get_rank()
                                            if torch.distributed.is_initialized() else 0))
    tokens = torch.randint(0, V, (batch, T + 1), generator=g)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(inputs, targets)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
        log(f"  step {step:2d} {'warm-up' if step < args.warmup else 'timed  '} "
            f"{elapsed * 1e3:8.1f} ms  loss {loss_value:.4f}")
    return times


def make_optimizer(torch, decay, no_decay, lr):
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)


def report(args, mode, times, n_params, detail):
    n_layer, C, _, d_ff, V, _ = PRESETS[args.preset]
    step_s = statistics.median(times)
    tps = args.batch * args.seq / step_s
    gflops = tps * flops_per_token(n_layer, C, d_ff, V, args.seq) / 1e9
    print(f"peer_pytorch: {args.preset} ({n_params / 1e6:.1f}M params), B={args.batch} "
          f"T={args.seq}, mode {mode} ({detail}): median step {step_s * 1e3:.1f} ms over "
          f"{len(times)} steps, {tps:,.0f} tokens/s, {gflops:.1f} GFLOP/s")
    print(f"PEER tokens_per_s={tps:.2f} mode={mode}", flush=True)


def run_threads(args):
    reexec_with(thread_env(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    model, decay, no_decay, n_params = build(args, torch)
    opt = make_optimizer(torch, decay, no_decay, args.lr)
    times = train_loop(args, torch, model, opt, args.batch, print)
    report(args, "threads", times, n_params, f"1 process x {torch.get_num_threads()} threads")


def ddp_worker(rank, args, port):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.procs)
    model, decay, no_decay, n_params = build(args, torch)  # same seed: same weights everywhere
    ddp = DistributedDataParallel(model, gradient_as_bucket_view=True)
    opt = make_optimizer(torch, decay, no_decay, args.lr)
    log = print if rank == 0 else (lambda *_: None)
    times = train_loop(args, torch, ddp, opt, args.batch // args.procs, log)
    # a step ends for everyone at its all-reduce; take the slowest rank's time per step
    t = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        report(args, "ddp", t.tolist(), n_params,
               f"{args.procs} gloo processes x 1 thread, {args.batch // args.procs} sequences each")
    dist.destroy_process_group()


def run_ddp(args):
    if args.batch % args.procs:
        sys.exit(f"peer_pytorch: --batch {args.batch} must divide among --procs {args.procs}")
    reexec_with(thread_env(1))
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(args, port), nprocs=args.procs, join=True)


def run_best(args):
    """Each mode in its own process (its own thread environment); reports the faster."""
    results = {}
    for mode in ("threads", "ddp"):
        argv = [sys.executable, os.path.abspath(__file__), "--mode", mode,
                "--preset", args.preset, "--batch", str(args.batch), "--seq", str(args.seq),
                "--threads", str(args.threads), "--procs", str(args.procs),
                "--warmup", str(args.warmup), "--steps", str(args.steps), "--lr", str(args.lr)]
        env = {k: v for k, v in os.environ.items() if k != CHILD_FLAG}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        lines = proc.stdout.splitlines()
        for line in lines:
            if not line.startswith("PEER "):
                print(line)
        match = [re.match(r"PEER tokens_per_s=([0-9.eE+-]+) mode=(\w+)", l) for l in lines]
        match = [m for m in match if m]
        if proc.returncode != 0 or not match:
            print(f"peer_pytorch: mode {mode} failed (exit {proc.returncode}):\n{proc.stderr}")
            continue
        results[mode] = float(match[-1].group(1))
    if not results:
        sys.exit("peer_pytorch: no mode produced a figure")
    best = max(results, key=results.get)
    print("peer_pytorch: " + ", ".join(f"{m} {v:,.0f} tokens/s" for m, v in results.items())
          + f"; best: {best}")
    print(f"PEER tokens_per_s={results[best]:.2f} mode={best}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-tiny")
    ap.add_argument("--batch", type=int, default=8, help="global batch (sequences per step)")
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    ap.add_argument("--mode", choices=("threads", "ddp", "best"), default="best")
    ap.add_argument("--threads", type=int, default=2, help="threads in --mode threads")
    ap.add_argument("--procs", type=int, default=2, help="processes in --mode ddp")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    if args.seq > PRESETS[args.preset][5]:
        sys.exit(f"peer_pytorch: --seq {args.seq} exceeds {args.preset}'s max_seq_len "
                 f"{PRESETS[args.preset][5]}")
    {"threads": run_threads, "ddp": run_ddp, "best": run_best}[args.mode](args)


if __name__ == "__main__":
    main()

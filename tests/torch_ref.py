"""An independent PyTorch implementation of nuri's decoder, for parity tests.

Written from the math stated in include/nuri/model.hpp and include/nuri/backend.hpp, not from
nuri's C++; every op is spelled out here (no fused PyTorch kernels) so that this file also
documents the model. tests/torch_parity.py compares it with nuri's forward, backward and AdamW
step; `python3 tests/torch_ref.py` checks it against PyTorch's built-in ops and finite differences.

Parameter names, shapes (linear weights are (out, in): y = x W^T + b) and the weight-decay flag:

  both families   wte (V,C)                                          decay
  gpt2 only       wpe (max_seq_len,C)                                decay
  per layer l     blocks.{l}.ln1.weight (C)     [.bias (C), gpt2]    no decay
                  blocks.{l}.attn.qkv.weight ((H+2KV)*D, C)          decay
                    [.bias ((H+2KV)*D), gpt2]                        no decay
                  blocks.{l}.attn.proj.weight (C, H*D) [.bias (C)]
                  blocks.{l}.ln2.weight (C)     [.bias (C)]
                  blocks.{l}.mlp.fc.weight      (F,C) gpt2; (2F,C) llama: rows [0,F) gate, [F,2F) up
                    [.bias (F)]
                  blocks.{l}.mlp.proj.weight (C,F) [.bias (C)]
  final           ln_f.weight (C) [ln_f.bias (C)]
  untied head     lm_head.weight (V,C)         (tied: the logits use wte)

Math, for tokens (B,T):
  x = wte[tokens] (+ wpe[t] for gpt2)
  each block:  h = x + proj(attention(qkv(norm1(x))));  x = h + mlp(norm2(h))
  logits = norm_f(x) @ W_head^T;  loss = mean cross-entropy over targets >= 0
where norm is LayerNorm (gpt2) or RMSNorm (llama), the MLP is proj(gelu_tanh(fc(x))) (gpt2) or
proj(silu(gate) * up) (llama), and attention is causal, scaled by 1/sqrt(D), with grouped-query
heads (query head h reads kv head h // (H/KV)) and, for llama, RoPE on q and k.
"""
import dataclasses
import math

import torch

GPT2 = "gpt2"
LLAMA = "llama"


@dataclasses.dataclass
class Config:
    family: str
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int
    vocab_size: int
    max_seq_len: int
    tied_embeddings: bool
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @classmethod
    def from_dict(cls, d):
        """From a dict with (at least) the fields above; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def head_dim(self):
        return self.d_model // self.n_head

    def validate(self):
        if self.family not in (GPT2, LLAMA):
            raise ValueError(f"family must be gpt2 or llama, got {self.family!r}")
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must divide d_model={self.d_model} and "
                             f"n_kv_head={self.n_kv_head} must divide n_head")
        if self.family == LLAMA and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {self.head_dim}")


def param_specs(cfg):
    """The parameters nuri's model must have: a list of (name, shape, weight_decay)."""
    C, F, V, D = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.head_dim
    H, KV = cfg.n_head, cfg.n_kv_head
    gpt2 = cfg.family == GPT2
    specs = [("wte", (V, C), True)]
    if gpt2:
        specs.append(("wpe", (cfg.max_seq_len, C), True))

    def norm(prefix):
        specs.append((f"{prefix}.weight", (C,), False))
        if gpt2:
            specs.append((f"{prefix}.bias", (C,), False))

    def linear(prefix, out_features, in_features):
        specs.append((f"{prefix}.weight", (out_features, in_features), True))
        if gpt2:
            specs.append((f"{prefix}.bias", (out_features,), False))

    for layer in range(cfg.n_layer):
        p = f"blocks.{layer}"
        norm(f"{p}.ln1")
        linear(f"{p}.attn.qkv", (H + 2 * KV) * D, C)
        linear(f"{p}.attn.proj", C, H * D)
        norm(f"{p}.ln2")
        linear(f"{p}.mlp.fc", F if gpt2 else 2 * F, C)
        linear(f"{p}.mlp.proj", C, F)
    norm("ln_f")
    if not cfg.tied_embeddings:
        specs.append(("lm_head.weight", (V, C), True))
    return specs


# ---- the ops, written out ----

def linear(x, weight, bias=None):
    """y = x W^T + b, W (out, in)."""
    y = x @ weight.t()
    return y if bias is None else y + bias


def layer_norm(x, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * w + b over the last dim; var is the biased variance."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) * w over the last dim."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def gelu_tanh(x):
    """GELU, tanh approximation (GPT-2's gelu_new)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * torch.sigmoid(x)


def rope(x, theta):
    """Rotary embedding of x (B,T,heads,D), half-split layout (Hugging Face Llama, GPT-NeoX):
    the pair (x[i], x[i + D/2]) at position t rotates by angle t * theta^(-2i/D), i < D/2."""
    _, T, _, D = x.shape
    half = D // 2
    inv_freq = theta ** (-2.0 * torch.arange(half, dtype=x.dtype) / D)          # (D/2)
    angle = torch.arange(T, dtype=x.dtype)[:, None] * inv_freq[None, :]         # (T, D/2)
    cos = angle.cos()[None, :, None, :]
    sin = angle.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def causal_attention(q, k, v):
    """q (B,T,H,D), k and v (B,T,KV,D) -> (B,T,H*D). Query head h attends with kv head
    h // (H/KV), position t sees positions <= t, scores scaled by 1/sqrt(D)."""
    B, T, H, D = q.shape
    group = H // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # head order k0,k0,..,k1,k1,..: index h holds h // group
    v = v.repeat_interleave(group, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))                          # (B,H,T,D)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)                          # (B,H,T,T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return (probs @ v).transpose(1, 2).reshape(B, T, H * D)


def cross_entropy(logits, targets):
    """Mean over rows with target >= 0 of -log softmax(logits)[target]."""
    logp = torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
    targets = targets.reshape(-1)
    keep = targets >= 0
    nll = -logp[keep].gather(1, targets[keep][:, None].long())
    return nll.mean()


# ---- the model ----

class ReferenceModel:
    """nuri's decoder over a name -> tensor dict. The tensors are copied into leaf tensors of
    `dtype` (float64 by default, so the reference is far more precise than nuri's fp32) that
    require grad; `params` maps names to them."""

    def __init__(self, cfg, tensors, dtype=torch.float64):
        cfg.validate()
        self.cfg = cfg
        expected = {name: tuple(shape) for name, shape, _ in param_specs(cfg)}
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(f"{n} {got[n]} (expected {expected[n]})"
                           for n in set(expected) & set(got) if expected[n] != got[n])
            raise ValueError(f"parameters differ from the {cfg.family} layout: missing {missing}, "
                             f"unexpected {extra}, wrong shape {wrong}")
        self.params = {name: torch.as_tensor(t).to(dtype).clone().requires_grad_(True)
                       for name, t in tensors.items()}

    def _block(self, x, layer):
        cfg, p = self.cfg, self.params
        pre = f"blocks.{layer}"
        B, T, _ = x.shape
        H, KV, D = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        gpt2 = cfg.family == GPT2

        def norm(name, y):
            if gpt2:
                return layer_norm(y, p[f"{name}.weight"], p[f"{name}.bias"], cfg.norm_eps)
            return rms_norm(y, p[f"{name}.weight"], cfg.norm_eps)

        def lin(name, y):
            return linear(y, p[f"{name}.weight"], p.get(f"{name}.bias"))

        qkv = lin(f"{pre}.attn.qkv", norm(f"{pre}.ln1", x))       # (B,T,(H+2KV)*D)
        q = qkv[..., :H * D].reshape(B, T, H, D)
        k = qkv[..., H * D:(H + KV) * D].reshape(B, T, KV, D)
        v = qkv[..., (H + KV) * D:].reshape(B, T, KV, D)
        if not gpt2:
            q, k = rope(q, cfg.rope_theta), rope(k, cfg.rope_theta)
        h = x + lin(f"{pre}.attn.proj", causal_attention(q, k, v))

        fc = lin(f"{pre}.mlp.fc", norm(f"{pre}.ln2", h))
        if gpt2:
            act = gelu_tanh(fc)
        else:
            gate, up = fc[..., :cfg.d_ff], fc[..., cfg.d_ff:]
            act = silu(gate) * up
        return h + lin(f"{pre}.mlp.proj", act)

    def logits(self, tokens):
        """tokens (B,T) integer -> logits (B,T,V)."""
        cfg, p = self.cfg, self.params
        tokens = torch.as_tensor(tokens).long()
        T = tokens.shape[1]
        if T > cfg.max_seq_len:
            raise ValueError(f"T={T} exceeds max_seq_len={cfg.max_seq_len}")
        x = p["wte"][tokens]
        if cfg.family == GPT2:
            x = x + p["wpe"][:T]
        for layer in range(cfg.n_layer):
            x = self._block(x, layer)
        if cfg.family == GPT2:
            x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg.norm_eps)
        else:
            x = rms_norm(x, p["ln_f.weight"], cfg.norm_eps)
        head = p["wte"] if cfg.tied_embeddings else p["lm_head.weight"]
        return x @ head.t()

    def loss(self, tokens, targets):
        """Mean cross-entropy of the next-token targets (B,T); targets < 0 are ignored."""
        return cross_entropy(self.logits(tokens), torch.as_tensor(targets))

    def grads(self):
        return {name: t.grad for name, t in self.params.items()}

    def adamw(self, lr, betas, eps, weight_decay):
        """torch.optim.AdamW over the parameters, decaying only those nuri decays (matrices and
        embeddings; not norms or biases)."""
        flags = {name: decay for name, _, decay in param_specs(self.cfg)}
        decay = [t for n, t in self.params.items() if flags[n]]
        no_decay = [t for n, t in self.params.items() if not flags[n]]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=lr, betas=betas, eps=eps)


def random_tensors(cfg, seed=0, dtype=torch.float64):
    """Random parameters for cfg (norm weights near 1, small biases), for self-tests."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, decay in param_specs(cfg):
        t = torch.randn(shape, generator=g, dtype=dtype)
        if decay:
            t = t * 0.3
        elif name.endswith(".weight"):
            t = 1.0 + 0.2 * t
        else:
            t = 0.1 * t
        out[name] = t
    return out


# ---- self-test: the written-out ops against PyTorch's own, the gradient against finite differences ----

def _self_test_ops():
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 12, generator=g, dtype=torch.float64)
    w = torch.randn(12, generator=g, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    checks = {
        "layer_norm": (layer_norm(x, w, b, 1e-5), F.layer_norm(x, (12,), w, b, 1e-5)),
        "rms_norm": (rms_norm(x, w, 1e-5), x / torch.sqrt(x.pow(2).mean(-1, True) + 1e-5) * w),
        "gelu_tanh": (gelu_tanh(x), F.gelu(x, approximate="tanh")),
        "silu": (silu(x), F.silu(x)),
    }
    # RoPE: Hugging Face Llama's form, x * cos + rotate_half(x) * sin with cos/sin duplicated.
    B, T, nh, D, theta = 2, 7, 3, 8, 500.0
    xr = torch.randn(B, T, nh, D, generator=g, dtype=torch.float64)
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    emb = torch.cat([torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)] * 2, dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    rotate_half = torch.cat([-xr[..., D // 2:], xr[..., :D // 2]], dim=-1)
    checks["rope"] = (rope(xr, theta), xr * cos + rotate_half * sin)
    # Attention: a loop over batch, query head and position with explicit kv-head indexing.
    H, KV = 4, 2
    q = torch.randn(B, T, H, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, KV, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, KV, D, generator=g, dtype=torch.float64)
    loop = torch.zeros(B, T, H, D, dtype=torch.float64)
    for bi in range(B):
        for h in range(H):
            kvh = h // (H // KV)
            for t in range(T):
                s = torch.stack([q[bi, t, h] @ k[bi, u, kvh] / math.sqrt(D) for u in range(t + 1)])
                loop[bi, t, h] = torch.softmax(s, 0) @ v[bi, :t + 1, kvh]
    checks["attention"] = (causal_attention(q, k, v), loop.reshape(B, T, H * D))
    logits = torch.randn(4, 6, 10, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 10, (4, 6), generator=g)
    targets[0, 1] = targets[2, 5] = -1
    checks["cross_entropy"] = (cross_entropy(logits, targets),
                               F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1),
                                               ignore_index=-1))
    failures = []
    for name, (a, b) in checks.items():
        err = (a - b).abs().max().item()
        if not err <= 1e-12:
            failures.append(f"{name}: max |diff| {err:.3g}")
    return failures


def _self_test_gradients():
    """autograd of the whole model against central finite differences, float64, tiny shapes."""
    failures = []
    for family, tied in ((GPT2, True), (LLAMA, False)):
        cfg = Config(family=family, n_layer=2, d_model=8, n_head=4, n_kv_head=2 if family == LLAMA
                     else 4, d_ff=12, vocab_size=11, max_seq_len=6, tied_embeddings=tied)
        model = ReferenceModel(cfg, random_tensors(cfg, seed=2))
        g = torch.Generator().manual_seed(3)
        tokens = torch.randint(0, cfg.vocab_size, (2, 5), generator=g)
        targets = torch.randint(0, cfg.vocab_size, (2, 5), generator=g)
        targets[1, 2] = -1
        model.loss(tokens, targets).backward()
        h = 1e-6
        with torch.no_grad():
            for name, t in model.params.items():
                flat = t.view(-1)
                # every element of small tensors, a spread of elements of the larger ones
                idx = range(flat.numel()) if flat.numel() <= 40 else range(0, flat.numel(), 7)
                worst = 0.0
                for i in idx:
                    old = flat[i].item()
                    flat[i] = old + h
                    up = model.loss(tokens, targets).item()
                    flat[i] = old - h
                    down = model.loss(tokens, targets).item()
                    flat[i] = old
                    worst = max(worst, abs((up - down) / (2 * h) - t.grad.view(-1)[i].item()))
                scale = max(t.grad.abs().max().item(), 1e-3)
                if worst / scale > 1e-6:
                    failures.append(f"{family} {name}: finite-difference gradient off by "
                                    f"{worst:.3g} (tensor's max |grad| {scale:.3g})")
    return failures


def self_test():
    """Returns a list of failure messages (empty: the reference is consistent)."""
    return _self_test_ops() + _self_test_gradients()


if __name__ == "__main__":
    import sys
    problems = self_test()
    for p in problems:
        print("torch_ref self-test FAILED:", p)
    print("torch_ref self-test:", "FAILED" if problems else "ok")
    sys.exit(1 if problems else 0)

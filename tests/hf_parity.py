"""Hugging Face interop checks for nuri (tests/hf_parity.sh runs them), with no transformers.

An independent reader and model: the safetensors files are parsed here byte by byte (struct,
json, numpy.frombuffer), and the model is built from Hugging Face parameter names with Hugging
Face conventions, not nuri's:
  GPT-2   Conv1D weights (in, out): y = x @ W + b; LayerNorm; GELU tanh (gelu_new); learned
          positions; causal attention with q, k, v the thirds of c_attn's output.
  Llama   nn.Linear weights (out, in): y = x @ W^T; RMSNorm x * rsqrt(mean(x^2) + eps) * w;
          rotate_half RoPE with inv_freq = 1 / theta^(arange(0, D, 2) / D); GQA by repeating each
          kv head H/KV times; SwiGLU down(silu(gate(x)) * up(x)).
Everything runs in float64 from the stored values.

    hf_parity.py tokens --out F --batch B --seq T --vocab V
    hf_parity.py check --hf DIR --tokens F --logits F --batch B --seq T [--expect-shards N]
        PyTorch logits of DIR against nuri's (float32 file); also checks the files' layout.
    hf_parity.py make --family gpt2|llama --out DIR [--dtype F32|BF16|F16] [--tied 0|1]
                      [--shards N] [--bare-names] [--drop NAME]
        Random weights with HF names + config.json (+ index when sharded), as transformers writes.
    hf_parity.py compare-models A.bin B.bin
        Two nuri model files: the same config (preset aside) and the same parameters, bit for bit.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

TOLERANCE = 1e-4

# ---- safetensors, by hand ---------------------------------------------------------------------

DTYPES = {"F32": (np.float32, 4), "BF16": (np.uint16, 2), "F16": (np.float16, 2), "I64": (np.int64, 8)}


def read_safetensors(path):
    """({name: float64 numpy array}, data bytes) of a safetensors file; checks the layout strictly."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    assert (8 + n) % 8 == 0, f"{path}: data start {8 + n} is not 8-byte aligned"
    spans = []
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        spans.append((begin, end))
        np_type, size = DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        assert end - begin == size * int(np.prod(shape, dtype=np.int64)), f"{path}: {name} size"
        raw = np.frombuffer(data[begin:end], dtype=np_type)
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float64).reshape(shape)
    spans.sort()
    pos = 0
    for begin, end in spans:
        assert begin == pos, f"{path}: data has a gap or overlap at byte {begin} (expected {pos})"
        pos = end
    assert pos == len(data), f"{path}: {len(data) - pos} bytes after the last tensor"
    return out, len(data)


def to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, numpy array already in that dtype's storage type)."""
    header, chunks, pos = {}, [], 0
    for name, dtype, array in tensors:
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def read_hf_dir(directory, expect_shards=None):
    """(config dict, {name: torch float64 tensor}) of a Hugging Face model directory."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    single = os.path.join(directory, "model.safetensors")
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(single):
        files = [single]
        assert not expect_shards, f"{directory}: expected {expect_shards} shards, found model.safetensors"
    else:
        with open(index_path) as f:
            index = json.load(f)
        files = sorted({os.path.join(directory, v) for v in index["weight_map"].values()})
        if expect_shards:
            assert len(files) == expect_shards, f"{directory}: {len(files)} shards, expected {expect_shards}"
    tensors, total = {}, 0
    for path in files:
        arrays, data_bytes = read_safetensors(path)
        total += data_bytes
        for name, array in arrays.items():
            tensors[name] = torch.from_numpy(array)
    if not os.path.exists(single):
        assert set(index["weight_map"]) == set(tensors), f"{index_path}: weight_map does not match the shards"
        assert index["metadata"]["total_size"] == total, f"{index_path}: total_size"
        for name, file in index["weight_map"].items():
            assert name in read_header_names(os.path.join(directory, file)), f"{name} not in {file}"
    return config, tensors, files


def read_header_names(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return set(json.loads(f.read(n))) - {"__metadata__"}


# ---- the models, from Hugging Face names ----------------------------------------------------

def causal_attention(q, k, v):
    """q (B,T,H,D), k, v (B,T,H,D) -> (B,T,H*D); softmax(q k^T / sqrt(D) + causal mask) v."""
    B, T, H, D = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B,H,T,D)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).reshape(B, T, H * D)


def gpt2_logits(cfg, w, tokens):
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    eps = cfg["layer_norm_epsilon"]
    assert cfg["activation_function"] == "gelu_new"

    def ln(x, p):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def conv1d(x, p):  # HF Conv1D: weight (in, out)
        return x @ w[p + ".weight"] + w[p + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    B, T = tokens.shape
    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][torch.arange(T)]
    for l in range(L):
        p = f"transformer.h.{l}."
        qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (t.reshape(B, T, H, C // H) for t in qkv.split(C, dim=-1))
        x = x + conv1d(causal_attention(q, k, v), p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    head = w["lm_head.weight"] if not cfg.get("tie_word_embeddings", True) else w["transformer.wte.weight"]
    return x @ head.t()


def llama_logits(cfg, w, tokens):
    C, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    KV = cfg.get("num_key_value_heads", H)
    D = C // H
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    assert cfg["hidden_act"] == "silu" and not cfg.get("rope_scaling")

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w[name]

    def lin(x, name):  # nn.Linear: weight (out, in)
        return x @ w[name].t()

    def rotate_half(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat((-x2, x1), dim=-1)

    B, T = tokens.shape
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1,T,1,D)
    x = w["model.embed_tokens.weight"][tokens]
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, p + "input_layernorm.weight")
        q = lin(h, p + "self_attn.q_proj.weight").reshape(B, T, H, D)
        k = lin(h, p + "self_attn.k_proj.weight").reshape(B, T, KV, D)
        v = lin(h, p + "self_attn.v_proj.weight").reshape(B, T, KV, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=2)  # HF repeat_kv: kv head j serves q heads j*n..j*n+n-1
        v = v.repeat_interleave(H // KV, dim=2)
        x = x + lin(causal_attention(q, k, v), p + "self_attn.o_proj.weight")
        h = rms(x, p + "post_attention_layernorm.weight")
        gate, up = lin(h, p + "mlp.gate_proj.weight"), lin(h, p + "mlp.up_proj.weight")
        x = x + lin(gate * torch.sigmoid(gate) * up, p + "mlp.down_proj.weight")
    x = rms(x, "model.norm.weight")
    tied = cfg.get("tie_word_embeddings", False)
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return x @ head.t()


def reference_logits(cfg, w, tokens):
    if cfg["model_type"] == "gpt2":
        w = {("transformer." + k if k.split(".")[0] in ("h", "wte", "wpe", "ln_f") else k): v for k, v in w.items()}
        return gpt2_logits(cfg, w, tokens)
    if cfg["model_type"] == "llama":
        return llama_logits(cfg, w, tokens)
    raise ValueError(f"model_type {cfg['model_type']}")


# ---- commands ---------------------------------------------------------------------------------

def cmd_tokens(a):
    rng = np.random.default_rng(a.seed)
    rng.integers(0, a.vocab, size=a.batch * a.seq, dtype=np.int32).tofile(a.out)


EXPECTED_CONFIG = {
    "gpt2": {"architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new"},
    "llama": {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu"},
}


def cmd_check(a):
    cfg, w, files = read_hf_dir(a.hf, a.expect_shards)
    for key, value in EXPECTED_CONFIG[cfg["model_type"]].items():
        assert cfg.get(key) == value, f"config.json: {key} = {cfg.get(key)!r}, expected {value!r}"
    tokens = torch.from_numpy(np.fromfile(a.tokens, dtype=np.int32).astype(np.int64)).reshape(a.batch, a.seq)
    ref = reference_logits(cfg, w, tokens)
    nuri = torch.from_numpy(np.fromfile(a.logits, dtype=np.float32).astype(np.float64)).reshape(ref.shape)
    diff = (nuri - ref).abs().max().item()
    scale = ref.abs().max().item()
    rel = diff / max(scale, 1e-30)
    ok = diff <= TOLERANCE or rel <= TOLERANCE
    print(f"{a.label or a.hf}: {cfg['model_type']}, {len(w)} tensors in {len(files)} file(s), logits "
          f"{tuple(ref.shape)}: max |nuri - torch| = {diff:.3e}, max |logit| = {scale:.3f}, "
          f"relative {rel:.3e} (tolerance {TOLERANCE:g}) {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def random_hf_weights(family, tied, rng):
    """[(name, float32 array)] with HF names and shapes, and the config.json dict."""
    L, C, H, V, P = 2, 32, 4, 97, 16
    KV, F = (H, 64) if family == "gpt2" else (2, 48)
    D = C // H

    def mat(*shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight():
        return (1.0 + 0.2 * rng.standard_normal(C)).astype(np.float32)

    def bias(n):
        return (0.05 * rng.standard_normal(n)).astype(np.float32)

    out = []
    if family == "gpt2":
        out += [("transformer.wte.weight", mat(V, C, std=0.3)), ("transformer.wpe.weight", mat(P, C, std=0.3))]
        for l in range(L):
            p = f"transformer.h.{l}."
            c_attn = mat(C, 3 * C)
            c_attn[:, : 2 * C] *= 3.0  # q and k: scores O(1), attention far from uniform
            out += [(p + "ln_1.weight", norm_weight()), (p + "ln_1.bias", bias(C)),
                    (p + "attn.c_attn.weight", c_attn), (p + "attn.c_attn.bias", bias(3 * C)),
                    (p + "attn.c_proj.weight", mat(C, C)), (p + "attn.c_proj.bias", bias(C)),
                    (p + "ln_2.weight", norm_weight()), (p + "ln_2.bias", bias(C)),
                    (p + "mlp.c_fc.weight", mat(C, F)), (p + "mlp.c_fc.bias", bias(F)),
                    (p + "mlp.c_proj.weight", mat(F, C)), (p + "mlp.c_proj.bias", bias(C))]
        out += [("transformer.ln_f.weight", norm_weight()), ("transformer.ln_f.bias", bias(C))]
        config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": C, "n_head": H,
                  "n_layer": L, "n_positions": P, "n_inner": F, "vocab_size": V, "layer_norm_epsilon": 1e-5,
                  "activation_function": "gelu_new", "tie_word_embeddings": tied}
    else:
        out.append(("model.embed_tokens.weight", mat(V, C, std=0.3)))
        for l in range(L):
            p = f"model.layers.{l}."
            out += [(p + "input_layernorm.weight", norm_weight()),
                    (p + "self_attn.q_proj.weight", mat(H * D, C, std=0.3)),
                    (p + "self_attn.k_proj.weight", mat(KV * D, C, std=0.3)),
                    (p + "self_attn.v_proj.weight", mat(KV * D, C)),
                    (p + "self_attn.o_proj.weight", mat(C, H * D)),
                    (p + "post_attention_layernorm.weight", norm_weight()),
                    (p + "mlp.gate_proj.weight", mat(F, C)), (p + "mlp.up_proj.weight", mat(F, C)),
                    (p + "mlp.down_proj.weight", mat(C, F))]
        out.append(("model.norm.weight", norm_weight()))
        config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
                  "intermediate_size": F, "num_attention_heads": H, "num_key_value_heads": KV,
                  "num_hidden_layers": L, "max_position_embeddings": P, "vocab_size": V, "rms_norm_eps": 1e-6,
                  "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": tied,
                  "torch_dtype": "float32"}
    if not tied:
        out.append(("lm_head.weight", mat(V, C, std=0.3)))
    return out, config


def cmd_make(a):
    rng = np.random.default_rng(1 if a.family == "gpt2" else 2)
    weights, config = random_hf_weights(a.family, bool(a.tied), rng)
    stored = []
    for name, x in weights:
        if a.dtype == "F32":
            stored.append((name, "F32", x))
        elif a.dtype == "BF16":
            stored.append((name, "BF16", to_bf16_bits(x)))
        else:
            stored.append((name, "F16", x.astype(np.float16)))
    # Buffers transformers may keep, and an unknown tensor of a dtype nuri does not read: ignored.
    T = config.get("n_positions", 16)
    if a.family == "gpt2":
        stored.append(("transformer.h.0.attn.bias", "F32", np.tril(np.ones((1, 1, T, T), np.float32))))
        stored.append(("transformer.h.0.attn.masked_bias", "F32", np.array(-1e4, np.float32)))
    else:
        stored.append(("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", np.ones(4, np.float32)))
    stored.append(("extra.step_counter", "I64", np.array([3, 4], np.int64)))
    if a.bare_names:  # the original GPT-2 checkpoints: no "transformer." prefix
        stored = [(n[len("transformer."):] if n.startswith("transformer.") else n, d, x) for n, d, x in stored]
    if a.drop:
        before = len(stored)
        stored = [s for s in stored if s[0] != a.drop]
        assert len(stored) == before - 1, f"no tensor {a.drop}"
    config["torch_dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "BPE"}, "note": "placeholder copied by nuri import"}, f)
    if a.shards <= 1:
        write_safetensors(os.path.join(a.out, "model.safetensors"), stored)
    else:
        per = math.ceil(len(stored) / a.shards)
        weight_map, total = {}, 0
        for i in range(a.shards):
            name = f"model-{i + 1:05d}-of-{a.shards:05d}.safetensors"
            part = stored[i * per:(i + 1) * per]
            write_safetensors(os.path.join(a.out, name), part)
            for n, _, x in part:
                weight_map[n] = name
                total += x.nbytes
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"wrote {a.out}: {a.family}, {len(stored)} tensors, {a.dtype}, {max(a.shards, 1)} file(s)")
    return 0


def read_nuri_model(path):
    with open(path, "rb") as f:
        blob = f.read()
    assert blob[:8] == b"NURIMDL1", f"{path}: not a nuri model file"
    (n,) = struct.unpack("<Q", blob[8:16])
    config = json.loads(blob[16:16 + n])
    (count,) = struct.unpack("<Q", blob[16 + n:24 + n])
    params = blob[24 + n:24 + n + 4 * count]
    return config, params


def cmd_compare_models(a):
    ca, pa = read_nuri_model(a.a)
    cb, pb = read_nuri_model(a.b)
    ignore = {"preset"} | ({"rope_theta"} if ca.get("family") == "gpt2" else set())  # gpt2 has no RoPE
    keys = sorted((set(ca) | set(cb)) - ignore)
    differ = [k for k in keys if ca.get(k) != cb.get(k)]
    same = pa == pb
    n_diff = int((np.frombuffer(pa, np.uint32) != np.frombuffer(pb, np.uint32)).sum()) if len(pa) == len(pb) else -1
    print(f"round trip {a.a} vs {a.b}: config {'equal' if not differ else 'differs in ' + str(differ)}, "
          f"{len(pa) // 4} parameters {'equal bit for bit' if same else f'DIFFER ({n_diff} elements)'}")
    return 0 if same and not differ else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tokens")
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--seed", type=int, default=5)
    p = sub.add_parser("check")
    p.add_argument("--hf", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--logits", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--expect-shards", type=int, default=0)
    p.add_argument("--label", default="")
    p = sub.add_parser("make")
    p.add_argument("--family", choices=["gpt2", "llama"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["F32", "BF16", "F16"], default="F32")
    p.add_argument("--tied", type=int, default=1)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--bare-names", action="store_true")
    p.add_argument("--drop", default="")
    p = sub.add_parser("compare-models")
    p.add_argument("a")
    p.add_argument("b")
    a = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    handler = {"tokens": cmd_tokens, "check": cmd_check, "make": cmd_make, "compare-models": cmd_compare_models}
    return handler[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())

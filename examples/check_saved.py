#!/usr/bin/env python3
"""Recompute a layer saved by `bin/worker run --save DIR` independently, with numpy only.

Reads DIR/config.json, DIR/weights.safetensors and every DIR/rank*-tokens*.safetensors,
runs the unsharded layer (routing, experts, shared experts, latent transform, routed
scaling) in float64 from the saved parameters, and compares with each rank's saved output.
Usage: examples/check_saved.py DIR [TOL]   (exit 1 on a mismatch)
"""
import glob, json, struct, sys
import numpy as np


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for name, e in head.items():
        if name == "__metadata__":
            continue
        lo, hi = e["data_offsets"]
        raw = data[lo:hi]
        if e["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": "<f4", "F64": "<f8", "I32": "<i4"}[e["dtype"]])
        out[name] = a.reshape(e["shape"]).astype(np.float64)
    return out


def route(logits, c, bias):
    E, K = c["num_experts"], c["num_experts_per_tok"]
    z = logits.astype(np.float32).astype(np.float64)
    fn = c.get("scoring_func", "softmax")
    if fn == "softmax":
        p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    elif fn == "sigmoid":
        p = 1 / (1 + np.exp(-z))
    else:
        p = np.sqrt(np.logaddexp(0, z))
    q = p + bias if bias is not None else p.copy()
    G, g = c.get("n_group", 0), c.get("topk_group", 0)
    if G > 1:
        grp = q.reshape(len(q), G, E // G)
        score = np.sort(grp, 2)[:, :, -2:].sum(2) if bias is not None else grp.max(2)
        keep = np.argsort(-score, 1, kind="stable")[:, :g]
        mask = np.full((len(q), G), -np.inf)
        np.put_along_axis(mask, keep, 0, 1)
        q = q + np.repeat(mask, E // G, 1)
    ids = np.argsort(-q, 1, kind="stable")[:, :K]
    w = np.take_along_axis(p, ids, 1)
    if c.get("norm_topk_prob"):
        w /= np.maximum(w.sum(1, keepdims=True), 1e-20)
    return w, ids


def act(u, name):
    if name == "gelu":
        from math import erf, sqrt
        return 0.5 * u * (1 + np.vectorize(erf)(u / sqrt(2)))
    return u / (1 + np.exp(-u))


def mlp(x, g, u, d, a):
    return (act(x @ g.T, a) * (x @ u.T)) @ d.T


def main():
    d = sys.argv[1]
    tol = float(sys.argv[2]) if len(sys.argv) > 2 else None
    cfg = json.load(open(f"{d}/config.json"))["layer"]
    W = load(f"{d}/weights.safetensors")
    names = ("w1", "w3", "w2") if cfg.get("arch") == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    a = cfg.get("hidden_act", "silu")
    s = cfg.get("routed_scaling_factor") or 1.0
    if tol is None:
        tol = 1e-3 if cfg.get("dtype") == "float32" else (7.6e-2 if max(cfg["hidden_size"], cfg["moe_intermediate_size"]) >= 2048 else 3.5e-2)
    worst, bad = 0.0, 0
    for f in sorted(glob.glob(f"{d}/rank*-tokens*.safetensors")):
        T = load(f)
        x, logits, got = T["hidden_states"], T["router_logits"], T["output"]
        w, ids = route(logits, cfg, W.get("gate.e_score_correction_bias"))
        xr = x @ W["latent_in_proj.weight"].T if "latent_in_proj.weight" in W else x
        fused = np.zeros_like(xr)
        for t in range(len(x)):
            for j in range(ids.shape[1]):
                e = ids[t, j]
                p = f"experts.{e}."
                xin = xr[t] * w[t, j] if cfg.get("apply_router_weight_on_input") else xr[t]
                y = mlp(xin[None], W[p + names[0] + ".weight"], W[p + names[1] + ".weight"], W[p + names[2] + ".weight"], a)[0]
                fused[t] += y if cfg.get("apply_router_weight_on_input") else w[t, j] * y
        out = s * fused
        if "latent_out_proj.weight" in W:
            out = out @ W["latent_out_proj.weight"].T
        if "shared_experts.gate_proj.weight" in W:
            out += mlp(x, W["shared_experts.gate_proj.weight"], W["shared_experts.up_proj.weight"], W["shared_experts.down_proj.weight"], a)
        err = np.abs(got - out)
        worst = max(worst, err.max())
        bad += int((err > tol + tol * np.abs(out)).sum())
        print(f"{f}: {len(x)} rows, max abs err {err.max():.3g}")
    print(f"{'OK' if bad == 0 else 'FAILED'}: max abs err {worst:.3g} (tolerance {tol:.3g}), {bad} elements out of tolerance")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

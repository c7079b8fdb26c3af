"""Fused decode-step ops of the CPU backend: the small ops between the products, one compiled call
each where the reference (`gguflm.ops`) takes several torch ops (6 for an RMSNorm, some 20 for the
QKV split and RoPE), which at decode's one row cost more in dispatch than in arithmetic.

They take and give numpy arrays (fp32, C-contiguous), as the CPU backend's layer loop keeps its
activations. Each works row by row (a row's result never depends on the others: batched decode rows stay equal
to lone ones) and rounds as the reference op does: `qkv_heads` bit for bit (products and sums in
the reference's order, no FMA); the norms differ only in how the mean of squares is summed (here in
fp64), SiLU only in the exp's last bit (libm's expf against torch's vectorized one).
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64

from gguflm.cpu.jit import serial


@serial
def _rmsnorm(x, weight, eps, out):
    """out (T, D) = (x * (1 / sqrt(mean(x^2) + eps))) * weight, row by row."""
    t, dim = x.shape
    for i in range(t):
        s = float64(0.0)
        for j in range(dim):
            s += float64(x[i, j]) * float64(x[i, j])
        r = float32(1.0) / np.sqrt(float32(s / dim) + eps)
        for j in range(dim):
            out[i, j] = (x[i, j] * r) * weight[j]


@serial
def _add_rmsnorm(x, y, weight, eps, out):
    """x += y (the residual, in place), then out = rmsnorm(x) * weight."""
    t, dim = x.shape
    for i in range(t):
        for j in range(dim):
            x[i, j] += y[i, j]
    _rmsnorm(x, weight, eps, out)


@serial
def _qkv_heads(qkv, cos, sin, neox, q, k, v):
    """Split qkv (T, (H + 2 KV) * hd) into q (T, H, hd), k, v (T, KV, hd), q and k rotated by (cos, sin)
    (T, rot / 2): pairs (2i, 2i + 1) ("normal") or (i, i + rot / 2) (neox); dims from rot pass through."""
    t, n_heads, hd = q.shape
    n_kv = k.shape[1]
    half = cos.shape[1]
    for r in range(t):
        for head in range(n_heads + n_kv):
            dst = q[r, head] if head < n_heads else k[r, head - n_heads]
            src = qkv[r, head * hd : (head + 1) * hd]
            for i in range(half):
                c, s = cos[r, i], sin[r, i]
                ia, ib = (i, i + half) if neox else (2 * i, 2 * i + 1)
                a, b = src[ia], src[ib]
                dst[ia] = a * c - b * s
                dst[ib] = b * c + a * s
            for i in range(2 * half, hd):
                dst[i] = src[i]
        at = (n_heads + n_kv) * hd
        for head in range(n_kv):
            for i in range(hd):
                v[r, head, i] = qkv[r, at + head * hd + i]


@serial
def _silu_mul(gate_up, out):
    """out (T, F) = silu(gate) * up, gate_up (T, 2F): x / (1 + exp(-x)) as torch computes SiLU."""
    t, f = out.shape
    for r in range(t):
        for j in range(f):
            g = gate_up[r, j]
            out[r, j] = (g / (float32(1.0) + np.exp(-g))) * gate_up[r, f + j]


@serial
def _attend_cached(q, k, v, kc, vc, layer, positions, scale, out):
    """Store k, v (T, KV, hd) in layer `layer` of the caches kc, vc (L, KV, ctx, hd) at `positions`, then
    row t of q (T, H, hd) attends over cache rows [0, positions[t]]: out (T, H * hd) = sum_j e_j v_j /
    sum_j e_j, e_j = exp(s_j - max s), s_j = (q . k_j) * scale; query head h reads KV head h // (H / KV).
    Each q . k_j is summed in 8 lanes then as a tree, so it vectorizes in a fixed order."""
    t, n_heads, hd = q.shape
    n_kv = k.shape[1]
    group = n_heads // n_kv
    for r in range(t):
        for g in range(n_kv):
            for i in range(hd):
                kc[layer, g, positions[r], i] = k[r, g, i]
                vc[layer, g, positions[r], i] = v[r, g, i]
    scores = np.empty(kc.shape[2], np.float32)
    acc = np.empty(hd, np.float32)
    lanes = np.empty(8, np.float32)
    for r in range(t):
        n = positions[r] + 1
        for head in range(n_heads):
            g = head // group
            best = -np.inf
            for j in range(n):
                lanes[:] = 0
                for i in range(0, hd - hd % 8, 8):
                    for lane in range(8):
                        lanes[lane] += q[r, head, i + lane] * kc[layer, g, j, i + lane]
                s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
                for i in range(hd - hd % 8, hd):
                    s += q[r, head, i] * kc[layer, g, j, i]
                scores[j] = s * scale
                best = max(best, scores[j])
            total = float32(0.0)
            for j in range(n):
                scores[j] = np.exp(scores[j] - best)
                total += scores[j]
            acc[:] = 0
            for j in range(n):
                for i in range(hd):
                    acc[i] += scores[j] * vc[layer, g, j, i]
            for i in range(hd):
                out[r, head * hd + i] = acc[i] / total


def attend_cached(q: np.ndarray, k: np.ndarray, v: np.ndarray, caches: tuple[np.ndarray, np.ndarray], layer: int,
                  positions: np.ndarray) -> np.ndarray:
    """ops.attention of q (T, H, hd) over an fp32 cache (both (L, KV, ctx, hd)) after storing k, v at
    `positions` (T,) int64 in layer `layer`, each query seeing rows up to its own position: (T, H * hd)."""
    t, n_heads, hd = q.shape
    out = np.empty((t, n_heads * hd), dtype=np.float32)
    _attend_cached(q, k, v, *caches, layer, positions, np.float32(1.0 / np.sqrt(hd)), out)
    return out


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
    """out (T, D) = ops.rmsnorm(x, weight, eps); weight fp32 (D,)."""
    _rmsnorm(x, weight, np.float32(eps), out)


def add_rmsnorm(x: np.ndarray, y: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
    """x += y in place (x (T, D) C-contiguous fp32), then out = ops.rmsnorm(x, weight, eps)."""
    _add_rmsnorm(x, y, weight, np.float32(eps), out)


def qkv_heads(qkv: np.ndarray, angles: tuple[np.ndarray, np.ndarray], n_heads: int, n_kv: int, hd: int,
              mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ops.qkv_heads without per-head norms, bit for bit: q (T, n_heads, hd), k and v (T, n_kv, hd);
    angles (cos, sin) (T, rot / 2) each."""
    t = qkv.shape[0]
    q = np.empty((t, n_heads, hd), dtype=np.float32)
    k = np.empty((t, n_kv, hd), dtype=np.float32)
    v = np.empty((t, n_kv, hd), dtype=np.float32)
    _qkv_heads(qkv, *angles, mode == "neox", q, k, v)
    return q, k, v


def silu_mul(gate_up: np.ndarray) -> np.ndarray:
    """ops.silu_mul of a (T, 2F) product -> (T, F)."""
    out = np.empty((gate_up.shape[0], gate_up.shape[1] // 2), dtype=np.float32)
    _silu_mul(gate_up, out)
    return out

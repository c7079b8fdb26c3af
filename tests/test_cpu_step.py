"""The CPU backend's fused decode-step ops (gguflm.cpu.step) against the reference ops they replace, and
its layer loop against the reference backend on llama, qwen2 (QKV bias, neox RoPE) and qwen3 (per-head
q/k norms: the reference loop) tiny models.

Tolerance: the QKV split and RoPE are bit for bit; RMSNorm differs only in how the mean of squares is
summed and SiLU in the exp's last bit, and the decode attention in how its sums are ordered, so all
within REL_OP of the reference (relative to its largest value); whole models' logits within
REL_LOGITS, greedy ids equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gguflm
from gguflm import ops
from gguflm.cpu import step
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

REL_OP = 1e-6
REL_LOGITS = 1e-4


def close(got: torch.Tensor, want: torch.Tensor, rel: float) -> bool:
    return got.shape == want.shape and bool((got - want).abs().max() <= rel * want.abs().max())


@pytest.mark.parametrize("mode", ["normal", "neox"])
@pytest.mark.parametrize("rot_dim", [None, 8])  # the whole head, or a partial rotation (dims 8.. pass through)
@pytest.mark.parametrize("t", [1, 5])
def test_qkv_heads_are_the_reference_bit_for_bit(mode, rot_dim, t):
    rope = ops.Rope(head_dim=16, rot_dim=rot_dim, base=500.0, mode=mode)
    qkv = torch.randn(t, (6 + 2 * 2) * 16, generator=torch.Generator().manual_seed(t)) * 3
    positions = torch.arange(7, 7 + t) * 13
    angles = ops.rope_angles(rope, positions)
    want = ops.qkv_heads(qkv, positions, rope, 6, 2, angles=angles)
    got = step.qkv_heads(qkv.numpy(), tuple(a.numpy() for a in angles), 6, 2, 16, mode)
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.equal(torch.from_numpy(g), w)


@pytest.mark.parametrize("t,dim", [(1, 64), (3, 576), (2, 5)])
def test_norms_and_silu_equal_the_reference(t, dim):
    gen = torch.Generator().manual_seed(dim)
    x, y, weight = torch.randn(t, dim, generator=gen), torch.randn(t, dim, generator=gen), torch.randn(dim, generator=gen)
    out = torch.empty(t, dim)
    step.rmsnorm(x.numpy(), weight.numpy(), 1e-5, out.numpy())
    assert close(out, ops.rmsnorm(x, weight, 1e-5), REL_OP)
    residual = x.clone()
    step.add_rmsnorm(residual.numpy(), y.numpy(), weight.numpy(), 1e-6, out.numpy())
    assert torch.equal(residual, x + y)  # the residual add in place, rounded as the reference's
    assert close(out, ops.rmsnorm(x + y, weight, 1e-6), REL_OP)
    gate_up = torch.randn(t, 2 * dim, generator=gen) * 4
    assert close(torch.from_numpy(step.silu_mul(gate_up.numpy())), ops.silu_mul(gate_up), REL_OP)


@pytest.mark.parametrize("hd,n_heads,n_kv", [(16, 6, 2), (12, 3, 3), (64, 9, 3)])  # 12: a tail past 8 lanes
@pytest.mark.parametrize("pos", [0, 5, 40])
def test_cached_attention_equals_the_reference(hd, n_heads, n_kv, pos):
    """attend_cached stores k, v at the position and attends over the cache up to it, as ops.attention."""
    gen = torch.Generator().manual_seed(pos + hd)
    kc, vc = (torch.randn(2, n_kv, 48, hd, generator=gen) for _ in range(2))  # (L, KV, ctx, hd)
    q, k, v = torch.randn(1, n_heads, hd, generator=gen) * 2, torch.randn(1, n_kv, hd, generator=gen), torch.randn(1, n_kv, hd, generator=gen)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    kc_ref[1, :, pos], vc_ref[1, :, pos] = k[0], v[0]
    want = ops.attention(q, kc_ref[1, :, : pos + 1], vc_ref[1, :, : pos + 1])
    got = step.attend_cached(q.numpy(), k.numpy(), v.numpy(), (kc.numpy(), vc.numpy()), 1, np.array([pos]))
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)  # stored in layer 1 only, at pos only
    assert close(torch.from_numpy(got), want, REL_OP)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_layer_loop_equals_the_reference(arch, tmp_path, monkeypatch):
    calls = []
    fused = step.qkv_heads
    monkeypatch.setattr(step, "qkv_heads", lambda *a: calls.append(1) or fused(*a))
    # F16: products in fp32 (Q8_0's decode rounds x to 8 bits, held to its own rule in test_backend_cpu.py)
    spec = SyntheticSpec(arch=arch, qtype="F16", n_vocab=320, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=96, n_layers=3, seed=8)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    layer = fast.weights.layers[0]
    assert (layer.bqkv is not None) == (arch == "qwen2") and (layer.q_norm is not None) == (arch == "qwen3")
    for n in (1, 3, 20):  # decode, matvec and GEMM paths
        ids = [(7 * i + 1) % 320 for i in range(n)]
        want, got = ref.logits(ids), fast.logits(ids)
        assert close(got, want, REL_LOGITS)
    assert fast.generate([1, 5, 9], 10, stop_ids=()) == ref.generate([1, 5, 9], 10, stop_ids=())
    assert bool(calls) == (arch != "qwen3")  # the fused loop ran, except with per-head norms


def test_qwen3_takes_the_reference_loop(tmp_path, monkeypatch):
    """Per-head q/k norms are not fused: the whole loop is the reference's (no fused op is called)."""
    spec = SyntheticSpec(arch="qwen3", qtype="Q8_0", n_vocab=320, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=96, seed=9)
    fast = gguflm.load(write_synthetic_gguf(tmp_path / "m.gguf", spec), device="cpu", threads=1)

    def refuse(*args, **kwargs):
        raise AssertionError("a fused op ran on a model with per-head norms")

    monkeypatch.setattr(step, "qkv_heads", refuse)
    assert fast.logits([1, 2, 3]).shape == (3, 320)

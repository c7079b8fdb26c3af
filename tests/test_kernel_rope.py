"""RoPE fused with the KV-cache write, against torch references (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import rope_and_cache
from gguflm.ops import Rope as RopeConfig
from kernel_utils import rope_and_cache_ref

TOL = dict(rtol=1e-4, atol=1e-4)


def _independent_rope(x, positions, cfg):
    """Meta-llama complex form for "normal", transformers' rotate_half for "neox"."""
    rot, half = cfg.rot_dim, cfg.rot_dim // 2
    inv = 1.0 / (cfg.base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    if cfg.freq_factors is not None:
        inv = inv / cfg.freq_factors.double().cpu()
    ang = torch.outer(positions.double() / cfg.pos_scale, inv)[:, None, :]    # (M, 1, half)
    xr, xp = x.double().cpu()[..., :rot], x.double().cpu()[..., rot:]
    if cfg.mode == "normal":
        z = torch.view_as_complex(xr.reshape(*xr.shape[:-1], half, 2).contiguous())
        xr = torch.view_as_real(z * torch.polar(torch.ones_like(ang), ang)).flatten(-2)
    else:
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
        xr = xr * cos + torch.cat([-xr[..., half:], xr[..., :half]], -1) * sin
    return torch.cat([xr, xp], -1).float()


CFGS = [dict(mode="normal"), dict(mode="neox"),
        dict(mode="normal", rot_dim=8, base=500000.0, pos_scale=4.0, ff=True),
        dict(mode="neox", rot_dim=8, ff=True)]


def _cfg(hd, mode, rot_dim=None, base=10000.0, pos_scale=1.0, ff=False):
    rot = rot_dim or hd
    factors = None
    if ff:
        factors = (torch.rand(rot // 2, generator=torch.Generator().manual_seed(0)) + 0.5).to(ku.DEVICE)
    return RopeConfig(head_dim=hd, rot_dim=rot_dim, base=base, mode=mode, pos_scale=pos_scale,
                      freq_factors=factors)


@pytest.mark.parametrize("kw", CFGS)
def test_rope_ref_matches_independent_forms(kw):
    cfg = _cfg(16, **kw)
    x, positions = ku.rand(3, 4, 16, seed=1), torch.tensor([0, 5, 1000], device=ku.DEVICE)
    cos, sin = ops.rope_angles(cfg, positions)
    torch.testing.assert_close(ops.rotate(x, cos, sin, cfg.mode).cpu(), _independent_rope(x, positions.cpu(), cfg),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", CFGS)
@pytest.mark.parametrize("m,n_head,n_kv", [(None, 4, 2), (3, 6, 2), (None, 2, 2)])
@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.float32])
def test_rope_and_cache(kw, m, n_head, n_kv, cache_dtype):
    hd, max_ctx = 16, 40
    cfg = _cfg(hd, **kw)
    n = (n_head + 2 * n_kv) * hd
    qkv = ku.rand(*((n,) if m is None else (m, n)), seed=2)
    kc = ku.rand(n_kv, max_ctx, hd, dtype=cache_dtype, seed=3)
    vc = ku.rand(n_kv, max_ctx, hd, dtype=cache_dtype, seed=4)
    pos = torch.tensor([29], dtype=torch.int32, device=ku.DEVICE)
    q_ref, kc_ref, vc_ref = rope_and_cache_ref(qkv, pos, kc, vc, cfg, n_head=n_head)
    q_shape = (n_head, hd) if m is None else (m, n_head, hd)
    q = rope_and_cache(qkv, pos, kc, vc, cfg, n_head=n_head, q_out=ku.poisoned(q_shape))
    torch.testing.assert_close(q, q_ref, **TOL)
    torch.testing.assert_close(kc, kc_ref, **TOL)
    assert torch.equal(vc, vc_ref)
    q_inplace = rope_and_cache(qkv, pos, kc, vc, cfg, n_head=n_head)  # default: q rotated inside qkv
    assert q_inplace.data_ptr() == qkv.data_ptr()
    torch.testing.assert_close(q_inplace, q_ref, **TOL)


@pytest.mark.parametrize("mode", ["normal", "neox"])
def test_rope_and_cache_with_qk_norm(mode):
    hd, n_head, n_kv = 32, 4, 2
    cfg = _cfg(hd, mode, base=1000000.0)
    qkv = ku.rand(2, (n_head + 2 * n_kv) * hd, seed=5)
    qn, kn = ku.rand(hd, seed=6), ku.rand(hd, seed=7)
    kc = ku.rand(n_kv, 9, hd, dtype=torch.bfloat16, seed=8)
    vc = ku.rand(n_kv, 9, hd, dtype=torch.bfloat16, seed=9)
    pos = torch.tensor([3], dtype=torch.int32, device=ku.DEVICE)
    q_ref, kc_ref, vc_ref = rope_and_cache_ref(qkv, pos, kc, vc, cfg, n_head=n_head, q_norm=qn, k_norm=kn)
    q = rope_and_cache(qkv, pos, kc, vc, cfg, n_head=n_head, q_norm=qn, k_norm=kn,
                       q_out=ku.poisoned((2, n_head, hd)))
    torch.testing.assert_close(q, q_ref, **TOL)
    # bf16 caches: one bf16 ulp (the interpreter rounds fp32 -> bf16 toward zero, GPUs to nearest)
    torch.testing.assert_close(kc, kc_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(vc, vc_ref, rtol=8e-3, atol=0)


def test_positions_past_max_ctx_are_not_written():
    hd, n_head, n_kv, max_ctx = 16, 2, 1, 8
    cfg = _cfg(hd, "neox")
    qkv = ku.rand(3, (n_head + 2 * n_kv) * hd, seed=10)
    kc, vc = ku.rand(n_kv, max_ctx, hd, seed=11), ku.rand(n_kv, max_ctx, hd, seed=12)
    kc0, vc0 = kc.clone(), vc.clone()
    pos = torch.tensor([max_ctx - 2], dtype=torch.int32, device=ku.DEVICE)   # token 2 falls off
    rope_and_cache(qkv, pos, kc, vc, cfg, n_head=n_head)
    q_ref, kc_ref, vc_ref = rope_and_cache_ref(qkv[:2], pos, kc0, vc0, cfg, n_head=n_head)
    torch.testing.assert_close(kc, kc_ref, **TOL)
    assert torch.equal(vc, vc_ref)


def test_rope_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        RopeConfig(head_dim=16, mode="gptj")
    with pytest.raises(ValueError, match="rot_dim"):
        RopeConfig(head_dim=16, rot_dim=18)


def _pooled(kind, n_slots, n_kv, max_ctx, hd, seed):
    from gguflm.kv_cache import CacheTensor, cache_type

    layer = CacheTensor.allocate(cache_type(kind), 1, n_kv, max_ctx, hd, ku.DEVICE, n_slots=n_slots).layer(0)
    for s in range(n_slots):
        layer.slot(s).write(torch.arange(max_ctx, device=ku.DEVICE), ku.rand(max_ctx, n_kv, hd, seed=seed + s))
    return layer


@pytest.mark.parametrize("kind", ["f16", "f32", "q8_0", "q4_0"])
@pytest.mark.parametrize("mode", ["normal", "neox"])
def test_rope_and_cache_batch_writes_each_row_at_its_own_slot_and_position(kind, mode):
    """Row b at positions[b] of slot slots[b]: what the one-sequence kernel writes there, and nothing else."""
    hd, n_head, n_kv, max_ctx, n_slots = 32, 4, 2, 12, 5
    cfg = _cfg(hd, mode)
    kc, vc = _pooled(kind, n_slots, n_kv, max_ctx, hd, seed=20), _pooled(kind, n_slots, n_kv, max_ctx, hd, seed=40)
    qkv = ku.rand(3, (n_head + 2 * n_kv) * hd, seed=13)
    positions = torch.tensor([7, 0, 11], dtype=torch.int32, device=ku.DEVICE)
    slots = torch.tensor([3, 0, 4], dtype=torch.int32, device=ku.DEVICE)
    expect_k, expect_v = ku.clone_layer(kc), ku.clone_layer(vc)
    expect_q = []
    for b in range(3):
        one_k, one_v = expect_k.slot(int(slots[b])), expect_v.slot(int(slots[b]))
        expect_q.append(rope_and_cache(qkv[b].clone(), positions[b : b + 1].clone(), one_k, one_v, cfg,
                                       n_head=n_head, q_out=ku.poisoned((n_head, hd))))
    q = rope_and_cache(qkv, positions, kc, vc, cfg, n_head=n_head, q_out=ku.poisoned((3, n_head, hd)), slots=slots)
    assert torch.equal(q, torch.stack(expect_q))
    for got, want in ((kc, expect_k), (vc, expect_v)):
        assert torch.equal(got.data, want.data)
        assert got.scale is None or torch.equal(got.scale, want.scale)


def test_rope_and_cache_batch_checks_its_rows():
    hd, n_head, n_kv = 16, 2, 1
    cfg = _cfg(hd, "neox")
    kc, vc = _pooled("f32", 2, n_kv, 8, hd, seed=1), _pooled("f32", 2, n_kv, 8, hd, seed=2)
    qkv = ku.rand(2, (n_head + 2 * n_kv) * hd, seed=3)
    one = torch.zeros(1, dtype=torch.int32, device=ku.DEVICE)
    with pytest.raises(ValueError, match="pos must"):
        rope_and_cache(qkv, one, kc, vc, cfg, n_head=n_head, slots=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="pooled"):
        rope_and_cache(qkv, one, kc.slot(0), vc.slot(0), cfg, n_head=n_head, slots=one)

"""Flash-decoding attention against its torch reference (interpreter on CPU)."""

import math

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import attention_decode
from kernel_utils import attention_decode_ref

# q and p enter tl.dot in the cache dtype (fp32 caches: full-precision dot, no tf32)
TOL = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float32: dict(rtol=1e-4, atol=1e-4)}


def _caches(n_kv, max_ctx, hd, dtype, valid, seed):
    k = ku.rand(n_kv, max_ctx, hd, dtype=dtype, seed=seed)
    v = ku.rand(n_kv, max_ctx, hd, dtype=dtype, seed=seed + 1)
    k[:, valid:], v[:, valid:] = float("nan"), float("nan")     # rows past the valid length must not leak
    return k, v


def test_ref_matches_explicit_softmax():
    """The reference attention (grouped heads, a causal mask) against the formula written out."""
    q = ku.rand(3, 4, 16, seed=0)  # 3 queries at positions 4, 5, 6
    k, v = _caches(2, 10, 16, torch.float32, 7, seed=1)
    positions = torch.tensor([4, 5, 6], device=ku.DEVICE)
    got = ops.attention(q, k[:, :7], v[:, :7], ops.causal_mask(positions, 7))
    kk, vv = k[:, :7].repeat_interleave(2, 0), v[:, :7].repeat_interleave(2, 0)  # (4, 7, 16)
    scores = torch.einsum("thd,hsd->ths", q, kk) / 4.0
    scores = scores.masked_fill(torch.arange(7)[None, None, :] > positions[:, None, None], float("-inf"))
    expect = torch.einsum("ths,hsd->thd", scores.softmax(-1), vv).reshape(3, 64)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    pos = torch.tensor([6], dtype=torch.int32, device=ku.DEVICE)
    torch.testing.assert_close(attention_decode_ref(q[2], k, v, pos), expect[2].view(4, 16), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("valid", [1, 7, 64, 65, 128, 150])      # 64/128: split boundaries; 150 = max_ctx
@pytest.mark.parametrize("num_splits", [None, 2, 5])               # 5: trailing slices are empty
def test_attention_decode(group, valid, num_splits):
    n_kv, hd, max_ctx = 2, 32, 150
    q = ku.rand(n_kv * group, hd, seed=valid)
    k, v = _caches(n_kv, max_ctx, hd, torch.float16, valid, seed=group)
    pos = torch.tensor([valid - 1], dtype=torch.int32, device=ku.DEVICE)
    out = attention_decode(q, k, v, pos, out=ku.poisoned(q.shape), num_splits=num_splits)
    torch.testing.assert_close(out, attention_decode_ref(q, k, v, pos), **TOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hd", [8, 64, 80])  # 8: narrower than tl.dot's 16 lanes (stories260K)
def test_attention_decode_dtypes_and_head_dims(dtype, hd):
    n_kv, group, max_ctx, valid = 1, 4, 70, 66
    q = ku.rand(n_kv * group, hd, dtype=torch.float16, seed=hd)
    k, v = _caches(n_kv, max_ctx, hd, dtype, valid, seed=3)
    pos = torch.tensor([valid - 1], dtype=torch.int32, device=ku.DEVICE)
    out = attention_decode(q, k, v, pos, out=ku.poisoned(q.shape, torch.float16), sm_scale=0.1)
    torch.testing.assert_close(out, attention_decode_ref(q, k, v, pos, sm_scale=0.1), **TOL[dtype])


def test_same_launch_serves_growing_cache():
    """One set of buffers, the position advanced on the device: as a CUDA graph replays it."""
    n_kv, group, hd, max_ctx = 2, 2, 16, 40
    k = ku.rand(n_kv, max_ctx, hd, dtype=torch.float16, seed=4)
    v = ku.rand(n_kv, max_ctx, hd, dtype=torch.float16, seed=5)
    q, out = ku.rand(n_kv * group, hd, seed=6), ku.poisoned((n_kv * group, hd))
    pos = torch.zeros(1, dtype=torch.int32, device=ku.DEVICE)
    for p in (0, 1, 17, 39):
        pos.fill_(p)
        attention_decode(q, k, v, pos, out=out)
        torch.testing.assert_close(out, attention_decode_ref(q, k, v, pos), **TOL[torch.float16])


def test_default_scale_is_inverse_sqrt_head_dim():
    q = ku.rand(2, 32, seed=7)
    k, v = _caches(1, 8, 32, torch.float16, 8, seed=8)
    pos = torch.tensor([7], dtype=torch.int32, device=ku.DEVICE)
    torch.testing.assert_close(attention_decode(q, k, v, pos),
                               attention_decode(q, k, v, pos, sm_scale=1 / math.sqrt(32)))


@pytest.mark.parametrize("kind", ["f16", "f32", "q8_0", "q4_0"])
def test_attention_decode_batch_rows_read_their_own_slot_and_length(kind):
    """Each row as the one-sequence kernel computes it over its slot, bit for bit; other rows never matter."""
    from gguflm.kv_cache import CacheTensor, cache_type

    n_kv, group, hd, max_ctx, n_slots = 2, 2, 32, 150, 4
    pools = []
    for seed in (1, 2):
        layer = CacheTensor.allocate(cache_type(kind), 1, n_kv, max_ctx, hd, ku.DEVICE, n_slots=n_slots).layer(0)
        for s in range(n_slots):
            layer.slot(s).write(torch.arange(max_ctx, device=ku.DEVICE), ku.rand(max_ctx, n_kv, hd, seed=10 * seed + s))
        pools.append(layer)
    k_pool, v_pool = pools
    q = ku.rand(3, n_kv * group, hd, seed=5)
    positions = torch.tensor([64, 0, 149], dtype=torch.int32, device=ku.DEVICE)
    slots = torch.tensor([2, 2, 0], dtype=torch.int32, device=ku.DEVICE)  # two rows may read one slot
    out = attention_decode(q, k_pool, v_pool, positions, out=ku.poisoned(q.shape), slots=slots)
    for b in range(3):
        s = int(slots[b])
        alone = attention_decode(q[b].clone(), k_pool.slot(s), v_pool.slot(s), positions[b : b + 1].clone())
        assert torch.equal(out[b], alone)
        tol = TOL[torch.float32 if kind == "f32" else torch.float16]
        torch.testing.assert_close(out[b], attention_decode_ref(q[b], k_pool.slot(s), v_pool.slot(s),
                                                                positions[b : b + 1]), **tol)

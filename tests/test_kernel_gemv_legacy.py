"""Decode GEMV over the 4/5-bit 32-block formats against the reference ops (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch
import triton
import triton.language as tl

from gguflm import ops
from gguflm.kernels import GemvConfig, gemv, gemv_config, gemv_silu_mul
from gguflm.kernels.nibbles import block_values
from gguflm.quants.iq4_nl import KVALUES
from gguflm.quants.legacy import unpack_codes

TOL = dict(rtol=1e-4, atol=1e-3)   # fp32 accumulation in both; only the summation order differs
FORMATS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"]


def _ref(x, w, bias=None, residual=None):
    y = ops.linear(x.float().reshape(-1, w.shape[1]), w, bias).reshape(*x.shape[:-1], w.shape[0])
    return y if residual is None else y + residual.float()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k,m,xdtype", [(5, 96, None, torch.float32), (37, 256, 2, torch.float16),
                                          (130, 512, None, torch.bfloat16)])
def test_nibble_gemv(fmt, n, k, m, xdtype):
    """N not a multiple of the tile; K = 32k (96) and 256k."""
    w = ku.block_weight(ku.rand(n, k, seed=n + k), fmt, seed=n)
    x = ku.rand(*((k,) if m is None else (m, k)), dtype=xdtype, seed=k)
    out = ku.poisoned((n,) if m is None else (m, n))
    y = gemv(x, w, out=out)
    assert y is out
    torch.testing.assert_close(y, _ref(x, w), **TOL)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cfg", [GemvConfig(4, 64, 4, 1), GemvConfig(8, 64, 3, 1)])  # even and masked tail
def test_nibble_gemv_split_k_bias_residual(fmt, cfg):
    n, k, m = 37, 256, 2
    w = ku.block_weight(ku.rand(n, k, seed=1), fmt, seed=1)
    x = ku.rand(m, k, seed=2)
    bias, res = ku.rand(n, seed=3), ku.rand(m, n, seed=4)
    y = gemv(x, w, bias=bias, residual=res, out=ku.poisoned((m, n)), config=cfg)
    torch.testing.assert_close(y, _ref(x, w, bias=bias, residual=res), **TOL)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cfg", [None, GemvConfig(2, 32, 2, 1)])
def test_nibble_gemv_silu_mul(fmt, cfg):
    f, k = 21, 96
    w = ku.block_weight(ku.rand(2 * f, k, seed=f), fmt, seed=f)
    x = ku.rand(2, k, scale=0.3, seed=10)
    y = gemv_silu_mul(x, w, out=ku.poisoned((2, f)), config=cfg)
    ref = ops.silu_mul(ops.linear(x, w))
    torch.testing.assert_close(y, ref, **TOL)


def test_nibble_gemv_residual_in_place_and_rows():
    """out may be the residual; an embedding-style row selection of a packed weight still runs."""
    n, k = 50, 128
    w = ku.block_weight(ku.rand(n, k, seed=5), "Q5_1", seed=5)
    x, h = ku.rand(k, seed=6), ku.rand(n, seed=7)
    expect = _ref(x, w, residual=h)
    assert gemv(x, w, residual=h, out=h) is h
    torch.testing.assert_close(h, expect, **TOL)
    some = w.rows(torch.tensor([3, 0, 49], device=ku.DEVICE))
    torch.testing.assert_close(gemv(x, some), _ref(x, some), **TOL)


def test_nibble_gemv_rejects_bad_planes():
    w = ku.block_weight(ku.rand(8, 64, seed=14), "Q4_1")
    with pytest.raises(ValueError, match="m must be"):
        gemv(ku.rand(64), type(w)(w.fmt, (w.parts[0], w.parts[1], w.parts[2].float()), w.k))
    with pytest.raises(ValueError, match="qs must be"):
        gemv(ku.rand(64), type(w)(w.fmt, (w.parts[0].view(torch.int8), *w.parts[1:]), w.k))


@pytest.mark.parametrize("n,k,mats", [(6144, 4096, 1), (14336, 4096, 2), (4096, 14336, 1), (128256, 4096, 1),
                                      (1152, 896, 1), (128, 4096, 1)])
def test_gemv_config_for_nibbles(n, k, mats):
    """Half a byte per weight: the tiles hold the same bytes as Q8_0's, twice the weights."""
    cfg = gemv_config(n, k, 0.5, mats, num_sms=132)
    assert cfg.block_k % 32 == 0 and k % cfg.block_k == 0 and (k // cfg.block_k) % cfg.split_k == 0
    assert -(-n // cfg.block_n) * cfg.split_k >= 2 * 132
    assert 256 <= cfg.block_n * cfg.block_k * mats // 2 <= 8192  # 256: short rows (K = 896), more programs



@triton.jit
def _unpack_kernel(q_ptr, h_ptr, out_ptr, FIFTH: tl.constexpr, NL: tl.constexpr):
    """out (16, 32) fp32: the values of 16 blocks of 16 bytes q (and their fifth-bit words h)."""
    b = tl.arange(0, 16)[:, None]
    j = tl.arange(0, 16)[None, :]
    h = tl.load(h_ptr + b)
    lo, hi = block_values(tl.load(q_ptr + b * 16 + j), h, j, FIFTH, NL)
    tl.store(out_ptr + b * 32 + j, lo)
    tl.store(out_ptr + b * 32 + 16 + j, hi)


def test_unpack_helpers_alone():
    """The register unpacking (kernels/nibbles.py) of every byte and fifth bit against the registry's."""
    qs = torch.arange(256, dtype=torch.uint8).view(1, 256)  # every byte once
    qh = torch.randint(-2**31, 2**31 - 1, (1, 16), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    for fifth, nl in ((False, False), (True, False), (False, True)):
        out = ku.poisoned((16, 32))
        _unpack_kernel[(1,)](qs.to(ku.DEVICE), qh.to(ku.DEVICE), out, FIFTH=fifth, NL=nl)
        codes = unpack_codes(qs, qh if fifth else None).view(16, 32).long()
        expect = torch.tensor(KVALUES, dtype=torch.float32)[codes] if nl else codes.float()
        assert torch.equal(out.cpu(), expect), (fifth, nl)

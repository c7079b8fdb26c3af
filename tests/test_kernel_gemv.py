"""Decode GEMV kernels over Q8_0 and dense packed weights against the reference ops (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import GemvConfig, gemv, gemv_config, gemv_silu_mul

TOL = dict(rtol=1e-4, atol=1e-3)   # fp32 accumulation in both; only the summation order differs


def _weights(n, k, seed):
    return ku.q8_weight(ku.rand(n, k, seed=seed))


def gemv_ref(x, w, *, bias=None, residual=None):
    y = ops.linear(x.float().reshape(-1, w.shape[1]), w, bias).reshape(*x.shape[:-1], w.shape[0])
    return y if residual is None else y + residual.float()


def gemv_silu_mul_ref(x, w):
    return ops.silu_mul(ops.linear(x.float().reshape(-1, w.shape[1]), w)).reshape(*x.shape[:-1], w.shape[0] // 2)


@pytest.mark.parametrize("n,k", [(5, 96), (123, 256), (8, 32)])
def test_q8_layout_matches_gguf(n, k):
    w = ku.rand(n, k, seed=n + k)
    packed = ku.q8_weight(w)
    qs, d = packed.parts
    assert qs.dtype == torch.int8 and d.dtype == torch.float16 and d.shape == (n, k // 32)
    assert torch.equal(qs, ku.quantize_q8_0(w)[0]) and torch.equal(d, ku.quantize_q8_0(w)[1])
    ours = packed.dequantize().cpu()
    assert torch.equal(ours, ku.dequantize_gguf(qs, d))
    # and the unpacking is the right way round: close to the original weights
    assert (ours - w.cpu()).abs().max() <= d.float().abs().max() * 0.51 + 1e-6


@pytest.mark.parametrize("n,k,m,xdtype", [(5, 96, None, torch.float32), (123, 256, None, torch.float16),
                                          (130, 64, None, torch.bfloat16), (5, 96, 3, torch.float16),
                                          (123, 256, 2, torch.float32)])
def test_q8_gemv(n, k, m, xdtype):
    w = _weights(n, k, seed=n * k)
    x = ku.rand(*((k,) if m is None else (m, k)), dtype=xdtype, seed=k)
    out = ku.poisoned((n,) if m is None else (m, n))
    y = gemv(x, w, out=out)
    assert y is out
    torch.testing.assert_close(y, gemv_ref(x, w), **TOL)


@pytest.mark.parametrize("cfg", [GemvConfig(4, 64, 4, 1), GemvConfig(2, 128, 2, 2),
                                 GemvConfig(8, 64, 3, 1)])
def test_q8_gemv_split_k_bias_residual(cfg):
    n, k, m = 37, 256, 2
    w = _weights(n, k, seed=1)
    x = ku.rand(m, k, seed=2)
    bias, res = ku.rand(n, seed=3), ku.rand(m, n, seed=4)
    y = gemv(x, w, bias=bias, residual=res, out=ku.poisoned((m, n)), config=cfg)
    torch.testing.assert_close(y, gemv_ref(x, w, bias=bias, residual=res), **TOL)


def test_q8_gemv_residual_in_place():
    n, k = 123, 96
    w = _weights(n, k, seed=5)
    x, h = ku.rand(k, seed=6), ku.rand(n, seed=7)
    expect = gemv_ref(x, w, residual=h)
    y = gemv(x, w, residual=h, out=h)
    assert y is h
    torch.testing.assert_close(h, expect, **TOL)


def test_q8_gemv_large_n():
    n, k = 4099, 64
    w = _weights(n, k, seed=8)
    x = ku.rand(k, dtype=torch.float16, seed=9)
    y = gemv(x, w, out=ku.poisoned((n,)))
    torch.testing.assert_close(y, gemv_ref(x, w), **TOL)


@pytest.mark.parametrize("f,k", [(5, 96), (61, 128)])
@pytest.mark.parametrize("cfg", [None, GemvConfig(2, 32, 2, 1)])
def test_q8_gemv_silu_mul(f, k, cfg):
    w = _weights(2 * f, k, seed=f)
    x = ku.rand(2, k, scale=0.3, seed=10)
    y = gemv_silu_mul(x, w, out=ku.poisoned((2, f)), config=cfg)
    torch.testing.assert_close(y, gemv_silu_mul_ref(x, w), **TOL)


@pytest.mark.parametrize("wdtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,k", [(5, 96), (123, 160), (8, 16)])  # 16: rows shorter than one 32-wide block
def test_dense_gemv(wdtype, n, k):
    w = ku.dense_weight(ku.rand(n, k, dtype=wdtype, seed=11))
    x = ku.rand(k, seed=12)
    y = gemv(x, w, bias=ku.rand(n, seed=13), out=ku.poisoned((n,)))
    torch.testing.assert_close(y, gemv_ref(x, w, bias=ku.rand(n, seed=13)), **TOL)
    even = w.rows(slice(0, 2 * (n // 2)))
    gu = gemv_silu_mul(x, even)
    torch.testing.assert_close(gu, gemv_silu_mul_ref(x, even), **TOL)


def test_gemv_rejects_bad_input():
    w = _weights(8, 64, seed=14)
    with pytest.raises(ValueError, match="weight must be"):
        gemv(ku.rand(96), w)
    with pytest.raises(ValueError, match="d must be"):
        gemv(ku.rand(64), type(w)(w.fmt, (w.parts[0], w.parts[1].float()), w.k))
    with pytest.raises(ValueError, match="residual"):
        gemv(ku.rand(64), w, residual=ku.rand(9))


# Llama-3-8B and Llama-3.2-1B decode shapes: (N out per matrix, K, matrices per program)
SHAPES = [(6144, 4096, 1), (4096, 4096, 1), (14336, 4096, 2), (4096, 14336, 1), (128256, 4096, 1),
          (3072, 2048, 1), (2048, 2048, 1), (8192, 2048, 2), (2048, 8192, 1), (128256, 2048, 1),
          (1152, 896, 1), (4864, 896, 2), (896, 4864, 1), (128, 4096, 1)]


@pytest.mark.parametrize("n,k,mats", SHAPES)
def test_gemv_config_keeps_sms_busy(n, k, mats):
    cfg = gemv_config(n, k, 1, mats, num_sms=132)
    assert cfg.block_k % 32 == 0 and k % cfg.block_k == 0
    assert (k // cfg.block_k) % cfg.split_k == 0
    programs = -(-n // cfg.block_n) * cfg.split_k
    assert programs >= 2 * 132
    assert cfg.split_k == 1 or n < 4 * 132
    assert 512 <= cfg.block_n * cfg.block_k * mats <= 8192   # 16-32 bytes per thread

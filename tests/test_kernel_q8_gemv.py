"""Q8_0 / dense GEMV kernels against their torch references (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm.kernels import (GemvConfig, dequantize_q8_0_ref, gemv_config, q8_gemv, q8_gemv_ref,
                            q8_gemv_silu_mul, q8_gemv_silu_mul_ref)

TOL = dict(rtol=1e-4, atol=1e-3)   # fp32 accumulation in both; only the summation order differs


def _weights(n, k, seed):
    w = ku.rand(n, k, seed=seed)
    return ku.quantize_q8_0(w)


@pytest.mark.parametrize("n,k", [(5, 96), (123, 256), (8, 32)])
def test_q8_layout_matches_gguf(n, k):
    w = ku.rand(n, k, seed=n + k)
    qs, d = ku.quantize_q8_0(w)
    assert qs.dtype == torch.int8 and d.dtype == torch.float16 and d.shape == (n, k // 32)
    ours = dequantize_q8_0_ref(qs, d).cpu()
    assert torch.equal(ours, ku.dequantize_gguf(qs, d))
    # and the unpacking is the right way round: close to the original weights
    assert (ours - w.cpu()).abs().max() <= d.float().abs().max() * 0.51 + 1e-6


@pytest.mark.parametrize("n,k,m,xdtype", [(5, 96, None, torch.float32), (123, 256, None, torch.float16),
                                          (130, 64, None, torch.bfloat16), (5, 96, 3, torch.float16),
                                          (123, 256, 2, torch.float32)])
def test_q8_gemv(n, k, m, xdtype):
    qs, d = _weights(n, k, seed=n * k)
    x = ku.rand(*((k,) if m is None else (m, k)), dtype=xdtype, seed=k)
    out = ku.poisoned((n,) if m is None else (m, n))
    y = q8_gemv(x, qs, d, out=out)
    assert y is out
    torch.testing.assert_close(y, q8_gemv_ref(x, qs, d), **TOL)


@pytest.mark.parametrize("cfg", [GemvConfig(4, 64, 4, 1), GemvConfig(2, 128, 2, 2),
                                 GemvConfig(8, 64, 3, 1)])
def test_q8_gemv_split_k_bias_residual(cfg):
    n, k, m = 37, 256, 2
    qs, d = _weights(n, k, seed=1)
    x = ku.rand(m, k, seed=2)
    bias, res = ku.rand(n, seed=3), ku.rand(m, n, seed=4)
    y = q8_gemv(x, qs, d, bias=bias, residual=res, out=ku.poisoned((m, n)), config=cfg)
    torch.testing.assert_close(y, q8_gemv_ref(x, qs, d, bias=bias, residual=res), **TOL)


def test_q8_gemv_residual_in_place():
    n, k = 123, 96
    qs, d = _weights(n, k, seed=5)
    x, h = ku.rand(k, seed=6), ku.rand(n, seed=7)
    expect = q8_gemv_ref(x, qs, d, residual=h)
    y = q8_gemv(x, qs, d, residual=h, out=h)
    assert y is h
    torch.testing.assert_close(h, expect, **TOL)


def test_q8_gemv_large_n():
    n, k = 4099, 64
    qs, d = _weights(n, k, seed=8)
    x = ku.rand(k, dtype=torch.float16, seed=9)
    y = q8_gemv(x, qs, d, out=ku.poisoned((n,)))
    torch.testing.assert_close(y, q8_gemv_ref(x, qs, d), **TOL)


@pytest.mark.parametrize("f,k", [(5, 96), (61, 128)])
@pytest.mark.parametrize("cfg", [None, GemvConfig(2, 32, 2, 1)])
def test_q8_gemv_silu_mul(f, k, cfg):
    qs, d = _weights(2 * f, k, seed=f)
    x = ku.rand(2, k, scale=0.3, seed=10)
    y = q8_gemv_silu_mul(x, qs, d, out=ku.poisoned((2, f)), config=cfg)
    torch.testing.assert_close(y, q8_gemv_silu_mul_ref(x, qs, d), **TOL)


@pytest.mark.parametrize("wdtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,k", [(5, 96), (123, 160), (8, 16)])  # 16: rows shorter than one 32-wide block
def test_dense_gemv(wdtype, n, k):
    w = ku.rand(n, k, dtype=wdtype, seed=11)
    x = ku.rand(k, seed=12)
    y = q8_gemv(x, w, None, bias=ku.rand(n, seed=13), out=ku.poisoned((n,)))
    torch.testing.assert_close(y, q8_gemv_ref(x, w, None, bias=ku.rand(n, seed=13)), **TOL)
    gu = q8_gemv_silu_mul(x, w[: 2 * (n // 2)], None)
    torch.testing.assert_close(gu, q8_gemv_silu_mul_ref(x, w[: 2 * (n // 2)], None), **TOL)


def test_gemv_rejects_bad_input():
    qs, d = _weights(8, 64, seed=14)
    with pytest.raises(ValueError, match="weight must be"):
        q8_gemv(ku.rand(96), qs, d)
    with pytest.raises(ValueError, match="d must be"):
        q8_gemv(ku.rand(64), qs, d.float())
    with pytest.raises(ValueError, match="residual"):
        q8_gemv(ku.rand(64), qs, d, residual=ku.rand(9))


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

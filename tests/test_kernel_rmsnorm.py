"""RMSNorm (fused residual add) and per-head RMSNorm against torch (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm.kernels import rmsnorm, rmsnorm_heads, rmsnorm_heads_ref, rmsnorm_ref

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def test_ref_matches_torch_rms_norm():
    x, w = ku.rand(3, 96, seed=0), ku.rand(96, seed=1)
    expect = torch.nn.functional.rms_norm(x, (96,), w, eps=1e-6)
    torch.testing.assert_close(rmsnorm_ref(x, w, 1e-6)[0], expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5,), (96,), (3, 123), (2, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rmsnorm(shape, dtype):
    x, w = ku.rand(*shape, dtype=dtype, seed=2), ku.rand(shape[-1], seed=3)
    out, h = rmsnorm(x, w, 1e-5, out=ku.poisoned(shape, dtype))
    assert h is x
    torch.testing.assert_close(out, rmsnorm_ref(x, w, 1e-5)[0], **TOL[dtype])


@pytest.mark.parametrize("shape", [(123,), (3, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rmsnorm_residual(shape, dtype):
    x, w = ku.rand(*shape, dtype=dtype, seed=4), ku.rand(shape[-1], dtype=dtype, seed=5)
    res = ku.rand(*shape, seed=6)                       # fp32 residual stream
    ref_out, ref_h = rmsnorm_ref(x, w, 1e-6, res)
    out, h = rmsnorm(x, w, 1e-6, res, out=ku.poisoned(shape, dtype),
                     residual_out=ku.poisoned(shape))
    torch.testing.assert_close(h, ref_h, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    out2, h2 = rmsnorm(x, w, 1e-6, res, residual_out=res)   # in-place residual update
    assert h2 is res
    torch.testing.assert_close(res, ref_h, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out2, ref_out, **TOL[dtype])


@pytest.mark.parametrize("m,heads,hd", [(1, 5, 16), (3, 4, 128)])
def test_rmsnorm_heads_in_fused_buffer(m, heads, hd):
    qkv = ku.rand(m, (heads + 6) * hd, seed=7)          # q heads then other heads
    q = qkv[:, : heads * hd].view(m, heads, hd)        # strided when m > 1
    w = ku.rand(hd, seed=8)
    expect = rmsnorm_heads_ref(q, w, 1e-6)
    rest = qkv[:, heads * hd:].clone()
    torch.testing.assert_close(rmsnorm_heads(q, w, 1e-6, out=ku.poisoned(q.shape)), expect,
                               rtol=1e-5, atol=1e-5)
    rmsnorm_heads(q, w, 1e-6, out=q)                    # in place inside the buffer
    torch.testing.assert_close(q, expect, rtol=1e-5, atol=1e-5)
    assert torch.equal(qkv[:, heads * hd:], rest)
    two_d = rmsnorm_heads(q[0], w, 1e-6)
    assert two_d.shape == (heads, hd)


def test_rmsnorm_rejects_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(ku.rand(96), ku.rand(95), 1e-6)

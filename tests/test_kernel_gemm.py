"""Prefill GEMM against the reference op (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import gemm, q8_gemm

# relative to the largest output: W is rounded to x's dtype before tl.dot, then the output is
REL = {torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("m,n,k", [(5, 123, 96), (33, 40, 256), (1, 5, 64), (130, 130, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_q8_gemm(m, n, k, dtype):
    w = ku.q8_weight(ku.rand(n, k, seed=n))
    x = ku.rand(m, k, dtype=dtype, seed=m)
    y = q8_gemm(x, *w.parts, out=ku.poisoned((m, n), dtype))
    ref = ops.linear(x, w)
    assert y.dtype == dtype and not y.isnan().any()
    assert (y.float() - ref).abs().max() <= REL[dtype] * ref.abs().max()
    # the format-dispatching launcher: fp32 in, fp32 out, the same tensor-core math inside
    y32 = gemm(x.float(), w, dtype)
    assert y32.dtype == torch.float32 and (y32 - ref).abs().max() <= REL[dtype] * ref.abs().max()


def test_dense_gemm_multiplies_in_the_weights_dtype():
    w = ku.dense_weight(ku.rand(7, 64, seed=1))  # F32: no rounding of x to the activation dtype
    x = ku.rand(3, 64, seed=2)
    torch.testing.assert_close(gemm(x, w, torch.float16), ops.linear(x, w), rtol=1e-5, atol=1e-5)


def test_q8_gemm_rejects_fp32_x():
    w = ku.q8_weight(ku.rand(8, 64, seed=0))
    with pytest.raises(ValueError, match="fp16/bf16"):
        q8_gemm(ku.rand(2, 64), *w.parts)

"""Prefill GEMM over the 4/5-bit 32-block formats against the reference op (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import gemm, nibble_gemm

# relative to the largest output: W is rounded to x's dtype before tl.dot, then the output is
REL = {torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"])
@pytest.mark.parametrize("m,n,k,dtype", [(5, 37, 96, torch.float16), (17, 20, 256, torch.bfloat16),
                                         (1, 5, 64, torch.float16)])
def test_nibble_gemm(fmt, m, n, k, dtype):
    w = ku.block_weight(ku.rand(n, k, seed=n), fmt, seed=n)
    x = ku.rand(m, k, dtype=dtype, seed=m)
    y = nibble_gemm(x, w, out=ku.poisoned((m, n), dtype))
    ref = ops.linear(x, w)
    assert y.dtype == dtype and not y.isnan().any()
    assert (y.float() - ref).abs().max() <= REL[dtype] * ref.abs().max()
    y32 = gemm(x.float(), w, dtype)  # the format-dispatching launcher: fp32 in, fp32 out
    assert y32.dtype == torch.float32 and (y32 - ref).abs().max() <= REL[dtype] * ref.abs().max()


def test_nibble_gemm_rejects_fp32_x():
    w = ku.block_weight(ku.rand(8, 64, seed=0), "Q4_0")
    with pytest.raises(ValueError, match="fp16/bf16"):
        nibble_gemm(ku.rand(2, 64), w)

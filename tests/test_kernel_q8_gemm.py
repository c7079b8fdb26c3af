"""Prefill Q8_0 GEMM against its torch reference (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm.kernels import q8_gemm, q8_gemm_ref

# relative to the largest output: W is rounded to x's dtype before tl.dot, then the output is
REL = {torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("m,n,k", [(5, 123, 96), (33, 40, 256), (1, 5, 64), (130, 130, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_q8_gemm(m, n, k, dtype):
    qs, d = ku.quantize_q8_0(ku.rand(n, k, seed=n))
    x = ku.rand(m, k, dtype=dtype, seed=m)
    y = q8_gemm(x, qs, d, out=ku.poisoned((m, n), dtype))
    ref = q8_gemm_ref(x, qs, d).float()
    assert y.dtype == dtype and not y.isnan().any()
    assert (y.float() - ref).abs().max() <= REL[dtype] * ref.abs().max()


def test_q8_gemm_rejects_fp32_x():
    qs, d = ku.quantize_q8_0(ku.rand(8, 64, seed=0))
    with pytest.raises(ValueError, match="fp16/bf16"):
        q8_gemm(ku.rand(2, 64), qs, d)

"""RMSNorm against the reference op (interpreter on CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

from gguflm import ops
from gguflm.kernels import rmsnorm

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def test_ref_matches_torch_rms_norm():
    x, w = ku.rand(3, 96, seed=0), ku.rand(96, seed=1)
    expect = torch.nn.functional.rms_norm(x, (96,), w, eps=1e-6)
    torch.testing.assert_close(ops.rmsnorm(x, w, 1e-6), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5,), (96,), (3, 123), (2, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rmsnorm(shape, dtype):
    x, w = ku.rand(*shape, dtype=dtype, seed=2), ku.rand(shape[-1], seed=3)
    out = rmsnorm(x, w, 1e-5, out=ku.poisoned(shape, dtype))
    torch.testing.assert_close(out, ops.rmsnorm(x, w, 1e-5).to(dtype), **TOL[dtype])


def test_rmsnorm_rows_of_a_wider_buffer():
    buf = ku.rand(3, 200, seed=4)
    x, w = buf[:, :96], ku.rand(96, seed=5)  # row stride 200
    torch.testing.assert_close(rmsnorm(x, w, 1e-6, out=ku.poisoned((3, 96))), ops.rmsnorm(x, w, 1e-6),
                               **TOL[torch.float32])


def test_rmsnorm_rejects_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(ku.rand(96), ku.rand(95), 1e-6)

"""GEMV, dequantization and prefill kernels of the superblock formats against the reference ops
(interpreter on the CPU), mixed-format stacked weights, and the Triton backend on a Q4_K_M file."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import ops, quants
from gguflm.kernels import GemvConfig, gemm, gemv, gemv_silu_mul, supports
from gguflm.kernels import gemm_kquants
from gguflm.quants import StackedWeight
from gguflm.synthetic import SyntheticSpec, kblocks, write_synthetic_gguf

QT = gguf.GGMLQuantizationType
KQUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")
TOL = dict(rtol=1e-4, atol=1e-4)  # fp32 accumulation in both; only the summation order differs


def _weight(name, n, k, seed):
    raw = kblocks.random_blocks(np.random.default_rng(seed), n, k, QT[name])
    return quants.pack(torch.from_numpy(raw).to(ku.DEVICE), QT[name])


def _ref(x, w, bias=None, residual=None):
    y = ops.linear(x.float().reshape(-1, w.shape[1]), w, bias).reshape(*x.shape[:-1], w.shape[0])
    return y if residual is None else y + residual.float()


@pytest.mark.parametrize("name", KQUANTS)
def test_gemv_odd_rows_every_epilogue(name):
    n, k = 37, 768  # N not a multiple of the tile; three superblocks (one per step)
    w = _weight(name, n, k, seed=1)
    assert supports(w.fmt)
    x = ku.rand(k, seed=2)
    torch.testing.assert_close(gemv(x, w, out=ku.poisoned((n,))), _ref(x, w), **TOL)
    xm, bias, res = ku.rand(2, k, dtype=torch.float16, seed=3), ku.rand(n, seed=4), ku.rand(2, n, seed=5)
    expect = _ref(xm, w, bias=bias, residual=res)
    torch.testing.assert_close(gemv(xm, w, bias=bias, residual=res, out=res), expect, **TOL)  # in place


@pytest.mark.parametrize("name", KQUANTS)
def test_gemv_split_k_and_gate_up(name):
    f, k = 19, 1024
    w = _weight(name, 2 * f, k, seed=6)
    x = ku.rand(3, k, seed=7)
    cfg = GemvConfig(block_n=8, block_k=512, split_k=2, num_warps=1)  # two superblocks a step, two K halves
    torch.testing.assert_close(gemv(x, w, config=cfg), _ref(x, w), **TOL)
    expect = ops.silu_mul(_ref(x, w))
    torch.testing.assert_close(gemv_silu_mul(x, w, out=ku.poisoned((3, f))), expect, **TOL)
    torch.testing.assert_close(gemv_silu_mul(x, w, config=cfg), expect, **TOL)
    again = gemv_silu_mul(x, w, config=cfg)
    assert torch.equal(again, gemv_silu_mul(x, w, config=cfg))  # deterministic


def test_gemv_rejects_a_split_that_does_not_tile_k():
    w = _weight("Q4_K", 8, 768, seed=8)
    with pytest.raises(ValueError, match="must tile K"):
        gemv(ku.rand(768), w, config=GemvConfig(8, 512, 1, 1))


@pytest.mark.parametrize("name", KQUANTS)
def test_dequantize_kernel_bit_exact_and_prefill(name):
    w = _weight(name, 21, 512, seed=9)
    ours = gemm_kquants.dequantize(w, torch.float32)
    if ku.DEVICE == "cpu":  # the interpreter rounds s*q - m as torch does; a GPU may fuse it into one FMA
        assert torch.equal(ours, w.dequantize()) and torch.equal(gemm_kquants.dequantize(w, torch.float16),
                                                                  w.dequantize().half())
    torch.testing.assert_close(ours, w.dequantize(), rtol=1e-6, atol=1e-7)
    x = ku.rand(5, 512, seed=10)
    torch.testing.assert_close(gemm(x, w, torch.float16), _ref(x, w), **TOL)


def test_stacked_weight_one_launch_per_piece():
    q4, q6 = _weight("Q4_K", 24, 512, seed=11), _weight("Q6_K", 9, 512, seed=12)
    w = StackedWeight((q4, q6))
    x, bias, res = ku.rand(2, 512, seed=13), ku.rand(33, seed=14), ku.rand(2, 33, seed=15)
    expect = _ref(x, w, bias=bias, residual=res)
    torch.testing.assert_close(expect, torch.cat([_ref(x, q4), _ref(x, q6)], -1) + bias + res, **TOL)
    torch.testing.assert_close(gemv(x, w, bias=bias, residual=res, out=ku.poisoned((2, 33))), expect, **TOL)
    torch.testing.assert_close(gemm(x, w, torch.float16), _ref(x, w), **TOL)
    gate_up = StackedWeight((_weight("Q4_K", 10, 512, seed=16), _weight("Q6_K", 10, 512, seed=17)))
    torch.testing.assert_close(gemv_silu_mul(x[0], gate_up), ops.silu_mul(_ref(x[0], gate_up)), **TOL)


def test_triton_backend_runs_a_q4_k_m_file_like_the_reference(tmp_path):
    spec = SyntheticSpec(qtype="Q4_K_M", dim=256, n_layers=2, n_vocab=64, ffn_dim=512, n_heads=4, n_kv_heads=2,
                         seed=3)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref = gguflm.load(path, device="cpu", backend="reference").backend
    tri = gguflm.load(path, device=ku.DEVICE, backend="triton").backend
    assert isinstance(tri.weights.layers[1].wqkv, StackedWeight)  # the last layer's V is Q6_K
    prompt = [1, 5, 9, 33]
    rc, tc = ref.new_cache(8), tri.new_cache(8)
    expect, got = ref.prefill(prompt, rc), tri.prefill(prompt, tc)
    torch.testing.assert_close(got.cpu(), expect, atol=5e-3, rtol=0)  # fp16 GEMM inputs and cache
    token = int(expect[-1].argmax())
    for _ in range(2):
        r, t = ref.decode(token, rc), tri.decode(token, tc)
        torch.testing.assert_close(t.cpu(), r, atol=5e-3, rtol=0)
        assert int(t.argmax()) == int(r.argmax())
        token = int(r.argmax())

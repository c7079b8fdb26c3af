"""The CPU kernels of Q2_K, Q3_K, IQ4_NL and IQ4_XS against the reference (the oracle): `expand` bit for bit
the reference dequantizer (and gguf-py's), the matvec against the float64 product, on blocks the repo's
quantizers make and on random bytes; and a tiny model of each format, logits and greedy ids as the
reference backend gives them.

Tolerances are test_backend_cpu's: all four round x to 8 bits per 32 values (INT8: the rounded-x
oracle, llama.cpp's NMSE rule, the near-tie rule for greedy ids).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import cpu, quants
from gguflm.quantize.blocks import quantize_rows
from gguflm.synthetic import RANDOM_BLOCKS, SyntheticSpec, kblocks, write_synthetic_gguf
from int8_rule import NMSE, REL_PRODUCT, assert_greedy_ids_equal_the_reference, int8_oracle, logits_close, nmse

QT = gguf.GGMLQuantizationType
FORMATS = ["Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"]
INT8 = ["Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS"]  # their matvecs round x
SHAPES = {"Q2_K": [(5, 256), (37, 512)], "Q3_K": [(5, 256), (37, 512)], "IQ4_XS": [(5, 256), (37, 512)],
          "IQ4_NL": [(5, 32), (37, 64), (5, 256), (37, 512)]}
CASES = [(q, n, k) for q in FORMATS for n, k in SHAPES[q]]


def raw_blocks(qtype: str, n: int, k: int, source: str, seed: int) -> np.ndarray:
    """(n, row bytes) uint8 of `qtype`: the repo's quantizer on Gaussian rows, or random bytes with sane
    fp16 scales (every quant bit and packed scale byte uniform), their signs random."""
    rng = np.random.default_rng(seed)
    if source == "quantized":
        return quantize_rows(rng.standard_normal((n, k), dtype=np.float32), QT[qtype])
    if qtype == "IQ4_NL":
        raw = RANDOM_BLOCKS["IQ4_NL"](rng, n, k).reshape(n, -1)
    else:
        raw = kblocks.random_blocks(rng, n, k, QT[qtype])
    block, size = gguf.GGML_QUANT_SIZES[QT[qtype]]
    blocks = raw.reshape(n, k // block, size)
    at = {"Q2_K": (81, 83), "Q3_K": (109,), "IQ4_NL": (1,), "IQ4_XS": (1,)}[qtype]  # fp16 high bytes of d (dmin)
    for byte in at:
        blocks[:, :, byte] ^= rng.integers(0, 2, size=blocks.shape[:2], dtype=np.uint8) << 7
    return np.ascontiguousarray(raw)


def packed(qtype: str, n: int, k: int, source: str, seed: int = 0) -> quants.PackedWeight:
    return quants.pack(torch.from_numpy(raw_blocks(qtype, n, k, source, seed)), QT[qtype])


# ---------------------------------------------------------------------------- the kernels


@pytest.mark.parametrize("source", ["quantized", "random"])
@pytest.mark.parametrize("qtype,n,k", CASES)
def test_expand_is_the_reference_dequantizer_bit_for_bit(qtype, n, k, source):
    raw = raw_blocks(qtype, n, k, source, seed=n + k)
    w = quants.pack(torch.from_numpy(raw), QT[qtype])
    kern = cpu.kernel_for(w)
    assert kern is not None and kern.name == qtype.lower()
    got = torch.full((n, k), float("nan"))
    kern.expand(cpu.planes_of(kern, w.parts), got)
    assert torch.equal(got, w.dequantize())
    assert np.array_equal(got.numpy(), gguf.quants.dequantize(raw, QT[qtype]).reshape(n, k))  # gguf-py's too


@pytest.mark.parametrize("source", ["quantized", "random"])
@pytest.mark.parametrize("qtype,n,k", CASES)
@pytest.mark.parametrize("rows", [1, 3, 9])  # 9 >= GEMM_ROWS: the GEMM path
def test_product_equals_the_dequantized_one(qtype, n, k, rows, source):
    w = packed(qtype, n, k, source, seed=n + k + rows)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
    bias = torch.randn(n)
    exact = x.double() @ w.dequantize().double().T
    want = (int8_oracle(x, w) if qtype in INT8 else exact).float() + bias
    got = cpu.linear(x, w, bias, n_threads=2)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    assert (got - want).abs().max() <= REL_PRODUCT * want.abs().max()
    if qtype in INT8 and source == "quantized":  # llama.cpp's rule is for weights its quantizer made
        assert 0 < nmse(got - bias, exact) <= NMSE


@pytest.mark.parametrize("qtype", FORMATS)
def test_rows_are_computed_as_if_alone_on_any_thread_count(qtype):
    w = packed(qtype, 37, 512, "random")
    x = torch.randn(11, 512, generator=torch.Generator().manual_seed(1))
    together = cpu.linear_rows(x, w, n_threads=2)
    for b in range(x.shape[0]):
        assert torch.equal(together[b], cpu.linear(x[b : b + 1], w, n_threads=1)[0])
    big = packed(qtype, 1601, 512, "random")  # over PARALLEL_BYTES: the matvec splits at 2 threads
    assert big.nbytes >= cpu.PARALLEL_BYTES
    assert torch.equal(cpu.linear(x[:3], big, n_threads=2), cpu.linear_rows(x[:3], big, n_threads=1))


@pytest.mark.parametrize("qtype", ["IQ4_NL", "IQ4_XS"])
def test_iq4_codes_expand_to_ggml_levels(qtype):
    """Every code of a block with scale 1 expands to its level in ggml's table (gguf-py's copy)."""
    block, size = gguf.GGML_QUANT_SIZES[QT[qtype]]
    raw = np.zeros((1, size), np.uint8)
    raw[0, :2] = np.array([1.0], np.float16).view(np.uint8)
    codes = np.arange(block) % 16
    if qtype == "IQ4_NL":  # byte j: code j low, j + 16 high
        raw[0, 2:] = codes[:16] | (codes[16:] << 4)
    else:  # ls - 32 = 1 in every sub-block: scales_l nibbles 1, scales_h 2 (bits 32 >> 4) per sub-block
        raw[0, 2:4] = np.array([0xAAAA], np.uint16).view(np.uint8)
        raw[0, 4:8] = 0x11
        sub = codes.reshape(8, 32)
        raw[0, 8:] = (sub[:, :16] | (sub[:, 16:] << 4)).reshape(-1)
    w = quants.pack(torch.from_numpy(raw), QT[qtype])
    got = torch.empty(1, block)
    kern = cpu.kernel_for(w)
    kern.expand(cpu.planes_of(kern, w.parts), got)
    levels = np.array(gguf.quants.IQ4_NL.kvalues, np.float32)
    assert np.array_equal(got.numpy()[0], levels[codes])


# ---------------------------------------------------------------------------- whole models


@pytest.fixture(scope="module", params=FORMATS)
def pair(request, tmp_path_factory):
    """A tiny model with every matrix in one format (256-wide rows for the superblock formats)."""
    width = dict(dim=64, ffn_dim=96) if request.param == "IQ4_NL" else dict(dim=256, ffn_dim=512)
    spec = SyntheticSpec(qtype=request.param, n_vocab=320, n_heads=4, n_kv_heads=2, n_layers=2, seed=6, **width)
    path = write_synthetic_gguf(tmp_path_factory.mktemp("cpu") / "m.gguf", spec)
    return gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)


def test_every_matrix_runs_on_its_kernel(pair, request):
    _, fast = pair
    qtype = request.node.callspec.params["pair"]
    matrices = [w for _, w in fast.weights.tensors() if isinstance(w, quants.PackedWeight) and len(w.shape) == 2
                and w.fmt.block_size > 1]
    assert matrices and {w.fmt.name for w in matrices} == {qtype}
    assert all(cpu.kernel_for(w) is not None for w in matrices)


@pytest.mark.parametrize("n", [3, 20])  # matvec and GEMM paths
def test_logits_equal_the_reference(pair, n):
    ref, fast = pair
    ids = [(7 * i + 1) % 320 for i in range(n)]
    want, got = ref.logits(ids), fast.logits(ids)
    assert logits_close(got, want, int8=cpu.prepared(fast.weights.output)[0].rounds_x)


def test_greedy_ids_equal_the_reference(pair):
    ref, fast = pair
    assert_greedy_ids_equal_the_reference(ref, fast, 12, int8=cpu.prepared(fast.weights.output)[0].rounds_x)

"""The quant registry: block sizes from gguf, repacking and dequantization bit-exact against gguf.quants
(random blocks and every Q4_1 tensor of a real model)."""

import gguf
import numpy as np
import pytest
import torch

from gguflm import quants
from gguflm.errors import GGUFLMError

QT = gguf.GGMLQuantizationType


def test_registry_members_take_their_sizes_from_gguf():
    assert quants.supported() == ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")
    for name in quants.supported():
        fmt = quants.get(QT[name])
        assert (fmt.block_size, fmt.type_size) == gguf.GGML_QUANT_SIZES[QT[name]]
    with pytest.raises(GGUFLMError, match="tensor 'w' has type IQ2_XXS, which is not supported"):
        quants.get(QT.IQ2_XXS, "w")


@pytest.mark.parametrize("shape", [(1, 32), (5, 96), (123, 64), (7, 4096)])
def test_q8_0_dequantize_bit_exact(shape):
    rng = np.random.default_rng(sum(shape))
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    raw = gguf.quants.quantize(w, QT.Q8_0)  # (N, K/32 * 34) uint8
    packed = quants.pack(torch.from_numpy(raw), QT.Q8_0)
    qs, d = packed.parts
    assert packed.shape == shape and packed.nbytes == raw.nbytes
    assert qs.dtype == torch.int8 and qs.shape == shape
    assert d.dtype == torch.float16 and d.shape == (shape[0], shape[1] // 32)
    expected = gguf.quants.dequantize(raw, QT.Q8_0)
    assert np.array_equal(packed.dequantize().numpy(), expected)
    assert np.array_equal(packed.rows(slice(1, None)).dequantize().numpy(), expected[1:])


def test_q8_0_layout_scale_then_values():
    """Block bytes are a fp16 scale then 32 int8 values; the repack puts them where kernels expect."""
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(3, 2 * 34), dtype=np.uint8)
    raw.reshape(3, 2, 34)[:, :, :2] = np.array([0.5], dtype=np.float16).view(np.uint8)  # finite scales
    qs, d = quants.pack(torch.from_numpy(raw), QT.Q8_0).parts
    assert np.array_equal(qs[1, 32:64].numpy(), raw[1, 36:68].view(np.int8))
    assert float(d[2, 1]) == 0.5


@pytest.mark.parametrize("name,dtype", [("F32", np.float32), ("F16", np.float16)])
def test_dense_formats_reinterpret_the_file_bytes(name, dtype):
    w = np.random.default_rng(2).standard_normal((3, 8)).astype(dtype)
    packed = quants.pack(torch.from_numpy(w.view(np.uint8).copy()), QT[name])
    assert np.array_equal(packed.parts[0].numpy(), w) and packed.fmt.kernel == "dense"


BLOCK32 = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"]
PLANES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 3, "Q5_1": 4, "IQ4_NL": 2}  # qs, d [, m] [, qh]


def _random_rows(qtype, shape, rng):
    """Random valid file rows: arbitrary nibble and fifth-bit bytes, finite fp16 scales and minimums
    of either sign and wide range (every bit pattern of the quants is reached)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_floats = 2 if qtype in (QT.Q4_1, QT.Q5_1) else 1
    raw = rng.integers(0, 256, size=(shape[0], shape[1] // block, size), dtype=np.uint8)
    floats = rng.standard_normal((shape[0], shape[1] // block, n_floats)) * 10.0 ** rng.integers(-4, 3, (1, 1, n_floats))
    raw[:, :, : 2 * n_floats] = floats.astype(np.float16).view(np.uint8)
    return raw.reshape(shape[0], -1)


@pytest.mark.parametrize("name", BLOCK32)
@pytest.mark.parametrize("shape", [(1, 32), (5, 96), (123, 64), (7, 4096)])
def test_block32_dequantize_bit_exact(name, shape):
    qtype = QT[name]
    rng = np.random.default_rng(sum(shape))
    raws = [_random_rows(qtype, shape, rng)]
    if name != "IQ4_NL":  # gguf-py has no IQ4_NL quantizer
        w = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
        raws.append(np.ascontiguousarray(gguf.quants.quantize(w, qtype)))
    for raw in raws:
        packed = quants.pack(torch.from_numpy(raw), qtype)
        assert packed.shape == shape and packed.nbytes == raw.nbytes  # no more bytes per weight than the file
        assert len(packed.parts) == PLANES[name] and packed.parts[0].shape == (shape[0], shape[1] // 2)
        expected = gguf.quants.dequantize(raw, qtype)
        assert np.array_equal(packed.dequantize().numpy(), expected)
        assert np.array_equal(packed.rows(torch.tensor([shape[0] - 1, 0])).dequantize().numpy(),
                              expected[[shape[0] - 1, 0]])
        assert packed.dequantize(torch.float16).dtype == torch.float16


def test_q5_1_layout_planes():
    """A Q5_1 block is d, m, 4 bytes of fifth bits, 16 nibble bytes; the repack puts each in its plane."""
    raw = np.zeros((2, 2 * 24), dtype=np.uint8)
    blocks = raw.reshape(2, 2, 24)
    blocks[1, 1, :2] = np.array([0.5], dtype=np.float16).view(np.uint8)
    blocks[1, 1, 2:4] = np.array([-1.0], dtype=np.float16).view(np.uint8)
    blocks[1, 1, 4:8] = np.array([1 << 20], dtype=np.uint32).view(np.uint8)  # element 20's fifth bit
    blocks[1, 1, 8 + 4] = 0x73  # element 4: 3, element 20: 7
    qs, d, m, qh = quants.pack(torch.from_numpy(raw), QT.Q5_1).parts
    assert float(d[1, 1]) == 0.5 and float(m[1, 1]) == -1.0 and int(qh[1, 1]) == 1 << 20
    assert int(qs[1, 16 + 4]) == 0x73
    w = quants.pack(torch.from_numpy(raw), QT.Q5_1).dequantize()
    assert float(w[1, 32 + 4]) == 0.5 * 3 - 1 and float(w[1, 32 + 20]) == 0.5 * (7 + 16) - 1


def test_real_q4_1_tensors_bit_exact(testdata):
    """Every Q4_1 tensor of SmolLM2-135M-Instruct.Q4_1.gguf (and its one Q8_0 tensor), as the loader packs it."""
    from gguflm.gguf_file import open_gguf

    gf = open_gguf(testdata / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    seen = {}
    for name, t in gf.tensors.items():
        if t.tensor_type not in (QT.Q4_1, QT.Q8_0):
            continue
        raw = np.asarray(t.data).view(np.uint8).reshape(int(t.shape[-1]), -1)
        packed = quants.pack(torch.from_numpy(raw.copy()), t.tensor_type)
        assert np.array_equal(packed.dequantize().numpy(), gguf.quants.dequantize(raw, t.tensor_type)), name
        seen[t.tensor_type] = seen.get(t.tensor_type, 0) + 1
    assert seen == {QT.Q4_1: 210, QT.Q8_0: 1}

"""The quant registry: block sizes from gguf, Q8_0 repacking and dequantization bit-exact against gguf.quants."""

import gguf
import numpy as np
import pytest
import torch

from gguflm import quants
from gguflm.errors import GGUFLMError

QT = gguf.GGMLQuantizationType


def test_registry_members_take_their_sizes_from_gguf():
    assert {"F32", "F16", "BF16", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"} <= set(quants.supported())
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

"""Q8_0 repacking and dequantization, bit-exact against gguf-py's own quants."""

import gguf
import numpy as np
import pytest
import torch

from gguflm.quants import Q8_0

QT = gguf.GGMLQuantizationType


@pytest.mark.parametrize("shape", [(1, 32), (5, 96), (123, 64), (7, 4096)])
def test_q8_0_dequantize_bit_exact(shape):
    rng = np.random.default_rng(sum(shape))
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    raw = gguf.quants.quantize(w, QT.Q8_0)  # (N, K/32 * 34) uint8
    packed = Q8_0.unpack(torch.from_numpy(raw))
    assert packed.qs.dtype == torch.int8 and packed.qs.shape == shape
    assert packed.d.dtype == torch.float16 and packed.d.shape == (shape[0], shape[1] // 32)
    expected = gguf.quants.dequantize(raw, QT.Q8_0)
    assert np.array_equal(packed.dequantize().numpy(), expected)


def test_q8_0_layout_scale_then_values():
    """Block bytes are a fp16 scale then 32 int8 values; the repack puts them where kernels expect."""
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(3, 2 * 34), dtype=np.uint8)
    raw.reshape(3, 2, 34)[:, :, :2] = np.array([0.5], dtype=np.float16).view(np.uint8)  # finite scales
    packed = Q8_0.unpack(torch.from_numpy(raw))
    assert np.array_equal(packed.qs[1, 32:64].numpy(), raw[1, 36:68].view(np.int8))
    assert float(packed.d[2, 1]) == 0.5

"""Random valid superblocks of the k-quants and IQ4_XS, in the file layout, for synthetic models.

Every quant bit and packed scale byte is uniform random (any bit pattern is a valid block); the fp16
d (and dmin) are set so weights have a standard deviation of about 1/sqrt(cols) (activations stay
O(1)) and, where the format has mins, a mean of about zero. Writing blocks directly is fast enough
for 8B-shaped files; quantizing floats is not.
"""

from __future__ import annotations

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType

# type -> (byte offset of the fp16 d, whether a dmin follows it, the std of a weight in units of d
#          (measured over random blocks), dmin / d: the mean of sc*q over the mean min, so means cancel)
_SCALES = {
    QT.Q2_K: (80, True, 12.0, 1.5),      # sc, m nibbles (mean 7.5); q in 0..3 (mean 1.5)
    QT.Q3_K: (108, False, 42.0, 0.0),    # (sc - 32) * (q - 4 + 4 h)
    QT.Q4_K: (0, True, 270.0, 7.5),      # six-bit sc, m (mean 31.5); q in 0..15 (mean 7.5)
    QT.Q5_K: (0, True, 540.0, 15.5),     # q in 0..31
    QT.Q6_K: (208, False, 1370.0, 0.0),  # int8 sc * (q - 32)
    QT.IQ4_XS: (0, False, 1200.0, 0.0),  # (ls - 32) * IQ4 value
}


def supports(qtype: QT) -> bool:
    return qtype in _SCALES


def random_blocks(rng: np.random.Generator, rows: int, cols: int, qtype: QT) -> np.ndarray:
    """(rows, cols / 256 * type_size) uint8: random valid superblocks of `qtype` (cols % 256 == 0)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block:
        raise ValueError(f"{qtype.name} rows must be a multiple of {block} weights, got {cols}")
    at, has_min, std, min_ratio = _SCALES[qtype]
    n_sb = cols // block
    blocks = rng.integers(0, 256, size=(rows, n_sb, size), dtype=np.uint8)
    d = (rng.random((rows, n_sb), dtype=np.float32) * 0.5 + 0.75) / (std * np.sqrt(cols))
    blocks[:, :, at : at + 2] = d.astype(np.float16)[..., None].view(np.uint8)
    if has_min:
        blocks[:, :, at + 2 : at + 4] = (d * min_ratio).astype(np.float16)[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)

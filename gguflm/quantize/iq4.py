"""IQ4_NL (32-weight blocks) and IQ4_XS (256-weight super-blocks): 4-bit indices into ggml's
non-linear table, with the scale search llama-quantize runs (quantize_iq4_nl / quantize_iq4_xs,
7 trial steps each way, no importance matrix), byte for byte.
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.arith import F32, columns, fp16, inverse, nearest, signed_absmax
from gguflm.quantize.search import iq4_index, iq4_scales


def _pack(L: np.ndarray) -> np.ndarray:
    """(n, 32k) indices -> (n, 16k) bytes: per 32, low nibble element j, high nibble element j+16."""
    q = L.reshape(L.shape[0], -1, 2, 16).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(L.shape[0], -1)


def quantize_iq4_nl(rows: np.ndarray) -> np.ndarray:
    """IQ4_NL: fp16 d, 16 bytes of table indices per 32 weights; w = d·table[q]."""
    x = columns(rows, 32)  # (32, n_blocks)
    d = iq4_scales(x)
    d_bytes, _ = fp16(d)
    L = iq4_index(inverse(d) * x).T  # the float scale, not its fp16 rounding, as ggml does
    return np.concatenate([d_bytes, _pack(L)], axis=1).reshape(rows.shape[0], -1)


def quantize_iq4_xs(rows: np.ndarray) -> np.ndarray:
    """IQ4_XS: fp16 d, 2 bytes of high and 4 of low scale bits (8 six-bit scales), 128 bytes of
    table indices per 256 weights; w = d·(scale-32)·table[q]."""
    n = rows.shape[0]
    x = columns(rows, 32)
    s = iq4_scales(x).reshape(-1, 8)  # (nb, 8)
    _, max_scale = signed_absmax(s.T)
    d = (-max_scale / F32(32)).astype(F32)
    d_bytes, _ = fp16(d)
    ls = np.clip(nearest(inverse(d)[:, None] * s), -32, 31)
    dl = (d[:, None] * ls.astype(F32)).reshape(-1)  # the float d again, not its fp16 rounding
    L = iq4_index(inverse(dl) * x).T.reshape(-1, 256)
    l6 = (ls + 32).astype(np.uint16)
    low = (l6 & 0xF).astype(np.uint8)
    scales_l = low[:, 0::2] | (low[:, 1::2] << 4)
    scales_h = np.zeros(s.shape[0], dtype=np.uint16)
    for ib in range(8):
        scales_h |= (l6[:, ib] >> 4) << (2 * ib)
    return np.concatenate([d_bytes, scales_h[:, None].view(np.uint8), scales_l, _pack(L)], axis=1).reshape(n, -1)

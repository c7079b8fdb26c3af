"""ggml's 32-weight block quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), byte-identical to quantize_row_*_ref.

Each maps float32 rows (N, K), K a multiple of 32, to their blocks (N, K/32*size) uint8.
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.arith import F32, fp16, inverse, roundf, signed_absmax


def _blocks(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 32).astype(F32, copy=False)  # (n_blocks, 32)


def _trunc_u8(v: np.ndarray) -> np.ndarray:
    """C's (int8_t)/(uint8_t) cast of a float in [0, 32): truncation toward zero."""
    return np.trunc(v).astype(np.int32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n_blocks, 32) levels -> 16 bytes: low nibble element j, high nibble element j+16."""
    q = q.astype(np.uint8)
    return (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """Bit j of the little-endian uint32 qh is bit 4 of element j."""
    return np.packbits((q >> 4).astype(np.uint8), axis=1, bitorder="little")  # (n_blocks, 4)


def _symmetric(rows: np.ndarray, div: float):
    b = _blocks(rows)
    _, mx = signed_absmax(b.T)  # the first element of largest |x|, with its sign
    d = (mx / F32(div)).astype(F32)
    return b, d, inverse(d)


def _asymmetric(rows: np.ndarray, levels: int):
    b = _blocks(rows)
    # the first occurrence, as C's `if (v < min) min = v` keeps it: a block of zeros keeps the first zero's sign
    mn = np.take_along_axis(b, b.argmin(axis=1)[:, None], axis=1)[:, 0]
    mx = np.take_along_axis(b, b.argmax(axis=1)[:, None], axis=1)[:, 0]
    d = ((mx - mn) / F32(levels)).astype(F32)
    return b, d, inverse(d), mn


def quantize_q4_0(rows: np.ndarray) -> np.ndarray:
    """Q4_0: fp16 d = max/-8, 16 bytes of nibbles; w = d·(q-8)."""
    b, d, inv = _symmetric(rows, -8)
    q = np.minimum(15, _trunc_u8(b * inv[:, None] + F32(8.5)))
    return np.concatenate([fp16(d)[0], _nibbles(q)], axis=1).reshape(rows.shape[0], -1)


def quantize_q4_1(rows: np.ndarray) -> np.ndarray:
    """Q4_1: fp16 d = (max-min)/15 and m = min, 16 bytes of nibbles; w = d·q + m."""
    b, d, inv, mn = _asymmetric(rows, 15)
    q = np.minimum(15, _trunc_u8((b - mn[:, None]) * inv[:, None] + F32(0.5)))
    return np.concatenate([fp16(d)[0], fp16(mn)[0], _nibbles(q)], axis=1).reshape(rows.shape[0], -1)


def quantize_q5_0(rows: np.ndarray) -> np.ndarray:
    """Q5_0: fp16 d = max/-16, 4 bytes of 5th bits, 16 bytes of nibbles; w = d·(q-16)."""
    b, d, inv = _symmetric(rows, -16)
    q = np.minimum(31, _trunc_u8(b * inv[:, None] + F32(16.5)))
    return np.concatenate([fp16(d)[0], _fifth_bits(q), _nibbles(q)], axis=1).reshape(rows.shape[0], -1)


def quantize_q5_1(rows: np.ndarray) -> np.ndarray:
    """Q5_1: fp16 d = (max-min)/31 and m = min, 4 bytes of 5th bits, 16 of nibbles; w = d·q + m."""
    b, d, inv, mn = _asymmetric(rows, 31)
    q = _trunc_u8((b - mn[:, None]) * inv[:, None] + F32(0.5)) & 0xFF  # C casts to uint8 without a MIN
    return np.concatenate([fp16(d)[0], fp16(mn)[0], _fifth_bits(q), _nibbles(q)], axis=1).reshape(rows.shape[0], -1)


def quantize_q8_0(rows: np.ndarray) -> np.ndarray:
    """Q8_0: fp16 d = amax/127, 32 int8 q = roundf(x/d); w = d·q."""
    b = _blocks(rows)
    d = (np.abs(b).max(axis=1) / F32(127)).astype(F32)
    q = roundf(b * inverse(d)[:, None]).astype(np.int8)
    return np.concatenate([fp16(d)[0], q.view(np.uint8)], axis=1).reshape(rows.shape[0], -1)

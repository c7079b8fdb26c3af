"""k-quant block quantizers (256-weight super-blocks), byte-identical to ggml's quantize_row_*_ref.

Each `quantize_*` maps float32 rows (N, K), K a multiple of 256, to their blocks (N, K/256*size)
uint8. The sub-block searches are in `search`; this file sets the super-block scales, requantizes
each weight against the stored (fp16, 6-bit) scales as ggml does, and packs the bits.
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.arith import F32, GROUP_MAX_EPS, columns, fp16, nearest, seqsum, signed_absmax
from gguflm.quantize.search import q3_quants, qkx2_quants, qx_quants

QK = 256


def _by_block(v: np.ndarray, per: int) -> np.ndarray:
    """Per-sub-block values of column layout (B,) as (super-blocks, per)."""
    return v.reshape(-1, per)


def _requantize(x: np.ndarray, d: np.ndarray, dm: np.ndarray, lo: int, hi: int, levels: np.ndarray,
                offset: int) -> np.ndarray:
    """Levels of x against the stored scale d (and min dm) per column; columns with d == 0 keep `levels`."""
    live = d != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.clip(nearest((x + dm) / np.where(live, d, F32(1))), lo, hi) + offset
    return np.where(live, lv, levels)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(nb, 256) levels 0..3 -> (nb, 64): byte j/4+l of each 128 holds L[j+l], L[j+l+32], +64, +96."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per super-block (nb, 8) -> the 12 bytes get_scale_min_k4 reads."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def _k4_scales(scales: np.ndarray, mins: np.ndarray) -> tuple:
    """Super-block d, dmin (fp16) and 6-bit sub-block scales/mins from float ones (nb, 8) (Q4_K/Q5_K)."""
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    inv_scale = np.where(max_scale > 0, F32(63) / np.where(max_scale > 0, max_scale, F32(1)), F32(0)).astype(F32)
    inv_min = np.where(max_min > 0, F32(63) / np.where(max_min > 0, max_min, F32(1)), F32(0)).astype(F32)
    ls = np.minimum(nearest(inv_scale[:, None] * scales) & 0xFF, 63)  # C stores the int in a uint8, then MIN 63
    lm = np.minimum(nearest(inv_min[:, None] * mins) & 0xFF, 63)
    d_bytes, d = fp16(max_scale / F32(63))
    m_bytes, dmin = fp16(max_min / F32(63))
    return d_bytes, m_bytes, ls, lm, d[:, None] * ls.astype(F32), dmin[:, None] * lm.astype(F32)


def _qkx_k4(rows: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Shared first half of Q4_K and Q5_K: the 32-weight sub-block search and the stored scales."""
    x = columns(rows, 32)  # (32, nb*8)
    av = np.sqrt(seqsum(x * x) / F32(32))
    scales, mins, levels = qkx2_quants(x, av + np.abs(x), nmax, rmin, 0.1, nstep, False)
    d_bytes, m_bytes, ls, lm, d, dm = _k4_scales(_by_block(scales, 8), _by_block(mins, 8))
    L = _requantize(x, d.reshape(-1), dm.reshape(-1), 0, nmax, levels, 0)  # (32, nb*8)
    L = L.T.reshape(-1, QK)  # (nb, 256)
    return d_bytes, m_bytes, _pack_scales_k4(ls, lm), L


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """Q4_K: d, dmin (fp16), 12 bytes of 6-bit scales/mins, 128 bytes of nibbles (144 per 256)."""
    n = rows.shape[0]
    d, dmin, sc, L = _qkx_k4(rows, 15, -1.0, 20)
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d.reshape(-1, 2), dmin.reshape(-1, 2), sc, qs], axis=1).reshape(n, -1)


def quantize_q5_k(rows: np.ndarray) -> np.ndarray:
    """Q5_K: d, dmin, 12 scale bytes, 32 bytes of 5th bits, 128 bytes of low nibbles (176 per 256)."""
    n = rows.shape[0]
    d, dmin, sc, L = _qkx_k4(rows, 31, -0.5, 15)
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)  # (nb, 64-chunk, half, 32)
    qs = ((q[:, :, 0] & 0xF) | ((q[:, :, 1] & 0xF) << 4)).reshape(-1, 128)
    high = (q >> 4).reshape(-1, 8, 32)  # bit 2k+h of qh[j] is the 5th bit of chunk k, half h
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for bit in range(8):
        qh |= high[:, bit] << bit
    return np.concatenate([d.reshape(-1, 2), dmin.reshape(-1, 2), sc, qh, qs], axis=1).reshape(n, -1)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """Q6_K: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, fp16 d (210 per 256)."""
    n = rows.shape[0]
    x = columns(rows, 16)  # (16, nb*16)
    scales, levels = qx_quants(x, 32)
    s = _by_block(scales, 16)
    amax, mx = signed_absmax(s.T)
    live = amax >= GROUP_MAX_EPS
    iscale = np.where(live, F32(-128) / np.where(live, mx, F32(1)), F32(0)).astype(F32)
    d_bytes, d = fp16(np.where(live, F32(1) / np.where(live, iscale, F32(1)), F32(0)))
    sc = np.minimum(nearest(iscale[:, None] * s), 127)
    sc = np.where(live[:, None], sc, 0).astype(np.int8)
    dl = (d[:, None] * sc.astype(F32)).reshape(-1)
    L = _requantize(x, dl, F32(0), -32, 31, levels, 32).T.reshape(-1, QK)
    L = np.where(live[:, None], L, 0).astype(np.uint8).reshape(-1, 2, 4, 32)  # (nb, 128-half, quarter, 32)
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(-1, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(-1, 64)
    d_bytes = np.where(live[:, None], d_bytes.reshape(-1, 2), 0).astype(np.uint8)
    return np.concatenate([ql, qh, sc.view(np.uint8), d_bytes], axis=1).reshape(n, -1)


def quantize_q3_k(rows: np.ndarray) -> np.ndarray:
    """Q3_K: 32 bytes of high bits, 64 of 2-bit lows, 12 of 6-bit signed scales, fp16 d (110 per 256)."""
    n = rows.shape[0]
    x = columns(rows, 16)
    scales, levels = q3_quants(x, 4)
    s = _by_block(scales, 16)
    _, max_scale = signed_absmax(s.T)
    live = max_scale != 0
    iscale = np.where(live, F32(-32) / np.where(live, max_scale, F32(1)), F32(0)).astype(F32)
    l6 = np.where(live[:, None], np.clip(nearest(iscale[:, None] * s), -32, 31) + 32, 0).astype(np.uint8)
    sc = np.zeros((s.shape[0], 12), dtype=np.uint8)
    sc[:, 0:8] = (l6[:, 0:8] & 0xF) | ((l6[:, 8:16] & 0xF) << 4)
    high = l6 >> 4  # (nb, 16): bits 2*(j/4) of byte 8 + j%4
    sc[:, 8:12] = high[:, 0:4] | (high[:, 4:8] << 2) | (high[:, 8:12] << 4) | (high[:, 12:16] << 6)
    d_bytes, d = fp16(np.where(live, F32(1) / np.where(live, iscale, F32(1)), F32(0)))
    dl = (d[:, None] * (l6.astype(np.int32) - 32).astype(F32)).reshape(-1)
    L = _requantize(x, dl, F32(0), -4, 3, levels, 4).T.reshape(-1, QK).astype(np.uint8)
    hm = (L > 3).reshape(-1, 8, 32)  # weight j: bit j/32 of hmask[j%32]
    hmask = np.zeros((L.shape[0], 32), dtype=np.uint8)
    for bit in range(8):
        hmask |= hm[:, bit].astype(np.uint8) << bit
    L = np.where(L > 3, L - 4, L)
    return np.concatenate([hmask, _pack_2bit(L), sc, d_bytes.reshape(-1, 2)], axis=1).reshape(n, -1)


def quantize_q2_k(rows: np.ndarray) -> np.ndarray:
    """Q2_K: 16 bytes of 4-bit scale|min, 64 of 2-bit levels, fp16 d and dmin (84 per 256)."""
    n = rows.shape[0]
    x = columns(rows, 16)
    scales, mins, levels = qkx2_quants(x, np.abs(x), 3, -0.5, 0.1, 15, True)
    s, m = _by_block(scales, 16), _by_block(mins, 16)
    max_scale = np.maximum(s.max(axis=1), F32(0))
    max_min = np.maximum(m.max(axis=1), F32(0))
    ok_s, ok_m = max_scale > 0, max_min > 0
    is_ = np.where(ok_s, F32(15) / np.where(ok_s, max_scale, F32(1)), F32(0)).astype(F32)
    im = np.where(ok_m, F32(15) / np.where(ok_m, max_min, F32(1)), F32(0)).astype(F32)
    ls = np.where(ok_s[:, None], nearest(is_[:, None] * s), 0)
    lm = np.where(ok_m[:, None], nearest(im[:, None] * m), 0)
    sc = ((ls & 0xFF) | ((lm << 4) & 0xFF)).astype(np.uint8)
    d_bytes, d = fp16(np.where(ok_s, max_scale / F32(15), F32(0)))
    m_bytes, dmin = fp16(np.where(ok_m, max_min / F32(15), F32(0)))
    dl = (d[:, None] * (sc & 0xF).astype(F32)).reshape(-1)
    dm = (dmin[:, None] * (sc >> 4).astype(F32)).reshape(-1)
    L = _requantize(x, dl, dm, 0, 3, levels, 0).T.reshape(-1, QK)
    return np.concatenate([sc, _pack_2bit(L), d_bytes.reshape(-1, 2), m_bytes.reshape(-1, 2)], axis=1).reshape(n, -1)

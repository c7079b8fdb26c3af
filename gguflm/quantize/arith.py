"""float32 arithmetic as ggml's C quantizers do it, over many blocks at once.

The block quantizers work on "column" layouts: an array (n, B) holds B independent groups of n
weights, one group per column, so a loop over the n positions is a handful of vector operations
over all B groups. Sums are accumulated position by position in float32, in C's order, because
the searches compare sums: a differently rounded sum can pick a different scale, and then the
bytes differ from llama.cpp's.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # ggml: a group whose largest |x| is below this is all zero


def seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of (n, B) in float32, element 0 first (C's `s = 0; for i: s += a[i]`)."""
    acc = a[0].astype(F32, copy=True)
    for i in range(1, a.shape[0]):
        acc += a[i]
    return acc


def nearest(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: round half to even (exact for |v| < 2**22), as int32."""
    return np.rint(v).astype(np.int32)


def rint_clip(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """MAX(lo, MIN(hi, nearest_int(v))) as float32, computed in place in `v` (a temporary)."""
    np.rint(v, out=v)
    return np.clip(v, F32(lo), F32(hi), out=v)


def roundf(v: np.ndarray) -> np.ndarray:
    """C roundf: half away from zero, exact (no v + 0.5 rounding), as float32."""
    t = np.trunc(v)
    return (t + np.where(np.abs(v - t) >= F32(0.5), np.sign(v), F32(0))).astype(F32)


def signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(amax, max) over axis 0: the largest |x| and the signed value where it first occurs."""
    idx = np.abs(x).argmax(axis=0)
    mx = np.take_along_axis(x, idx[None], axis=0)[0]
    amax = np.abs(mx)
    return amax, np.where(amax > 0, mx, F32(0))  # C starts from max = 0.0f: never -0.0


def inverse(d: np.ndarray) -> np.ndarray:
    """C's `d ? 1/d : 0` in float32."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0)).astype(F32)


def safe_div(num: np.ndarray, den: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """num / den where `ok`, 0 elsewhere, without warnings from the lanes that are not used."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(ok, num / np.where(ok, den, F32(1)), F32(0)).astype(F32)


def fp16(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes (..., 2) uint8, the value read back as float32) of GGML_FP32_TO_FP16 (round to nearest even)."""
    with np.errstate(over="ignore"):
        h = np.asarray(v, dtype=F32).astype(np.float16)
    return h[..., None].view(np.uint8), h.astype(F32)


def columns(rows: np.ndarray, n: int) -> np.ndarray:
    """(N, K) float32 rows as (n, N*K/n) contiguous columns of n consecutive weights."""
    return np.ascontiguousarray(rows.reshape(-1, n).T, dtype=F32)

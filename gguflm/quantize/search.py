"""The scale searches of ggml's k-quant and IQ4 reference quantizers, over columns of groups.

Each takes x (n, B): B groups of n weights, one per column (see `arith`), and returns per-group
scales (B,) and levels (n, B), exactly as ggml-quants.c's make_qx_quants, make_q3_quants,
make_qkx2_quants and the IQ4 search compute them (the same float32 operations in the same order).
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.arith import F32, GROUP_MAX_EPS, nearest, rint_clip, safe_div, seqsum, signed_absmax

IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)


def qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric levels in [0, 2*nmax) minimizing sum x²·(x - s·(L-nmax))² over 19 trial scales
    around -nmax/max (make_qx_quants, rmse_type 1, no importance weights)."""
    amax, mx = signed_absmax(x)
    live = amax >= GROUP_MAX_EPS
    mx = np.where(live, mx, F32(1))
    w = x * x
    wx = w * x

    def trial(iscale):
        lv = rint_clip(iscale * x, -nmax, nmax - 1)
        return lv, seqsum(wx * lv), seqsum(w * lv * lv)

    lv, sumlx, suml2 = trial(F32(-nmax) / mx)
    levels = lv + F32(nmax)
    scale = safe_div(sumlx, suml2, suml2 != 0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        lv, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        levels = np.where(better, lv + F32(nmax), levels)
        scale = np.where(better, safe_div(sumlx, suml2, better), scale)
        best = np.where(better, scale * sumlx, best)
    return np.where(live, scale, F32(0)), np.where(live, levels, F32(0)).astype(np.int32)


def q3_quants(x: np.ndarray, nmax: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Levels in [0, 2*nmax) from -nmax/max, then up to 5 passes moving single levels while the
    x²-weighted fit improves (make_q3_quants with do_rmse)."""
    amax, mx = signed_absmax(x)
    live = amax >= GROUP_MAX_EPS
    mx = np.where(live, mx, F32(1))
    lv = np.clip(nearest((F32(-nmax) / mx) * x), -nmax, nmax - 1).astype(F32)
    w = x * x
    wx = w * x
    sumlx = seqsum(wx * lv)
    suml2 = seqsum(w * lv * lv)
    for _ in range(5):
        changed = np.zeros(x.shape[1], dtype=bool)
        for i in range(x.shape[0]):
            slx = sumlx - wx[i] * lv[i]
            sl2 = suml2 - w[i] * lv[i] * lv[i]
            pos = slx > 0
            new = np.clip(nearest(safe_div(x[i] * sl2, slx, pos)), -nmax, nmax - 1).astype(F32)
            slx = slx + wx[i] * new
            sl2 = sl2 + w[i] * new * new
            take = pos & (new != lv[i]) & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            lv[i] = np.where(take, new, lv[i])
            sumlx = np.where(take, slx, sumlx)
            suml2 = np.where(take, sl2, suml2)
            changed |= take
        if not changed.any():  # a pass without a change leaves the state, so every later pass is idle too
            break
    scale = safe_div(sumlx, suml2, suml2 > 0)
    return np.where(live, scale, F32(0)), np.where(live, lv + F32(nmax), F32(0)).astype(np.int32)


def qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric levels in [0, nmax] with scale and min: the weighted least-squares fit of each of
    nstep+1 trial level sets, the one of least weighted error kept (make_qkx2_quants).

    Returns (scale, the_min, levels): x ≈ scale·L - the_min."""
    mn = np.minimum(x.min(axis=0), F32(0))
    mx = x.max(axis=0)
    sum_w = seqsum(w)
    sum_x = seqsum(w * x)
    flat = mx == mn
    lv = np.empty_like(x)  # scratch buffers reused by every trial: the loop is bound by memory traffic
    tmp = np.empty_like(x)

    def grid(iscale, off):  # levels of x on the grid starting at `off`, into lv
        np.subtract(x, off, out=lv)
        np.multiply(lv, iscale, out=lv)
        np.rint(lv, out=lv)
        return np.clip(lv, F32(0), F32(nmax), out=lv)

    def error(scale, lv, off):
        np.multiply(lv, scale, out=tmp)
        np.add(tmp, off, out=tmp)
        np.subtract(tmp, x, out=tmp)
        np.abs(tmp, out=tmp) if use_mad else np.multiply(tmp, tmp, out=tmp)
        np.multiply(tmp, w, out=tmp)
        return seqsum(tmp)

    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(nmax) / np.where(flat, F32(1), mx - mn)
        scale = F32(1) / iscale
        levels = grid(iscale, mn).copy()
        best = error(scale, levels, mn)
        off = mn  # ggml's `min`: each trial's grid starts from the best min found so far
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / np.where(flat, F32(1), mx - off)
            grid(iscale, off)
            np.multiply(w, lv, out=tmp)  # w·l
            sum_l = seqsum(tmp)
            sum_xl = seqsum(tmp * x)
            tmp *= lv
            sum_l2 = seqsum(tmp)
            det = sum_w * sum_l2 - sum_l * sum_l
            ok = det > 0
            this_scale = safe_div(sum_w * sum_xl - sum_x * sum_l, det, ok)
            this_min = safe_div(sum_l2 * sum_x - sum_l * sum_xl, det, ok)
            clamp = this_min > 0
            this_min = np.where(clamp, F32(0), this_min)
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale).astype(F32)
            cur = error(this_scale, lv, this_min)
            better = ok & (cur < best)
            if better.any():
                np.copyto(levels, lv, where=better)
                best = np.where(better, cur, best)
                scale = np.where(better, this_scale, scale)
                off = np.where(better, this_min, off)
    scale = np.where(flat, F32(0), scale)
    levels = np.where(flat, F32(0), levels).astype(np.int32)
    return scale.astype(F32), (-np.where(flat, mn, off)).astype(F32), levels


def _iq4_lut() -> np.ndarray:
    """best_index_int8's answer for each half-unit bin [k/2, (k+1)/2) of [-128, 128).

    For v between table neighbours a < b it returns the upper index iff v - a >= b - v, i.e.
    v >= (a+b)/2, a multiple of 1/2 (both sides are exact in float32 there), so the index is
    constant on each bin."""
    lo = np.arange(-256, 256, dtype=np.float64) / 2  # bin starts
    mids = (IQ4_VALUES[:-1].astype(np.float64) + IQ4_VALUES[1:]) / 2
    return np.searchsorted(mids, lo, side="right").astype(np.int32)


_IQ4_LUT = _iq4_lut()
_IQ4_VALUE_LUT = IQ4_VALUES.astype(F32)[_IQ4_LUT]


def _iq4_bins(v: np.ndarray) -> np.ndarray:
    b = np.clip(v, F32(-128), F32(127.5))
    np.multiply(b, F32(2), out=b)  # exact; floor of it is the half-unit bin
    np.floor(b, out=b)
    return b.astype(np.int32) + 256


def iq4_index(v: np.ndarray) -> np.ndarray:
    """best_index_int8 over the IQ4 table: the nearest value's index, the upper one on a tie."""
    return _IQ4_LUT[_iq4_bins(v)]


def iq4_scales(x: np.ndarray, ntry: int = 7) -> np.ndarray:
    """Per 32-weight group, the scale d minimizing sum x²·(x - d·table[L])² over 2*ntry+1 trial
    inverse scales around table[0]/max (quantize_row_iq4_nl_impl without importance weights)."""
    amax, mx = signed_absmax(x)
    live = amax >= GROUP_MAX_EPS
    mx = np.where(live, mx, F32(1))
    vals = IQ4_VALUES.astype(F32)
    w = x * x

    def trial(inv):
        q = _IQ4_VALUE_LUT[_iq4_bins(inv * x)]
        wq = w * q
        return seqsum(wq * x), seqsum(wq * q)

    d = -mx / vals[0] if ntry > 0 else mx / vals[0]
    sumqx, sumq2 = trial(F32(1) / d)
    d = safe_div(sumqx, sumq2, sumq2 > 0)
    best = d * sumqx
    for step in range(-ntry, ntry + 1):
        sumqx, sumq2 = trial(F32(step + int(IQ4_VALUES[0])) / mx)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, safe_div(sumqx, sumq2, better), d)
        best = np.where(better, d * sumqx, best)
    return np.where(live, d, F32(0)).astype(F32)


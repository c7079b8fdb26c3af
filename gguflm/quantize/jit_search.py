"""The k-quant scale searches compiled: make_qkx2_quants (Q2_K, Q4_K, Q5_K) and make_qx_quants (Q6_K)
over LANES groups at a time, make_q3_quants (Q3_K) one group at a time.

The numpy `search` is the spec: the same float32 operations in the same order, so the same levels
and scales. A tile holds LANES groups of n <= 32 weights as columns: each loop over the n positions
runs the same operation on every lane, which LLVM turns into vector instructions, while each lane's
sums still accumulate position by position as in C. Lanes a tile does not fill are zeros, which
every search treats as an all-zero group.

A tile lives in one flat float32 array `t` (TILE long) at fixed offsets: weight i of group g at
t[X + LANES*i + g], its importance weight at W + ..., its level at LV + ..., and one row of LANES per
per-lane quantity. One array indexed at constant offsets is what lets LLVM see that the loops'
stores never overlap their loads: separate arrays need run-time overlap checks, and past a few of
them it leaves the loop scalar (measured: 46 us per Q4_K tile that way). Levels are integral
float32 values (`round_clamp`): integer lanes would not vectorize with AVX2.
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.jit_arith import GROUP_MAX_EPS, clamp, exact, nearest_int, round_clamp

# Groups per tile. With 16 LLVM unrolls each lane loop completely and then leaves the 16 lanes
# scalar; from 32 on it vectorizes them (measured on the 2-core box, a make_qkx2_quants error pass:
# 2.4 ns per weight at 16 lanes, 0.18 at 32, 0.19 at 64).
LANES = 32
SPAN = 32 * LANES  # room for one (n, LANES) plane, n <= 32
X, W, LV, LA = 0, SPAN, 2 * SPAN, 3 * SPAN  # weights, importance weights, levels, a trial's levels
SCALE, THE_MIN = 4 * SPAN, 4 * SPAN + LANES  # the searches' answers per lane
_S = 4 * SPAN + 2 * LANES  # per-lane state, one row of LANES each from here
TILE = _S + 16 * LANES
MN, MX, SW, SX, IS, BEST, TAKE, SL, SL2, SXL, CUR, TS, TM, MN0, GIS, GOFF = (_S + LANES * k for k in range(16))


@exact
def _error(t, n, lv, s, m, out, use_mad):
    """Per lane, out = sum over i of w·|s·L + m - x| (use_mad) or w·(s·L + m - x)², L at row `lv`,
    s and m at rows `s`, `m`. The choice is made outside the loops: inside, it keeps them scalar."""
    zero = np.float32(0)
    for g in range(LANES):
        t[out + g] = zero
    if use_mad:
        for i in range(n):
            for g in range(LANES):
                k = LANES * i + g
                t[out + g] += t[W + k] * abs(t[s + g] * t[lv + k] + t[m + g] - t[X + k])
    else:
        for i in range(n):
            for g in range(LANES):
                k = LANES * i + g
                diff = t[s + g] * t[lv + k] + t[m + g] - t[X + k]
                t[out + g] += t[W + k] * (diff * diff)


@exact(inline=True)
def _pick(take, a, b):
    """`a` where the lane's flag `take` is set, else `b`; both loaded first, so LLVM selects values
    (a select of addresses, then one load, does not vectorize)."""
    return a if take != np.float32(0) else b


@exact
def qkx2_lanes(t, n, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants for each lane of tile `t`: levels (LV) in [0, nmax], SCALE and THE_MIN with
    x ≈ scale·L - the_min, from the weights (X) and importance weights (W) of groups of n."""
    fmax = np.float32(nmax)
    zero = np.float32(0)
    for g in range(LANES):
        t[MN + g] = t[X + g]
        t[MX + g] = t[X + g]
        t[SW + g] = t[W + g]
        t[SX + g] = t[W + g] * t[X + g]
    for i in range(1, n):
        for g in range(LANES):
            v = t[X + LANES * i + g]
            t[MN + g] = v if v < t[MN + g] else t[MN + g]
            t[MX + g] = v if v > t[MX + g] else t[MX + g]
            t[SW + g] += t[W + LANES * i + g]
            t[SX + g] += t[W + LANES * i + g] * v
    for g in range(LANES):
        mn = zero if t[MN + g] > zero else t[MN + g]
        t[MN + g] = mn
        t[MN0 + g] = mn
        t[IS + g] = fmax / (t[MX + g] - mn)  # inf or NaN in flat lanes (max == min): replaced at the end
        t[SCALE + g] = np.float32(1) / t[IS + g]
        t[BEST + g] = zero
    for g in range(LANES):
        t[GIS + g] = t[IS + g]
        t[GOFF + g] = t[MN + g]
    for i in range(n):
        for g in range(LANES):
            k = LANES * i + g
            t[LV + k] = round_clamp(t[IS + g] * (t[X + k] - t[MN + g]), zero, fmax)
    _error(t, n, LV, SCALE, MN, BEST, use_mad)
    for step in range(nstep + 1):
        for g in range(LANES):
            t[IS + g] = (rmin + rdelta * np.float32(step) + fmax) / (t[MX + g] - t[MN + g])
            t[SL + g] = zero
            t[SL2 + g] = zero
            t[SXL + g] = zero
        for i in range(n):
            for g in range(LANES):
                v = t[X + LANES * i + g]
                l = round_clamp(t[IS + g] * (v - t[MN + g]), zero, fmax)
                t[LA + LANES * i + g] = l
                wl = t[W + LANES * i + g] * l
                t[SL + g] += wl
                t[SL2 + g] += wl * l
                t[SXL + g] += wl * v
        for g in range(LANES):
            sl, sl2, sxl = t[SL + g], t[SL2 + g], t[SXL + g]
            det = t[SW + g] * sl2 - sl * sl
            s = (t[SW + g] * sxl - t[SX + g] * sl) / det
            m = (sl2 * t[SX + g] - sl * sxl) / det
            if m > zero:
                m = zero
                s = sxl / sl2
            t[TS + g] = s
            t[TM + g] = m
            t[TAKE + g] = np.float32(1) if det > zero else zero
        _error(t, n, LA, TS, TM, CUR, use_mad)
        for g in range(LANES):  # a lane whose det <= 0 is never taken (its cur may be NaN)
            ok = t[TAKE + g] != zero and t[CUR + g] < t[BEST + g]
            t[BEST + g] = t[CUR + g] if ok else t[BEST + g]
            t[SCALE + g] = t[TS + g] if ok else t[SCALE + g]
            t[GIS + g] = t[IS + g] if ok else t[GIS + g]  # the grid this trial's levels came from
            t[GOFF + g] = t[MN + g] if ok else t[GOFF + g]
            t[MN + g] = t[TM + g] if ok else t[MN + g]
    # the kept levels, recomputed from their grid (the same operations give the same values) rather
    # than copied at every improvement
    for i in range(n):
        for g in range(LANES):
            k = LANES * i + g
            l = round_clamp(t[GIS + g] * (t[X + k] - t[GOFF + g]), zero, fmax)
            t[LV + k] = zero if t[MX + g] == t[MN0 + g] else l
    for g in range(LANES):
        flat = t[MX + g] == t[MN0 + g]
        t[SCALE + g] = zero if flat else t[SCALE + g]
        t[THE_MIN + g] = -(t[MN0 + g] if flat else t[MN + g])


@exact
def qx_lanes(t, n, nmax):
    """make_qx_quants (rmse_type 1, no importance weights) for each lane of tile `t`: levels (LV) in
    [0, 2·nmax) and SCALE with x ≈ scale·(L - nmax), from the weights (X) of groups of n; all-zero
    lanes get 0 and 0."""
    fmax = np.float32(nmax)
    zero = np.float32(0)
    amax, mx, slx, sl2 = MN, MX, SL, SL2  # rows reused under this search's names
    for g in range(LANES):
        t[amax + g] = zero
        t[mx + g] = zero
    for i in range(n):
        for g in range(LANES):
            v = t[X + LANES * i + g]
            bigger = abs(v) > t[amax + g]
            t[amax + g] = abs(v) if bigger else t[amax + g]
            t[mx + g] = v if bigger else t[mx + g]
    for step in range(-10, 10):  # -10 stands for C's first pass, at iscale = -nmax/max
        if step == 0:
            continue
        for g in range(LANES):
            if step == -10:
                t[IS + g] = -fmax / t[mx + g]
            else:
                t[IS + g] = -(fmax + np.float32(0.1) * np.float32(step)) / t[mx + g]
            t[slx + g] = zero
            t[sl2 + g] = zero
        for i in range(n):
            for g in range(LANES):
                v = t[X + LANES * i + g]
                l = round_clamp(t[IS + g] * v, -fmax, fmax - np.float32(1))
                t[LA + LANES * i + g] = l
                wv = v * v
                t[slx + g] += wv * v * l
                t[sl2 + g] += wv * l * l
        for g in range(LANES):
            a, b = t[slx + g], t[sl2 + g]
            if step == -10:
                s = a / b if b != zero else zero
                t[SCALE + g] = s
                t[BEST + g] = s * a
                t[TAKE + g] = np.float32(1)
            else:
                ok = b > zero and a * a > t[BEST + g] * b
                t[TAKE + g] = np.float32(1) if ok else zero
                if ok:
                    s = a / b
                    t[SCALE + g] = s
                    t[BEST + g] = s * a
        for i in range(n):
            for g in range(LANES):
                k = LANES * i + g
                t[LV + k] = _pick(t[TAKE + g], t[LA + k] + fmax, t[LV + k])
    for g in range(LANES):
        t[SCALE + g] = t[SCALE + g] if t[amax + g] >= GROUP_MAX_EPS else zero
    for i in range(n):
        for g in range(LANES):
            t[LV + LANES * i + g] = t[LV + LANES * i + g] if t[amax + g] >= GROUP_MAX_EPS else zero


@exact
def q3_group(x, nmax, L):
    """make_q3_quants with do_rmse for one group x (n,): levels L (n,) in [0, 2·nmax), returns the
    scale (0 for an all-zero group, whose levels are 0)."""
    n = x.shape[0]
    amax = np.float32(0)
    mx = np.float32(0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0)
    iscale = np.float32(-nmax) / mx
    sumlx = np.float32(0)
    suml2 = np.float32(0)
    for i in range(n):
        l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
        L[i] = l
        w = x[i] * x[i]
        sumlx += w * x[i] * np.float32(l)
        suml2 += w * np.float32(l) * np.float32(l)
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = x[i] * x[i]
            fl = np.float32(L[i])
            slx = sumlx - w * x[i] * fl
            if slx > np.float32(0):
                sl2 = suml2 - w * fl * fl
                new = clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1)
                if new != L[i]:
                    fn = np.float32(new)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > np.float32(0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > np.float32(0) else np.float32(0)

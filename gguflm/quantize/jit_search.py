"""The k-quant scale searches compiled: make_qkx2_quants (Q2_K, Q4_K, Q5_K) and make_qx_quants (Q6_K)
over LANES groups at a time, make_q3_quants (Q3_K) one group at a time.

The numpy `search` is the spec: the same float32 operations in the same order, so the same levels
and scales. A tile holds LANES groups of n weights as columns, x (n, LANES): each loop over the n
positions runs the same operation on every lane, which LLVM turns into vector instructions, while
each lane's sums still accumulate position by position as in C. Lanes a tile does not fill are
zeros, which every search treats as an all-zero group. `st` is (16, LANES) float32 scratch for the
per-lane state, `laux` (n, LANES) float32 scratch for a trial's levels. Levels are kept as
integral float32 values (`round_clamp`): integer lanes would not vectorize with AVX2.
"""

from __future__ import annotations

import numpy as np

from gguflm.quantize.jit_arith import GROUP_MAX_EPS, clamp, exact, nearest_int, round_clamp

LANES = 16  # groups per tile: 16 float32 lanes are one AVX-512 register, two AVX2 ones


@exact
def qkx2_lanes(x, w, nmax, rmin, rdelta, nstep, use_mad, L, laux, scale, the_min, st):
    """make_qkx2_quants for each lane: levels L (n, LANES) in [0, nmax], scale (LANES,) and
    the_min (LANES,) with x ≈ scale·L - the_min, from x and weights w (n, LANES)."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    zero = np.float32(0)
    mn, mx, sum_w, sum_x, iscale, best, take = st[0], st[1], st[2], st[3], st[4], st[5], st[6]
    sl, sl2, sxl, cur, ts, tm, mn0 = st[7], st[8], st[9], st[10], st[11], st[12], st[13]
    for g in range(LANES):
        mn[g] = x[0, g]
        mx[g] = x[0, g]
        sum_w[g] = w[0, g]
        sum_x[g] = w[0, g] * x[0, g]
    for i in range(1, n):
        for g in range(LANES):
            v = x[i, g]
            mn[g] = v if v < mn[g] else mn[g]
            mx[g] = v if v > mx[g] else mx[g]
            sum_w[g] += w[i, g]
            sum_x[g] += w[i, g] * v
    for g in range(LANES):
        mn[g] = np.float32(0) if mn[g] > np.float32(0) else mn[g]
        mn0[g] = mn[g]
        iscale[g] = fmax / (mx[g] - mn[g])  # inf or NaN in flat lanes (max == min): replaced at the end
        scale[g] = np.float32(1) / iscale[g]
        best[g] = np.float32(0)
    for i in range(n):
        for g in range(LANES):
            l = round_clamp(iscale[g] * (x[i, g] - mn[g]), zero, fmax)
            L[i, g] = l
            diff = scale[g] * l + mn[g] - x[i, g]
            diff = abs(diff) if use_mad else diff * diff
            best[g] += w[i, g] * diff
    for step in range(nstep + 1):
        for g in range(LANES):
            iscale[g] = (np.float32(rmin) + np.float32(rdelta) * np.float32(step) + fmax) / (mx[g] - mn[g])
            sl[g] = np.float32(0)
            sl2[g] = np.float32(0)
            sxl[g] = np.float32(0)
            cur[g] = np.float32(0)
        for i in range(n):
            for g in range(LANES):
                l = round_clamp(iscale[g] * (x[i, g] - mn[g]), zero, fmax)
                laux[i, g] = l
                wl = w[i, g] * l
                sl[g] += wl
                sl2[g] += wl * l
                sxl[g] += wl * x[i, g]
        for g in range(LANES):
            det = sum_w[g] * sl2[g] - sl[g] * sl[g]
            s = (sum_w[g] * sxl[g] - sum_x[g] * sl[g]) / det
            m = (sl2[g] * sum_x[g] - sl[g] * sxl[g]) / det
            if m > np.float32(0):
                m = np.float32(0)
                s = sxl[g] / sl2[g]
            ts[g] = s
            tm[g] = m
            take[g] = np.float32(1) if det > np.float32(0) else np.float32(0)
        for i in range(n):
            for g in range(LANES):
                diff = ts[g] * laux[i, g] + tm[g] - x[i, g]
                diff = abs(diff) if use_mad else diff * diff
                cur[g] += w[i, g] * diff
        for g in range(LANES):
            ok = take[g] != np.float32(0) and cur[g] < best[g]
            take[g] = np.float32(1) if ok else np.float32(0)
            best[g] = cur[g] if ok else best[g]
            scale[g] = ts[g] if ok else scale[g]
            mn[g] = tm[g] if ok else mn[g]
        for i in range(n):
            for g in range(LANES):
                L[i, g] = laux[i, g] if take[g] != np.float32(0) else L[i, g]
    for g in range(LANES):
        flat = mx[g] == mn0[g]
        scale[g] = np.float32(0) if flat else scale[g]
        the_min[g] = -(mn0[g] if flat else mn[g])
    for i in range(n):
        for g in range(LANES):
            L[i, g] = zero if mx[g] == mn0[g] else L[i, g]


@exact
def qx_lanes(x, nmax, L, laux, scale, st):
    """make_qx_quants (rmse_type 1, no importance weights) for each lane: levels L (n, LANES) in
    [0, 2·nmax) and scale (LANES,) with x ≈ scale·(L - nmax); all-zero lanes get 0 and 0."""
    n = x.shape[0]
    fmax = np.float32(nmax)
    amax, mx, iscale, best, slx, sl2, take = st[0], st[1], st[2], st[3], st[4], st[5], st[6]
    for g in range(LANES):
        amax[g] = np.float32(0)
        mx[g] = np.float32(0)
    for i in range(n):
        for g in range(LANES):
            v = x[i, g]
            bigger = abs(v) > amax[g]
            amax[g] = abs(v) if bigger else amax[g]
            mx[g] = v if bigger else mx[g]
    for step in range(-10, 10):  # -10 stands for C's first pass, at iscale = -nmax/max
        if step == 0:
            continue
        for g in range(LANES):
            if step == -10:
                iscale[g] = np.float32(-nmax) / mx[g]
            else:
                iscale[g] = -(fmax + np.float32(0.1) * np.float32(step)) / mx[g]
            slx[g] = np.float32(0)
            sl2[g] = np.float32(0)
        for i in range(n):
            for g in range(LANES):
                v = x[i, g]
                l = round_clamp(iscale[g] * v, -fmax, fmax - np.float32(1))
                laux[i, g] = l
                wv = v * v
                slx[g] += wv * v * l
                sl2[g] += wv * l * l
        for g in range(LANES):
            if step == -10:
                scale[g] = slx[g] / sl2[g] if sl2[g] != np.float32(0) else np.float32(0)
                best[g] = scale[g] * slx[g]
                take[g] = np.float32(1)
            else:
                ok = sl2[g] > np.float32(0) and slx[g] * slx[g] > best[g] * sl2[g]
                take[g] = np.float32(1) if ok else np.float32(0)
                if ok:
                    scale[g] = slx[g] / sl2[g]
                    best[g] = scale[g] * slx[g]
        for i in range(n):
            for g in range(LANES):
                L[i, g] = laux[i, g] + fmax if take[g] != np.float32(0) else L[i, g]
    for g in range(LANES):
        scale[g] = scale[g] if amax[g] >= GROUP_MAX_EPS else np.float32(0)
    for i in range(n):
        for g in range(LANES):
            L[i, g] = L[i, g] if amax[g] >= GROUP_MAX_EPS else np.float32(0)


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

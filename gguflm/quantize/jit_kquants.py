"""k-quant block quantizers compiled (Q2_K .. Q6_K): the bytes of `kquants` (and of ggml's
quantize_row_*_ref), several times faster.

Each `quantize_*` maps float32 rows (N, K), K a multiple of 256, to (N, K/256*size) uint8, like
its numpy twin in `kquants`, which stays as the oracle the tests compare against. A kernel walks
the rows' super-blocks as one flat sequence (row r's blocks follow row r-1's in the output as in
the input), a tile of LANES sub-block groups at a time (four Q4_K/Q5_K super-blocks of 8 groups of
32, or two Q2_K/Q3_K/Q6_K super-blocks of 16 groups of 16), split across threads in runs of tiles.
The first call of each type in a fresh environment compiles it (seconds; see models.md), later
processes load it from numba's disk cache.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from gguflm.numba_jit import start_threads
from gguflm.quantize.jit_arith import GROUP_MAX_EPS, clamp, exact, fp16_round, nearest_int, put_fp16, round_clamp
from gguflm.quantize.jit_search import LANES, LV, SCALE, THE_MIN, TILE, W, X, q3_group, qkx2_lanes, qx_lanes

QK = 256
TASKS = 64  # runs of tiles per call: enough to balance two threads, few enough to reuse scratch


# ---------------------------------------------------------------------------- shared steps

@exact
def _tile_in(x, sb0, nsb, n, t):
    """Super-blocks sb0 .. sb0+nsb of the flat rows into tile `t` (jit_search's layout): weight i of
    group g (groups of n, in order) at X + LANES*i + g; lanes past the last super-block are zeros."""
    per = QK // n
    for g in range(LANES):
        sb = g // per
        base = (sb0 + sb) * QK + (g % per) * n
        for i in range(n):
            t[X + LANES * i + g] = x[base + i] if sb < nsb else np.float32(0)


@exact
def _runs(n_tiles):
    """(tiles per task, tasks) for `n_tiles` tiles."""
    per = max(1, (n_tiles + TASKS - 1) // TASKS)
    return per, (n_tiles + per - 1) // per


@exact
def _level(t, i, g):
    """Weight i of group g's level, as an int for the bit packing."""
    return int(t[LV + LANES * i + g])


@exact
def _requantize(t, g, n, dl, dm, lo, hi, offset):
    """C's `if (!d) continue; L = MAX(lo, MIN(hi, nearest_int((x + dm)/d))) + offset` for group g."""
    if dl == np.float32(0):
        return
    for i in range(n):
        k = LANES * i + g
        t[LV + k] = round_clamp((t[X + k] + dm) / dl, np.float32(lo), np.float32(hi)) + np.float32(offset)


@exact
def _k4_tile(x, out, sb0, nsb, size, nmax, rmin, nstep, t):
    """Q4_K/Q5_K up to the bit packing for the (at most 4) super-blocks of a tile: fp16 d and dmin
    and the 12 bytes of six-bit scales and mins written, each weight's level against them in LV."""
    _tile_in(x, sb0, nsb, 32, t)
    for g in range(LANES):
        s2 = np.float32(0)
        for i in range(32):
            s2 += t[X + LANES * i + g] * t[X + LANES * i + g]
        av = np.sqrt(s2 / np.float32(32))
        for i in range(32):
            t[W + LANES * i + g] = av + abs(t[X + LANES * i + g])
    qkx2_lanes(t, 32, nmax, rmin, np.float32(0.1), nstep, False)
    for b in range(nsb):
        ob = (sb0 + b) * size
        g0 = 8 * b
        max_scale = np.float32(0)
        max_min = np.float32(0)
        for j in range(8):
            if t[SCALE + g0 + j] > max_scale:
                max_scale = t[SCALE + g0 + j]
            if t[THE_MIN + g0 + j] > max_min:
                max_min = t[THE_MIN + g0 + j]
        inv_scale = np.float32(63) / max_scale if max_scale > np.float32(0) else np.float32(0)
        inv_min = np.float32(63) / max_min if max_min > np.float32(0) else np.float32(0)
        hd, d = fp16_round(max_scale / np.float32(63))
        hm, dmin = fp16_round(max_min / np.float32(63))
        put_fp16(out, ob, hd)
        put_fp16(out, ob + 2, hm)
        sc = ob + 4
        for j in range(8):
            ls = min(63, nearest_int(inv_scale * t[SCALE + g0 + j]) & 0xFF)  # C stores the int in a uint8, then MIN 63
            lm = min(63, nearest_int(inv_min * t[THE_MIN + g0 + j]) & 0xFF)
            if j < 4:
                out[sc + j] = np.uint8(ls)
                out[sc + j + 4] = np.uint8(lm)
            else:
                out[sc + j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
                out[sc + j - 4] |= np.uint8((ls >> 4) << 6)
                out[sc + j] |= np.uint8((lm >> 4) << 6)
            # get_scale_min_k4 reads back the six-bit ls, lm just packed
            _requantize(t, g0 + j, 32, d * np.float32(ls), dmin * np.float32(lm), 0, nmax, 0)


@exact
def _pack_2bit(out, o, t, g0):
    """The 256 levels 0..3 of the super-block whose 16 groups start at lane g0 into 64 bytes at
    out[o]: byte 32h + l holds weights 128h + l, +32, +64, +96 from the low bits up (weight j is
    level j%16 of group j//16)."""
    for h in range(2):
        for l in range(32):
            v = 0
            for k in range(4):
                j = 128 * h + 32 * k + l
                v |= _level(t, j % 16, g0 + j // 16) << (2 * k)
            out[o + 32 * h + l] = np.uint8(v)


@exact
def _tiles(n_sb, per_tile):
    """(tiles, tiles per task, tasks) for n_sb super-blocks, per_tile to a tile."""
    n_tiles = (n_sb + per_tile - 1) // per_tile
    per, tasks = _runs(n_tiles)
    return n_tiles, per, tasks


# ---------------------------------------------------------------------------- kernels

@exact(parallel=True)
def _q4_k(x, out):
    n_sb = x.size // QK
    n_tiles, per, tasks = _tiles(n_sb, LANES // 8)
    for task in prange(tasks):
        t = np.empty(TILE, np.float32)
        for tile in range(task * per, min(n_tiles, (task + 1) * per)):
            sb0 = tile * (LANES // 8)
            nsb = min(LANES // 8, n_sb - sb0)
            _k4_tile(x, out, sb0, nsb, 144, 15, np.float32(-1), 20, t)
            for b in range(nsb):
                q = (sb0 + b) * 144 + 16
                for c in range(4):  # 32 bytes per 64 weights: low nibble weight 64c + l, high 64c + 32 + l
                    for l in range(32):
                        out[q + 32 * c + l] = np.uint8(_level(t, l, 8 * b + 2 * c) | (_level(t, l, 8 * b + 2 * c + 1) << 4))


@exact(parallel=True)
def _q5_k(x, out):
    n_sb = x.size // QK
    n_tiles, per, tasks = _tiles(n_sb, LANES // 8)
    for task in prange(tasks):
        t = np.empty(TILE, np.float32)
        for tile in range(task * per, min(n_tiles, (task + 1) * per)):
            sb0 = tile * (LANES // 8)
            nsb = min(LANES // 8, n_sb - sb0)
            _k4_tile(x, out, sb0, nsb, 176, 31, np.float32(-0.5), 15, t)
            for b in range(nsb):
                qh = (sb0 + b) * 176 + 16
                qs = qh + 32
                for l in range(32):
                    out[qh + l] = 0
                for c in range(4):  # 5th bit of weight 64c + l is bit 2c of qh[l], of 64c + 32 + l bit 2c + 1
                    for l in range(32):
                        l1 = _level(t, l, 8 * b + 2 * c)
                        l2 = _level(t, l, 8 * b + 2 * c + 1)
                        out[qh + l] |= np.uint8(((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)))
                        out[qs + 32 * c + l] = np.uint8((l1 & 0xF) | ((l2 & 0xF) << 4))


@exact
def _q6_k_block(out, o, t, g0):
    """One Q6_K super-block from its 16 groups' search (lanes g0 .. g0+16)."""
    max_scale = np.float32(0)
    max_abs = np.float32(0)
    for g in range(g0, g0 + 16):
        if abs(t[SCALE + g]) > max_abs:
            max_abs = abs(t[SCALE + g])
            max_scale = t[SCALE + g]
    if max_abs < GROUP_MAX_EPS:
        for k in range(210):
            out[o + k] = 0
        return
    iscale = np.float32(-128) / max_scale
    hd, d = fp16_round(np.float32(1) / iscale)
    put_fp16(out, o + 208, hd)
    for g in range(16):
        sc = min(127, nearest_int(iscale * t[SCALE + g0 + g]))
        out[o + 192 + g] = np.uint8(sc & 0xFF)
        _requantize(t, g0 + g, 16, d * np.float32(sc), np.float32(0), -32, 31, 32)
    for h in range(2):  # weight 128h + 32k + l: low nibble in ql, high bit pair in qh
        for l in range(32):
            j = 128 * h + l
            q1, q2 = _level(t, j % 16, g0 + j // 16), _level(t, (j + 32) % 16, g0 + (j + 32) // 16)
            q3, q4 = _level(t, (j + 64) % 16, g0 + (j + 64) // 16), _level(t, (j + 96) % 16, g0 + (j + 96) // 16)
            out[o + 64 * h + l] = np.uint8((q1 & 0xF) | ((q3 & 0xF) << 4))
            out[o + 64 * h + l + 32] = np.uint8((q2 & 0xF) | ((q4 & 0xF) << 4))
            out[o + 128 + 32 * h + l] = np.uint8((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6))


@exact(parallel=True)
def _q6_k(x, out):
    n_sb = x.size // QK
    n_tiles, per, tasks = _tiles(n_sb, LANES // 16)
    for task in prange(tasks):
        t = np.empty(TILE, np.float32)
        for tile in range(task * per, min(n_tiles, (task + 1) * per)):
            sb0 = tile * (LANES // 16)
            nsb = min(LANES // 16, n_sb - sb0)
            _tile_in(x, sb0, nsb, 16, t)
            qx_lanes(t, 16, 32)
            for b in range(nsb):
                _q6_k_block(out, (sb0 + b) * 210, t, 16 * b)


@exact
def _q3_k_block(out, o, t, g0, scale, xg, lg):
    """One Q3_K super-block: the 16 group searches (scalar make_q3_quants), scales, levels, bits."""
    max_scale = np.float32(0)
    amax = np.float32(0)
    for g in range(16):
        for i in range(16):
            xg[i] = t[X + LANES * i + g0 + g]
        scale[g] = q3_group(xg, 4, lg)
        for i in range(16):
            t[LV + LANES * i + g0 + g] = np.float32(lg[i])
        if abs(scale[g]) > amax:
            amax = abs(scale[g])
            max_scale = scale[g]
    for k in range(12):
        out[o + 96 + k] = 0
    if max_scale != np.float32(0):
        iscale = np.float32(-32) / max_scale
        for g in range(16):
            l = clamp(np.int8(nearest_int(iscale * scale[g])), -32, 31) + 32
            if g < 8:
                out[o + 96 + g] = np.uint8(l & 0xF)
            else:
                out[o + 96 + g - 8] |= np.uint8((l & 0xF) << 4)
            out[o + 96 + 8 + g % 4] |= np.uint8((l >> 4) << (2 * (g // 4)))
        hd, d = fp16_round(np.float32(1) / iscale)
    else:
        hd, d = fp16_round(np.float32(0))
    put_fp16(out, o + 108, hd)
    for g in range(16):
        b = np.int64(out[o + 96 + g % 8])  # uint8 mixed with int64 would type as float64
        lo = b & 0xF if g < 8 else b >> 4
        sc = (lo | (((np.int64(out[o + 104 + g % 4]) >> (2 * (g // 4))) & 3) << 4)) - 32
        _requantize(t, g0 + g, 16, d * np.float32(sc), np.float32(0), -4, 3, 4)
    for k in range(32):
        out[o + k] = 0
    for j in range(QK):  # the high bit of weight j is bit j/32 of hmask[j%32]
        k = LV + LANES * (j % 16) + g0 + j // 16
        if t[k] > np.float32(3):
            out[o + j % 32] |= np.uint8(1 << (j // 32))
            t[k] -= np.float32(4)
    _pack_2bit(out, o + 32, t, g0)


@exact(parallel=True)
def _q3_k(x, out):
    n_sb = x.size // QK
    n_tiles, per, tasks = _tiles(n_sb, LANES // 16)
    for task in prange(tasks):
        t = np.empty(TILE, np.float32)
        lg = np.empty(16, np.int32)
        xg = np.empty(16, np.float32)
        scale = np.empty(16, np.float32)
        for tile in range(task * per, min(n_tiles, (task + 1) * per)):
            sb0 = tile * (LANES // 16)
            nsb = min(LANES // 16, n_sb - sb0)
            _tile_in(x, sb0, nsb, 16, t)
            for b in range(nsb):
                _q3_k_block(out, (sb0 + b) * 110, t, 16 * b, scale, xg, lg)


@exact
def _q2_k_block(out, o, t, g0):
    """One Q2_K super-block from its 16 groups' search (lanes g0 .. g0+16)."""
    max_scale = np.float32(0)
    max_min = np.float32(0)
    for g in range(g0, g0 + 16):
        if t[SCALE + g] > max_scale:
            max_scale = t[SCALE + g]
        if t[THE_MIN + g] > max_min:
            max_min = t[THE_MIN + g]
    if max_scale > np.float32(0):
        iscale = np.float32(15) / max_scale
        for g in range(16):
            out[o + g] = np.uint8(nearest_int(iscale * t[SCALE + g0 + g]) & 0xFF)
        hd, d = fp16_round(max_scale / np.float32(15))
    else:
        for g in range(16):
            out[o + g] = 0
        hd, d = fp16_round(np.float32(0))
    if max_min > np.float32(0):
        iscale = np.float32(15) / max_min
        for g in range(16):
            out[o + g] |= np.uint8((nearest_int(iscale * t[THE_MIN + g0 + g]) << 4) & 0xFF)
        hm, dmin = fp16_round(max_min / np.float32(15))
    else:
        hm, dmin = fp16_round(np.float32(0))
    put_fp16(out, o + 80, hd)
    put_fp16(out, o + 82, hm)
    for g in range(16):
        b = np.int64(out[o + g])
        _requantize(t, g0 + g, 16, d * np.float32(b & 0xF), dmin * np.float32(b >> 4), 0, 3, 0)
    _pack_2bit(out, o + 16, t, g0)


@exact(parallel=True)
def _q2_k(x, out):
    n_sb = x.size // QK
    n_tiles, per, tasks = _tiles(n_sb, LANES // 16)
    for task in prange(tasks):
        t = np.empty(TILE, np.float32)
        for tile in range(task * per, min(n_tiles, (task + 1) * per)):
            sb0 = tile * (LANES // 16)
            nsb = min(LANES // 16, n_sb - sb0)
            _tile_in(x, sb0, nsb, 16, t)
            for k in range(16 * LANES):
                t[W + k] = abs(t[X + k])
            qkx2_lanes(t, 16, 3, np.float32(-0.5), np.float32(0.1), 15, True)
            for b in range(nsb):
                _q2_k_block(out, (sb0 + b) * 84, t, 16 * b)


# ---------------------------------------------------------------------------- entry points

def _run(kernel, rows: np.ndarray, size: int) -> np.ndarray:
    start_threads()  # numba's thread pool as the CPU backend starts it
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n = rows.shape[0]
    out = np.empty(rows.size // QK * size, dtype=np.uint8)
    kernel(rows.reshape(-1), out)
    return out.reshape(n, -1)


def quantize_q2_k(rows: np.ndarray) -> np.ndarray:
    """Q2_K, as `kquants.quantize_q2_k` (84 bytes per 256 weights)."""
    return _run(_q2_k, rows, 84)


def quantize_q3_k(rows: np.ndarray) -> np.ndarray:
    """Q3_K, as `kquants.quantize_q3_k` (110 bytes per 256 weights)."""
    return _run(_q3_k, rows, 110)


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """Q4_K, as `kquants.quantize_q4_k` (144 bytes per 256 weights)."""
    return _run(_q4_k, rows, 144)


def quantize_q5_k(rows: np.ndarray) -> np.ndarray:
    """Q5_K, as `kquants.quantize_q5_k` (176 bytes per 256 weights)."""
    return _run(_q5_k, rows, 176)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """Q6_K, as `kquants.quantize_q6_k` (210 bytes per 256 weights)."""
    return _run(_q6_k, rows, 210)

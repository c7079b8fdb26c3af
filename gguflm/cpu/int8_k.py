"""Integer row dots of the k-quants (Q2_K to Q6_K) with x rounded to 8 bits per 32 values, as
`int8` does for the legacy formats (ggml rounds x per 256 for these, `q8_K`; per 32 is the finer
rounding, and one x serves every format of a model).

A superblock is 8 blocks of 32 weights, each block's codes multiplied unsigned with x's (`udot8`):
- Q4_K / Q5_K: w = (d * sc_i) * q - dmin * m_i for block i; the 6-bit scales and minimums are decoded
  as one vector per superblock, the minimum's part taken once per superblock as (dmin * m) times each
  block's sum of the rounded x (`int8.block_totals`, exact) in 8 lanes.
- Q6_K, Q3_K: w = (d * sc) * (q - 32) (Q3_K: q - 4) per 16 weights; Q2_K: (d * sc) * q - dmin * m.
  A block's two scales meet lanes 0-3 and 4-7 of its dot (the sums of weights 0-15 and 16-31,
  `_sub16_row`), the offset taken away as `int8.offset_sums`, Q2_K's minimum as (dmin * m) times
  each 16's sum of the rounded x (`int8.block_totals`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from gguflm.cpu.int8 import (F32, I8, I16, I32, V8F, arrays_are, dot8, fmuladd8, hsum, iq4_levels, lanes, nibble_codes,
                             row_pointers, row_starts, splat, udot8, x_ok)
from gguflm.cpu.jit import f16_value


def _const(ty, values):
    return ir.Constant(ir.VectorType(ty, len(values)), list(values))


def _shift(builder, v, by: int):
    """v (<32 x i8>) shifted left by `by` bits (right where negative)."""
    if by > 0:
        return builder.shl(v, _const(I8, [by] * 32))
    return builder.lshr(v, _const(I8, [-by] * 32)) if by < 0 else v


def _scales_and_mins(builder, b):
    """Q4_K's 8 six-bit scales and 8 minimums from a superblock's 12 bytes `b` (<12 x i8>), each as
    <8 x float> (ggml's get_scale_min_k4): blocks 0-3 the low 6 bits of bytes 0-3 (scales) and 4-7
    (minimums); blocks 4-7 a nibble of bytes 8-11 with the top 2 bits of bytes 0-3 / 4-7 above it."""
    zeros = ir.Constant(b.type, [0] * 12)
    low_mask = _const(I8, [63] * 4 + [15] * 4)

    def decoded(first, shift):  # first: 0 (scales) or 4 (minimums)
        low = builder.shuffle_vector(b, b, lanes([first + j for j in range(4)] + [8, 9, 10, 11]))
        low = builder.and_(builder.lshr(low, _const(I8, [0] * 4 + [shift] * 4)), low_mask)
        top = builder.shuffle_vector(b, zeros, lanes([12] * 4 + [first + j for j in range(4)]))
        top = builder.shl(builder.lshr(top, _const(I8, [6] * 8)), _const(I8, [4] * 8))
        return builder.uitofp(builder.or_(low, top), V8F)

    return decoded(0, 0), decoded(4, 4)


def _vectors(builder, ptr, ty, width: int):
    return builder.bitcast(ptr, ir.VectorType(ty, width).as_pointer())


def _indexer(builder):
    """at(i, k, plus) -> IR of i * k + plus (i an IR integer, k and plus constants)."""

    def at(value, k: int, plus: int = 0):
        return builder.add(builder.mul(value, ir.Constant(value.type, k)), ir.Constant(value.type, plus))

    return at


def _k4_row(fifth: bool):
    """The row-dot intrinsic of Q5_K (`fifth`) or Q4_K."""

    def typer(typingctx, qs, qh, scales, dm, r, xq, xd, xt, t):
        if not (arrays_are((qs, 4, types.uint8), (qh, 3, types.uint8), (scales, 3, types.uint8), (dm, 3, types.int16),
                           (xt, 2, types.float32)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
            return None

        def codegen(context, builder, signature, args):
            planes = (0, 1, 2, 3) if fifth else (0, 2, 3)  # Q4_K's stand-in qh is never touched
            w = row_starts(context, builder, [signature.args[i] for i in planes], [args[i] for i in planes], args[4], r)
            w_qs, w_sc, w_dm = w[0], w[-2], w[-1]
            x_q, x_d, x_t = row_starts(context, builder, signature.args[5:8], args[5:8], args[8], t)
            x_q, x_d, x_t = _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8), _vectors(builder, x_t, F32, 8)
            fmuladd = fmuladd8(builder)
            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(3)]  # [2]: minimums
            n_sb = builder.extract_value(context.make_array(qs)(context, builder, args[0]).shape, 1)
            at = _indexer(builder)

            with cgutils.for_range(builder, n_sb) as loop:
                s = loop.index
                b = builder.load(_vectors(builder, builder.gep(w_sc, [at(s, 12)]), I8, 12), align=1)
                dm2 = f16_value(builder, builder.load(_vectors(builder, builder.gep(w_dm, [at(s, 2)]), I16, 2), align=2))
                d = splat(builder, builder.extract_element(dm2, ir.Constant(I32, 0)), 8)
                dmin = splat(builder, builder.extract_element(dm2, ir.Constant(I32, 1)), 8)
                sc, m = _scales_and_mins(builder, b)
                scale = builder.fmul(builder.fmul(d, sc), builder.load(builder.gep(x_d, [s]), align=4))
                low = builder.fmul(dmin, m)
                builder.store(builder.call(fmuladd, [low, builder.load(builder.gep(x_t, [s]), align=4),
                                                      builder.load(accs[2])]), accs[2])
                q4 = _vectors(builder, builder.gep(w_qs, [at(s, 128)]), I8, 32)
                hb = builder.load(_vectors(builder, builder.gep(w[1], [at(s, 32)]), I8, 32), align=1) if fifth else None
                for i in range(8):
                    q = builder.load(builder.gep(q4, [ir.Constant(I32, i // 2)]), align=1)
                    codes = builder.and_(q, _const(I8, [15] * 32)) if i % 2 == 0 else builder.lshr(q, _const(I8, [4] * 32))
                    if fifth:  # bit i of hb moved to bit 4 (a shift and a mask: `vpsllw` / `vpsrlw`, `vpand`)
                        codes = builder.or_(codes, builder.and_(_shift(builder, hb, 4 - i), _const(I8, [16] * 32)))
                    xb = builder.load(builder.gep(x_q, [at(s, 8, i)]), align=1)
                    dot = builder.sitofp(udot8(builder, codes, xb), V8F)
                    lane = builder.shuffle_vector(scale, scale, lanes([i] * 8))
                    builder.store(builder.call(fmuladd, [dot, lane, builder.load(accs[i % 2])]), accs[i % 2])
            total = hsum(builder, builder.fadd(builder.load(accs[0]), builder.load(accs[1])))
            return builder.fsub(total, hsum(builder, builder.load(accs[2])))

        return types.float32(qs, qh, scales, dm, r, xq, xd, xt, t), codegen

    typer.__name__ = typer.__qualname__ = "q5_k_row" if fifth else "q4_k_row"
    return intrinsic(typer)


q4_k_row = _k4_row(False)
q5_k_row = _k4_row(True)
q4_k_row.__doc__ = q5_k_row.__doc__ = """Row r of a Q4_K / Q5_K matrix (qs (N, S, 4, 32) uint8, qh (N, S, 32) uint8 fifth
bits (any (1, 1, 32) stand-in for Q4_K), scales (N, S, 12) uint8, dm (N, S, 2) int16 fp16 d, dmin) times
row t of x rounded to 8 bits (xq (T, 8S, 32) int8, xd (T, 8S) fp32, xt (T, 8S) fp32 `block_totals` per 32):
sum over blocks of (d * sc * xd) * dot - (dmin * m) * xt, fp32."""


V16F = ir.VectorType(F32, 16)


def _sub16_row(builder, n_sb, x_q, x_d, x_o, sub_scales, codes, low=None):
    """IR of the row dot of a superblock format whose blocks of 32 have two 16-weight scales (Q6_K,
    Q3_K, Q2_K): sum over superblocks s and blocks k < 8 of (scale * xd) * dot, a block's two scales
    meeting lanes 0-3 and 4-7 of its dot. x_q, x_d, x_o: x's row as vector pointers (x_o None: no offset
    to take away); sub_scales(s) -> <16 x float> the weight's scale of each sub-block; codes(s, k) ->
    <32 x i8> block k's unsigned codes. `low`: (mins(s) -> <16 x float>, x_t16 pointer to <16 x float>
    sums of the rounded x per 16), whose products are taken away."""
    fmuladd = fmuladd8(builder)
    fmuladd16 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16F, [V16F] * 3), "llvm.fmuladd.v16f32")
    accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(2)]
    mins = cgutils.alloca_once_value(builder, ir.Constant(V16F, [0.0] * 16))
    at = _indexer(builder)
    with cgutils.for_range(builder, n_sb) as loop:
        s = loop.index
        xd8 = builder.load(builder.gep(x_d, [s]), align=4)
        scale = builder.fmul(sub_scales(s), builder.shuffle_vector(xd8, xd8, lanes([j // 2 for j in range(16)])))
        if low is not None:
            m = builder.call(fmuladd16, [low[0](s), builder.load(builder.gep(low[1], [s]), align=4), builder.load(mins)])
            builder.store(m, mins)
        for k in range(8):
            dot = udot8(builder, codes(s, k), builder.load(builder.gep(x_q, [at(s, 8, k)]), align=1))
            if x_o is not None:
                dot = builder.sub(dot, builder.load(builder.gep(x_o, [at(s, 8, k)]), align=4))
            lane = builder.shuffle_vector(scale, scale, lanes([2 * k] * 4 + [2 * k + 1] * 4))
            builder.store(builder.call(fmuladd, [builder.sitofp(dot, V8F), lane, builder.load(accs[k % 2])]), accs[k % 2])
    total = hsum(builder, builder.fadd(builder.load(accs[0]), builder.load(accs[1])))
    if low is None:
        return total
    m = builder.load(mins)
    halves = builder.fadd(builder.shuffle_vector(m, m, lanes(range(8))), builder.shuffle_vector(m, m, lanes(range(8, 16))))
    return builder.fsub(total, hsum(builder, halves))


@intrinsic
def q6_k_row(typingctx, ql, qh, scales, d, r, xq, xd, xo, t):
    """Row r of a Q6_K matrix (ql (N, S, 2, 64) uint8, qh (N, S, 2, 32) uint8, scales (N, S, 16) int8,
    d (N, S) int16 fp16 bits) times row t of x rounded to 8 bits (xq, xd as q4_k_row; xo (T, 8S, 8) int32
    `offset_sums` of 32): sum over 16-weight sub-blocks of (d * sc * xd) * sum (q - 32) * xq, fp32."""
    if not (arrays_are((ql, 4, types.uint8), (qh, 4, types.uint8), (scales, 3, types.int8), (d, 2, types.int16),
                       (xo, 3, types.int32)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        (w_ql, w_qh, w_sc, w_d), (x_q, x_d, x_o) = row_pointers(context, builder, signature, args, 4)
        w_ql, w_qh = _vectors(builder, w_ql, I8, 32), _vectors(builder, w_qh, I8, 32)
        at = _indexer(builder)

        def sub_scales(s):
            dd = splat(builder, f16_value(builder, builder.load(builder.gep(w_d, [s]))), 16)
            sc = builder.load(_vectors(builder, builder.gep(w_sc, [at(s, 16)]), I8, 16), align=1)
            return builder.fmul(dd, builder.sitofp(sc, V16F))

        def codes(s, k):  # weight 128h + 32g + l: nibble g // 2 of ql[64h + 32 (g % 2) + l], bits 2g, 2g + 1 of qh[32h + l]
            h, g = divmod(k, 4)
            q = builder.load(builder.gep(w_ql, [at(s, 4, 2 * h + g % 2)]), align=1)
            hb = builder.load(builder.gep(w_qh, [at(s, 2, h)]), align=1)
            low = builder.and_(q, _const(I8, [15] * 32)) if g < 2 else builder.lshr(q, _const(I8, [4] * 32))
            top = _shift(builder, builder.and_(hb, _const(I8, [3 << (2 * g)] * 32)), 4 - 2 * g)  # to bits 4, 5
            return builder.or_(low, top)

        n_sb = builder.extract_value(context.make_array(ql)(context, builder, args[0]).shape, 1)
        return _sub16_row(builder, n_sb, _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8),
                          _vectors(builder, x_o, I32, 8), sub_scales, codes)

    return types.float32(ql, qh, scales, d, r, xq, xd, xo, t), codegen


@intrinsic
def q3_k_row(typingctx, qs, hmask, scales, d, r, xq, xd, xo, t):
    """Row r of a Q3_K matrix (qs (N, S, 2, 32) uint8 low bits, hmask (N, S, 32) uint8 third bits, scales
    (N, S, 12) uint8, d (N, S) int16 fp16 bits) times row t of x rounded to 8 bits (xq, xd as q4_k_row;
    xo (T, 8S, 8) int32 `offset_sums` of 4): sum over 16-weight sub-blocks of (d * (sc - 32) * xd) *
    sum (q - 4) * xq, fp32."""
    if not (arrays_are((qs, 4, types.uint8), (hmask, 3, types.uint8), (scales, 3, types.uint8), (d, 2, types.int16),
                       (xo, 3, types.int32)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        (w_qs, w_hm, w_sc, w_d), (x_q, x_d, x_o) = row_pointers(context, builder, signature, args, 4)
        w_qs, w_hm = _vectors(builder, w_qs, I8, 32), _vectors(builder, w_hm, I8, 32)
        at = _indexer(builder)
        v16 = ir.VectorType(I8, 16)

        def sub_scales(s):  # scale i: nibble i // 8 of byte i % 8, bits 2 (i // 4), +1 of byte 8 + i % 4 above it
            b = builder.load(_vectors(builder, builder.gep(w_sc, [at(s, 12)]), I8, 12), align=1)
            low = builder.shuffle_vector(b, b, lanes(list(range(8)) * 2))
            low = builder.and_(builder.lshr(low, _const(I8, [0] * 8 + [4] * 8)), _const(I8, [15] * 16))
            high = builder.shuffle_vector(b, b, lanes([8, 9, 10, 11] * 4))
            high = builder.and_(builder.lshr(high, _const(I8, [2 * (i // 4) for i in range(16)])), _const(I8, [3] * 16))
            sc = builder.sub(builder.or_(low, builder.shl(high, _const(I8, [4] * 16))), ir.Constant(v16, [32] * 16))
            dd = splat(builder, f16_value(builder, builder.load(builder.gep(w_d, [s]))), 16)
            return builder.fmul(dd, builder.sitofp(sc, V16F))

        def codes(s, k):  # weight 128h + 32j + l: bits 2j, 2j + 1 of qs[32h + l], bit 4h + j of hmask[l] as 4
            h, j = divmod(k, 4)
            q = builder.load(builder.gep(w_qs, [at(s, 2, h)]), align=1)
            hm = builder.load(builder.gep(w_hm, [s]), align=1)
            low = builder.and_(_shift(builder, q, -2 * j), _const(I8, [3] * 32))
            return builder.or_(low, builder.and_(_shift(builder, hm, 2 - (4 * h + j)), _const(I8, [4] * 32)))

        n_sb = builder.extract_value(context.make_array(qs)(context, builder, args[0]).shape, 1)
        return _sub16_row(builder, n_sb, _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8),
                          _vectors(builder, x_o, I32, 8), sub_scales, codes)

    return types.float32(qs, hmask, scales, d, r, xq, xd, xo, t), codegen


@intrinsic
def q2_k_row(typingctx, qs, scales, dm, r, xq, xd, xt, t):
    """Row r of a Q2_K matrix (qs (N, S, 2, 32) uint8, scales (N, S, 16) uint8 (scale low nibble, minimum
    high), dm (N, S, 2) int16 fp16 d, dmin) times row t of x rounded to 8 bits (xq, xd as q4_k_row; xt
    (T, 16S) fp32 `block_totals` per 16): sum over 16-weight sub-blocks of (d * sc * xd) * sum q * xq - (dmin *
    m) * xt, fp32."""
    if not (arrays_are((qs, 4, types.uint8), (scales, 3, types.uint8), (dm, 3, types.int16), (xt, 2, types.float32))
            and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        (w_qs, w_sc, w_dm), (x_q, x_d, x_t) = row_pointers(context, builder, signature, args, 3)
        w_qs = _vectors(builder, w_qs, I8, 32)
        at = _indexer(builder)
        v16 = ir.VectorType(I8, 16)

        def pair(s):
            return f16_value(builder, builder.load(_vectors(builder, builder.gep(w_dm, [at(s, 2)]), I16, 2), align=2))

        def nibbles(s, high: bool):
            b = builder.load(_vectors(builder, builder.gep(w_sc, [at(s, 16)]), I8, 16), align=1)
            nibble = builder.lshr(b, ir.Constant(v16, [4] * 16)) if high else builder.and_(b, ir.Constant(v16, [15] * 16))
            return builder.uitofp(nibble, V16F)

        def sub_scales(s):
            return builder.fmul(splat(builder, builder.extract_element(pair(s), ir.Constant(I32, 0)), 16), nibbles(s, False))

        def mins(s):
            return builder.fmul(splat(builder, builder.extract_element(pair(s), ir.Constant(I32, 1)), 16), nibbles(s, True))

        def codes(s, k):  # weight 128h + 32j + l: bits 2j, 2j + 1 of qs[32h + l]
            h, j = divmod(k, 4)
            q = builder.load(builder.gep(w_qs, [at(s, 2, h)]), align=1)
            return builder.and_(_shift(builder, q, -2 * j), _const(I8, [3] * 32))

        n_sb = builder.extract_value(context.make_array(qs)(context, builder, args[0]).shape, 1)
        return _sub16_row(builder, n_sb, _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8), None,
                          sub_scales, codes, (mins, _vectors(builder, x_t, F32, 16)))

    return types.float32(qs, scales, dm, r, xq, xd, xt, t), codegen


@intrinsic
def iq4_xs_row(typingctx, qs, scales_l, scales_h, d, r, xq, xd, t):
    """Row r of an IQ4_XS matrix (qs (N, S, 8, 16) uint8, a block's 16 bytes as Q4_0's; scales_l (N, S, 4)
    uint8 and scales_h (N, S) int16, the low 4 and high 2 bits of each block's ls; d (N, S) int16 fp16 bits)
    times row t of x rounded to 8 bits (xq, xd as q4_k_row): sum over blocks of (d * (ls - 32) * xd) *
    sum level(code) * xq, the levels signed int8 (`iq4_levels`), fp32."""
    if not (arrays_are((qs, 4, types.uint8), (scales_l, 3, types.uint8), (scales_h, 2, types.int16), (d, 2, types.int16))
            and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        (w_qs, w_sl, w_sh, w_d), (x_q, x_d) = row_pointers(context, builder, signature, args, 4)
        w_qs, x_q, x_d = _vectors(builder, w_qs, I8, 16), _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8)
        fmuladd = fmuladd8(builder)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(2)]
        n_sb = builder.extract_value(context.make_array(qs)(context, builder, args[0]).shape, 1)
        at = _indexer(builder)
        v8i = ir.VectorType(I32, 8)
        with cgutils.for_range(builder, n_sb) as loop:
            s = loop.index
            sl = builder.load(_vectors(builder, builder.gep(w_sl, [at(s, 4)]), I8, 4), align=1)
            low = builder.zext(builder.shuffle_vector(sl, sl, lanes([i // 2 for i in range(8)])), v8i)
            low = builder.and_(builder.lshr(low, _const(I32, [4 * (i % 2) for i in range(8)])), _const(I32, [15] * 8))
            high = splat(builder, builder.zext(builder.load(builder.gep(w_sh, [s])), I32), 8)
            high = builder.and_(builder.lshr(high, _const(I32, [2 * i for i in range(8)])), _const(I32, [3] * 8))
            ls = builder.sub(builder.or_(low, builder.shl(high, _const(I32, [4] * 8))), _const(I32, [32] * 8))
            dd = splat(builder, f16_value(builder, builder.load(builder.gep(w_d, [s]))), 8)
            scale = builder.fmul(builder.fmul(dd, builder.sitofp(ls, V8F)), builder.load(builder.gep(x_d, [s]), align=4))
            for i in range(8):
                q = builder.load(builder.gep(w_qs, [at(s, 8, i)]), align=1)
                xb = builder.load(builder.gep(x_q, [at(s, 8, i)]), align=1)
                dot = builder.sitofp(dot8(builder, iq4_levels(builder, nibble_codes(builder, q, None)), xb), V8F)
                lane = builder.shuffle_vector(scale, scale, lanes([i] * 8))
                builder.store(builder.call(fmuladd, [dot, lane, builder.load(accs[i % 2])]), accs[i % 2])
        return hsum(builder, builder.fadd(builder.load(accs[0]), builder.load(accs[1])))

    return types.float32(qs, scales_l, scales_h, d, r, xq, xd, t), codegen

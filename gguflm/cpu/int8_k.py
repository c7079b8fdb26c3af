"""Integer row dots of the k-quants (Q4_K, Q5_K, Q6_K) with x rounded to 8 bits per 32 values, as
`int8` does for the legacy formats (ggml rounds x per 256 for these, `q8_K`; per 32 is the finer
rounding, and one x serves every format of a model).

A superblock is 8 blocks of 32 weights, each block's codes multiplied unsigned with x's (`udot8`):
- Q4_K / Q5_K: w = (d * sc_i) * q - dmin * m_i for block i; the 6-bit scales and minimums are decoded
  as one vector per superblock, the minimum's part taken once per superblock as (dmin * m) times each
  block's sum of the rounded x (`int8.block_totals`, exact) in 8 lanes.
- Q6_K: w = (d * sc) * (q - 32) per 16 weights: a block's two scales meet lanes 0-3 and 4-7 of its
  dot (the sums of weights 0-15 and 16-31), the 32 taken away as `int8.offset_sums`.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from gguflm.cpu.int8 import F32, I8, I16, I32, V8F, c_array, fmuladd8, hsum, lanes, row_starts, splat, udot8, x_ok
from gguflm.cpu.jit import f16_value


def _const(ty, values):
    return ir.Constant(ir.VectorType(ty, len(values)), list(values))


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
        if not (c_array(qs, 4, (types.uint8,)) and c_array(qh, 3, (types.uint8,)) and c_array(scales, 3, (types.uint8,))
                and c_array(dm, 3, (types.int16,)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)
                and c_array(xt, 2, (types.float32,))):
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
                        top = builder.shl(hb, _const(I8, [4 - i] * 32)) if i < 4 else builder.lshr(hb, _const(I8, [i - 4] * 32))
                        codes = builder.or_(codes, builder.and_(top, _const(I8, [16] * 32)))
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
row t of x rounded to 8 bits (xq (T, 8S, 32) int8, xd (T, 8S) fp32, xt (T, 8S) fp32 `block_totals`):
sum over blocks of (d * sc * xd) * dot - (dmin * m) * xt, fp32."""


@intrinsic
def q6_k_row(typingctx, ql, qh, scales, d, r, xq, xd, xo, t):
    """Row r of a Q6_K matrix (ql (N, S, 2, 64) uint8, qh (N, S, 2, 32) uint8, scales (N, S, 16) int8,
    d (N, S) int16 fp16 bits) times row t of x rounded to 8 bits (xq, xd as q4_k_row; xo (T, 8S, 8) int32
    `offset_sums` of 32): sum over 16-weight sub-blocks of (d * sc * xd) * sum (q - 32) * xq, fp32."""
    if not (c_array(ql, 4, (types.uint8,)) and c_array(qh, 4, (types.uint8,)) and c_array(scales, 3, (types.int8,))
            and c_array(d, 2, (types.int16,)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)
            and c_array(xo, 3, (types.int32,))):
        return None

    def codegen(context, builder, signature, args):
        w_ql, w_qh, w_sc, w_d = row_starts(context, builder, signature.args[:4], args[:4], args[4], r)
        x_q, x_d, x_o = row_starts(context, builder, signature.args[5:8], args[5:8], args[8], t)
        x_q, x_d, x_o = _vectors(builder, x_q, I8, 32), _vectors(builder, x_d, F32, 8), _vectors(builder, x_o, I32, 8)
        w_ql, w_qh = _vectors(builder, w_ql, I8, 32), _vectors(builder, w_qh, I8, 32)
        fmuladd = fmuladd8(builder)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(2)]
        n_sb = builder.extract_value(context.make_array(ql)(context, builder, args[0]).shape, 1)
        at = _indexer(builder)

        v16f = ir.VectorType(F32, 16)
        with cgutils.for_range(builder, n_sb) as loop:
            s = loop.index
            dd = splat(builder, f16_value(builder, builder.load(builder.gep(w_d, [s]))), 16)
            sc = builder.sitofp(builder.load(_vectors(builder, builder.gep(w_sc, [at(s, 16)]), I8, 16), align=1), v16f)
            xd8 = builder.load(builder.gep(x_d, [s]), align=4)
            xd16 = builder.shuffle_vector(xd8, xd8, lanes([j // 2 for j in range(16)]))
            scale = builder.fmul(builder.fmul(dd, sc), xd16)
            for h in range(2):
                qa = builder.load(builder.gep(w_ql, [at(s, 4, 2 * h)]), align=1)
                qb = builder.load(builder.gep(w_ql, [at(s, 4, 2 * h + 1)]), align=1)
                hb = builder.load(builder.gep(w_qh, [at(s, 2, h)]), align=1)
                for g in range(4):
                    q = qa if g % 2 == 0 else qb
                    low = builder.and_(q, _const(I8, [15] * 32)) if g < 2 else builder.lshr(q, _const(I8, [4] * 32))
                    top = builder.and_(hb, _const(I8, [3 << (2 * g)] * 32))  # bits 2g, 2g + 1 -> 4, 5
                    if g < 2:
                        top = builder.shl(top, _const(I8, [4 - 2 * g] * 32))
                    elif g == 3:
                        top = builder.lshr(top, _const(I8, [2] * 32))
                    k = 4 * h + g
                    xb = builder.load(builder.gep(x_q, [at(s, 8, k)]), align=1)
                    dot = builder.sub(udot8(builder, builder.or_(low, top), xb), builder.load(builder.gep(x_o, [at(s, 8, k)]), align=4))
                    lane = builder.shuffle_vector(scale, scale, lanes([2 * k] * 4 + [2 * k + 1] * 4))
                    builder.store(builder.call(fmuladd, [builder.sitofp(dot, V8F), lane, builder.load(accs[k % 2])]), accs[k % 2])
        return hsum(builder, builder.fadd(builder.load(accs[0]), builder.load(accs[1])))

    return types.float32(ql, qh, scales, d, r, xq, xd, xo, t), codegen

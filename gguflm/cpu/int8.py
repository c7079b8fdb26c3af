"""Integer dot products on activations rounded to 8 bits, as llama.cpp computes a quantized product.

x is rounded per 32-value block as ggml's `quantize_row_q8_0` rounds it (d = max|x| / 127, kept as
fp16; q = x / d to the nearest integer, halves away from zero); a weight block's codes are multiplied
with those 32 integers and summed exactly in int32, then scaled by d_w * d_x. For the formats with a
minimum (Q4_1, Q5_1) x also carries s = d * sum(q) (fp16, ggml's `q8_1`), so the minimum costs one
multiply per block.

A row's dot is written as LLVM vector code (`q8_0_row`; `q4_0_row` and the other legacy formats';
the k-quants' in `int8_k`): per block 32 int8 lanes multiplied and summed to 8 int32 partial sums
(Q8_0: widened to 16 bits and added in pairs, `vpmaddwd`; the unsigned codes of the other formats:
`vpmaddubsw` on AVX2, `udot8`, their offset taken away as x's own sums), converted and added into 8
fp32 lanes with the block's scale (one FMA), the lanes added once per row. numba's own integer
arithmetic is int64, which LLVM leaves scalar: written in numba the same scheme ran at 1.8 GB/s
(models.md, "Why numba").
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from llvmlite import ir
from numba import float32, int32, njit, types
from numba.core import cgutils
from numba.core.registry import cpu_target
from numba.extending import intrinsic

from gguflm.cpu.jit import f16_value, serial
from gguflm.quantize.jit_arith import fp16_round
from gguflm.quants.iq4_nl import KVALUES

I8, I16, I32, F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
V32 = ir.VectorType(I8, 32)
V8F = ir.VectorType(F32, 8)


def lanes(values):
    return ir.Constant(ir.VectorType(I32, len(values)), list(values))


def splat(builder, value, width: int):
    """<width x T> with every lane `value`."""
    one = builder.insert_element(ir.Constant(ir.VectorType(value.type, width), ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, one, lanes([0] * width))


def dot8(builder, a, b):
    """<8 x i32> partial sums of a_j * b_j over two <32 x i8> vectors (signed), exact: the products
    added in pairs (`vpmaddwd` on x86) and the two halves added."""
    wide = ir.VectorType(I32, 32)
    prod = builder.mul(builder.sext(a, wide), builder.sext(b, wide))
    pairs = builder.add(builder.shuffle_vector(prod, prod, lanes(range(0, 32, 2))),
                        builder.shuffle_vector(prod, prod, lanes(range(1, 32, 2))))
    return builder.add(builder.shuffle_vector(pairs, pairs, lanes(range(8))),
                       builder.shuffle_vector(pairs, pairs, lanes(range(8, 16))))


@functools.cache
def _avx2() -> bool:
    """numba compiles for an x86 CPU with AVX2 (`vpmaddubsw`); its cache is keyed by the CPU and features."""
    triple, _, features = cpu_target.target_context.codegen().magic_tuple()
    return triple.startswith(("x86_64", "i386", "i686")) and "+avx2" in features.split(",")


def udot8(builder, codes, x):
    """<8 x i32>: lane j = sum of codes_i * x_i over i = 4j .. 4j + 3, codes (<32 x i8>) in [0, 63] taken
    unsigned and x signed, exact. On AVX2 `vpmaddubsw` (products added in pairs, never saturating here:
    2 * 63 * 127 < 2^15) then `vpmaddwd` by ones; elsewhere the same sums in plain vector IR."""
    if _avx2():
        i16x16 = ir.VectorType(I16, 16)
        ub = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16x16, [V32, V32]), "llvm.x86.avx2.pmadd.ub.sw")
        wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VectorType(I32, 8), [i16x16, i16x16]),
                                            "llvm.x86.avx2.pmadd.wd")
        return builder.call(wd, [builder.call(ub, [codes, x]), ir.Constant(i16x16, [1] * 16)])
    wide = ir.VectorType(I32, 32)
    prod = builder.mul(builder.zext(codes, wide), builder.sext(x, wide))
    for width in (16, 8):
        prod = builder.add(builder.shuffle_vector(prod, prod, lanes(range(0, 2 * width, 2))),
                           builder.shuffle_vector(prod, prod, lanes(range(1, 2 * width, 2))))
    return prod


def nibble_codes(builder, q, h):
    """<32 x i8> codes of a legacy block from its 16 bytes `q` (<16 x i8>: element j low nibble of
    byte j, element j + 16 high) and, when `h` (i32) is given, its fifth bits (bit j adds 16)."""
    lo = builder.and_(q, ir.Constant(q.type, [15] * 16))
    hi = builder.lshr(q, ir.Constant(q.type, [4] * 16))
    codes = builder.shuffle_vector(lo, hi, lanes(range(32)))
    if h is None:
        return codes
    octets = builder.bitcast(h, ir.VectorType(I8, 4))  # byte j // 8 of h spread over 8 lanes
    spread = builder.shuffle_vector(octets, octets, lanes([j // 8 for j in range(32)]))
    set_ = builder.icmp_unsigned("!=", builder.and_(spread, ir.Constant(V32, [1 << (j % 8) for j in range(32)])),
                                 ir.Constant(V32, [0] * 32))
    return builder.or_(codes, builder.select(set_, ir.Constant(V32, [16] * 32), ir.Constant(V32, [0] * 32)))


def iq4_levels(builder, codes):
    """<32 x i8> of IQ4's signed levels (ggml's kvalues_iq4nl) at `codes` (<32 x i8> in [0, 15]): one
    `vpshufb` from the 16-entry table on AVX2, a chain of selects elsewhere."""
    if _avx2():
        shuf = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V32, [V32, V32]), "llvm.x86.avx2.pshuf.b")
        return builder.call(shuf, [ir.Constant(V32, list(KVALUES) * 2), codes])
    out = ir.Constant(V32, [KVALUES[0]] * 32)
    for code in range(1, 16):
        out = builder.select(builder.icmp_unsigned("==", codes, ir.Constant(V32, [code] * 32)),
                             ir.Constant(V32, [KVALUES[code]] * 32), out)
    return out


def hsum(builder, acc):
    """The 8 lanes of a <8 x float> added as a tree (halves, quarters, pairs): one order for every row."""
    width = 8
    while width > 1:
        width //= 2
        acc = builder.fadd(builder.shuffle_vector(acc, acc, lanes(range(width))),
                           builder.shuffle_vector(acc, acc, lanes(range(width, 2 * width))))
    return builder.extract_element(acc, ir.Constant(I32, 0))


def fmuladd8(builder):
    """The `llvm.fmuladd` of <8 x float> (a * b + c, one FMA where the CPU has one)."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8F, [V8F] * 3), "llvm.fmuladd.v8f32")


def c_array(ty, ndim: int, dtypes) -> bool:
    return isinstance(ty, types.Array) and ty.ndim == ndim and ty.layout == "C" and ty.dtype in dtypes


def arrays_are(*specs) -> bool:
    """Whether each (type, ndim, dtype) of `specs` is a C-contiguous array of that rank and dtype."""
    return all(c_array(ty, ndim, (dtype,)) for ty, ndim, dtype in specs)


def row_pointers(context, builder, signature, args, n_planes: int):
    """For an intrinsic called as (planes..., r, x arrays..., t): pointers to row r of each plane and to
    row t of each x array."""
    n = n_planes
    planes = row_starts(context, builder, signature.args[:n], args[:n], args[n], signature.args[n])
    xs = row_starts(context, builder, signature.args[n + 1 : -1], args[n + 1 : -1], args[-1], signature.args[-1])
    return planes, xs


def row_starts(context, builder, tys, values, row, row_ty):
    """Pointers to row `row` (element [row, 0, ...]) of each array: no view is made (a view inside a
    prange loop costs reference counting per row: 25 us a 3072-row call)."""
    r = context.cast(builder, row, row_ty, types.intp)
    zero = ir.Constant(cgutils.intp_t, 0)
    return [cgutils.get_item_pointer(context, builder, ty, context.make_array(ty)(context, builder, value),
                                     [r] + [zero] * (ty.ndim - 1)) for ty, value in zip(tys, values)]


def _row_dot(builder, nb, w, xq, xd, block, low=None):
    """IR of sum over blocks b < nb of (f16(d_w[b]) * d_x[b]) * dot_b: w the weight row's plane pointers
    (w[1] its fp16 scales), xq and xd x's row (codes, scales); `block(b, xq_b)` gives block b's <8 x i32>
    integer dot with x's codes xq_b (<32 x i8>). Blocks go eight at a time (their scales decoded as one
    vector) into two float accumulators of 8 lanes, even blocks to one and odd to the other (one fmuladd
    chain would wait on itself), the last nb % 8 into the first; added up once at the end. `low`, when
    given, is (m, s): pointers to the weight row's fp16 block minimums and x's fp32 s, whose products are
    added too (eight blocks in one vector, the rest one by one)."""
    xq = builder.bitcast(xq, V32.as_pointer())
    fmuladd = fmuladd8(builder)
    accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(3)]  # [2]: the minimums
    tail = cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0))

    def eight_of(ptr, first, ty):
        return builder.load(builder.bitcast(builder.gep(ptr, [first]), ir.VectorType(ty, 8).as_pointer()), align=2)

    def add_block(b, scale, acc):
        dot = builder.sitofp(block(b, builder.load(builder.gep(xq, [b]), align=1)), V8F)
        builder.store(builder.call(fmuladd, [dot, scale, builder.load(acc)]), acc)

    eight = ir.Constant(nb.type, 8)
    eights = builder.udiv(nb, eight)
    with cgutils.for_range(builder, eights) as loop:
        first = builder.mul(loop.index, eight)
        scales = builder.fmul(f16_value(builder, eight_of(w[1], first, I16)), eight_of(xd, first, F32))
        if low is not None:
            mins = f16_value(builder, eight_of(low[0], first, I16))
            builder.store(builder.call(fmuladd, [mins, eight_of(low[1], first, F32), builder.load(accs[2])]), accs[2])
        for i in range(8):
            lane = builder.shuffle_vector(scales, scales, lanes([i] * 8))
            add_block(builder.add(first, ir.Constant(nb.type, i)), lane, accs[i % 2])
    with cgutils.for_range(builder, nb, start=builder.mul(eights, eight)) as loop:
        b = loop.index
        scale = builder.fmul(f16_value(builder, builder.load(builder.gep(w[1], [b]))), builder.load(builder.gep(xd, [b])))
        add_block(b, splat(builder, scale, 8), accs[0])
        if low is not None:
            m = f16_value(builder, builder.load(builder.gep(low[0], [b])))
            builder.store(builder.fadd(builder.load(tail), builder.fmul(m, builder.load(builder.gep(low[1], [b])))), tail)
    total = hsum(builder, builder.fadd(builder.load(accs[0]), builder.load(accs[1])))
    if low is None:
        return total
    return builder.fadd(total, builder.fadd(hsum(builder, builder.load(accs[2])), builder.load(tail)))


def x_ok(xq, xd, t) -> bool:
    return c_array(xq, 3, (types.int8,)) and c_array(xd, 2, (types.float32,)) and isinstance(t, types.Integer)


@intrinsic
def q8_0_row(typingctx, qs, d, r, xq, xd, t):
    """Row r of a Q8_0 matrix (qs (N, nb, 32) int8, d (N, nb) int16 fp16 bits) times row t of x rounded
    to 8 bits (xq (T, nb, 32) int8, xd (T, nb) fp32): sum over blocks b of (d[r, b] * xd[t, b]) *
    sum_j qs[r, b, j] * xq[t, b, j], fp32."""
    if not (arrays_are((qs, 3, types.int8), (d, 2, types.int16)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        w, x = row_pointers(context, builder, signature, args, 2)

        def block(b, xq_b):
            return dot8(builder, builder.load(builder.gep(builder.bitcast(w[0], V32.as_pointer()), [b]), align=1), xq_b)

        nb = builder.extract_value(context.make_array(d)(context, builder, args[1]).shape, 1)
        return _row_dot(builder, nb, w, *x, block)

    return types.float32(qs, d, r, xq, xd, t), codegen


@intrinsic
def iq4_nl_row(typingctx, qs, d, r, xq, xd, t):
    """Row r of an IQ4_NL matrix (qs (N, nb, 16) uint8 as Q4_0's, d (N, nb) int16 fp16 bits) times row t of
    x rounded to 8 bits (xq, xd as q8_0_row): sum over blocks of (d_w * d_x) * sum_j level(code_j) * xq_j,
    the levels signed int8 (`iq4_levels`) multiplied as Q8_0's codes."""
    if not (arrays_are((qs, 3, types.uint8), (d, 2, types.int16)) and isinstance(r, types.Integer) and x_ok(xq, xd, t)):
        return None

    def codegen(context, builder, signature, args):
        w, x = row_pointers(context, builder, signature, args, 2)

        def block(b, xq_b):
            q = builder.load(builder.gep(builder.bitcast(w[0], ir.VectorType(I8, 16).as_pointer()), [b]), align=1)
            return dot8(builder, iq4_levels(builder, nibble_codes(builder, q, None)), xq_b)

        nb = builder.extract_value(context.make_array(d)(context, builder, args[1]).shape, 1)
        return _row_dot(builder, nb, w, *x, block)

    return types.float32(qs, d, r, xq, xd, t), codegen


def _nibble_row(fifth: bool, has_min: bool):
    """The row-dot intrinsic of one legacy 4/5-bit format: 5-bit (`fifth`) or 4-bit, with a block
    minimum or without."""

    def typer(typingctx, qs, d, m, qh, r, xq, xd, xs, xo, t):
        if not (arrays_are((qs, 3, types.uint8), (d, 2, types.int16), (m, 2, types.int16), (qh, 2, types.int32),
                           (xs, 2, types.float32), (xo, 3, types.int32)) and isinstance(r, types.Integer)
                and x_ok(xq, xd, t)):
            return None

        def codegen(context, builder, signature, args):
            w, x = row_pointers(context, builder, signature, args, 4)  # (qs, d, m, qh), (xq, xd, xs, xo)
            xo = builder.bitcast(x[3], ir.VectorType(I32, 8).as_pointer())

            def block(b, xq_b):
                q = builder.load(builder.gep(builder.bitcast(w[0], ir.VectorType(I8, 16).as_pointer()), [b]), align=1)
                h = builder.load(builder.gep(w[3], [b])) if fifth else None
                dot = udot8(builder, nibble_codes(builder, q, h), xq_b)
                return builder.sub(dot, builder.load(builder.gep(xo, [b]), align=4))

            nb = builder.extract_value(context.make_array(d)(context, builder, args[1]).shape, 1)
            return _row_dot(builder, nb, w, x[0], x[1], block, (w[2], x[2]) if has_min else None)

        return types.float32(qs, d, m, qh, r, xq, xd, xs, xo, t), codegen

    name = ("q5" if fifth else "q4") + ("_1" if has_min else "_0") + "_row"
    typer.__name__ = typer.__qualname__ = name
    func = intrinsic(typer)
    func.__doc__ = f"""Row r of a {name[:4].upper()} matrix (qs (N, nb, 16) uint8, d and m (N, nb) int16 fp16 bits,
    qh (N, nb) int32 fifth bits) times row t of x rounded to 8 bits (xq, xd as q8_0_row; xs (T, nb) fp32
    q8_1's s): sum over blocks of (d_w * d_x) * sum_j (code_j - offset) * xq_j (+ m_w * s_x). The codes
    are multiplied unsigned (`udot8`), the offset's part taken away as xo (T, nb, 8) int32
    (`offset_sums`). Planes a format lacks (m, qh) are never read: any (N, 1) array stands in."""
    return func


q4_0_row, q4_1_row, q5_0_row, q5_1_row = (_nibble_row(f, m) for f in (False, True) for m in (False, True))


@njit(inline="always", boundscheck=False)
def round_half_away(v):
    """v to the nearest integer, halves away from zero (C's roundf), exactly."""
    t = float32(math.trunc(v))
    if abs(v - t) >= float32(0.5):
        t += float32(math.copysign(1.0, v))
    return t


@njit(inline="always", boundscheck=False)
def quantize_blocks(x):
    """x (T, nb, 32) fp32 -> (xq (T, nb, 32) int8, xd (T, nb) fp32, xs (T, nb) fp32) as ggml's q8_1:
    d = max|x_block| / 127 rounded to fp16, q = round(x / d) (with 1 / d of the unrounded d), s = d * sum(q)
    rounded to fp16 (q8_0 is the same without s)."""
    t, nb, _ = x.shape
    xq = np.empty((t, nb, 32), np.int8)
    xd = np.empty((t, nb), np.float32)
    xs = np.empty((t, nb), np.float32)
    for i in range(t):
        for b in range(nb):
            amax = float32(0.0)
            for j in range(32):
                amax = max(amax, abs(x[i, b, j]))
            d = amax / float32(127.0)
            inv = float32(1.0) / d if d != float32(0.0) else float32(0.0)
            total = int32(0)
            for j in range(32):
                q = int32(round_half_away(x[i, b, j] * inv))
                xq[i, b, j] = q
                total += q
            xd[i, b] = fp16_round(d)[1]
            xs[i, b] = fp16_round(float32(total) * d)[1]
    return xq, xd, xs


@njit(inline="always", boundscheck=False)
def offset_sums(xq, offset):
    """xq (T, nb, 32) int8 -> (T, nb, 8) int32: offset * the sums of xq over 4 consecutive values, in
    `udot8`'s lanes, so an unsigned code's dot minus this is the dot of (code - offset)."""
    t, nb, _ = xq.shape
    out = np.empty((t, nb, 8), np.int32)
    for i in range(t):
        for b in range(nb):
            for j in range(8):
                out[i, b, j] = offset * (int32(xq[i, b, 4 * j]) + int32(xq[i, b, 4 * j + 1]) + int32(xq[i, b, 4 * j + 2])
                                         + int32(xq[i, b, 4 * j + 3]))
    return out


@njit(inline="always", boundscheck=False)
def block_totals(xq, xd, width):
    """(T, nb * 32 / width) fp32: the sum of the rounded x over each `width` values (32 or 16) of its
    blocks, d * sum(q) (exact: |sum(q)| < 2^12, d an fp16 value)."""
    t, nb, _ = xq.shape
    per = 32 // width
    out = np.empty((t, nb * per), np.float32)
    for i in range(t):
        for b in range(nb):
            for part in range(per):
                total = int32(0)
                for j in range(width * part, width * part + width):
                    total += int32(xq[i, b, j])
                out[i, per * b + part] = float32(total) * xd[i, b]
    return out


def _rounded(x, xr, xs_less):
    """xr (T, K) = the rounded x (xq * xd, exact in fp32); xs_less (T, nb) = s minus the block's sum of xr."""
    t = x.shape[0]
    xq, xd, xs = quantize_blocks(x)
    for i in range(t):
        for b in range(xq.shape[1]):
            total = float32(0.0)
            for j in range(32):
                v = float32(xq[i, b, j]) * xd[i, b]
                xr[i, b * 32 + j] = v
                total += v
            xs_less[i, b] = xs[i, b] - total


_rounded = serial(_rounded)


def rounded(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, K) fp32 contiguous as the int8 matvecs round it, for the GEMM path: (the rounded values (T, K)
    fp32, s - sum of each rounded block (T, K/32): what a block minimum m adds beyond m * sum, times m)."""
    t, k = x.shape
    xr, xs_less = torch.empty((t, k), dtype=torch.float32), torch.empty((t, k // 32), dtype=torch.float32)
    _rounded(x.numpy().reshape(t, k // 32, 32), xr.numpy(), xs_less.numpy())
    return xr, xs_less

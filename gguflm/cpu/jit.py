"""numba compilation for the CPU kernels (`gguflm.numba_jit.compiled`: cached on disk) and three
bit-level casts."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from gguflm.numba_jit import compiled


def kernel(func):
    """`func` compiled for many threads (prange) with FMA contraction: each product and sum is still
    done in the order written, so a row's result never depends on what else is computed with it."""
    return compiled(func, parallel=True, fastmath={"contract"}, boundscheck=False, error_model="numpy")


def _bits16(bits) -> bool:
    return isinstance(bits, types.Integer) and bits.bitwidth == 16


def f16_value(builder, bits):
    """IR for f16_to_f32 of `bits`: an i16 value or a vector of them (then a vector of floats)."""
    width = bits.type.count if isinstance(bits.type, ir.VectorType) else None

    def typed(ty):
        return ty if width is None else ir.VectorType(ty, width)

    i32, f32 = typed(ir.IntType(32)), typed(ir.FloatType())

    def const(v, ty=i32):
        return ir.Constant(ty, v if width is None else [v] * width)

    h = builder.zext(bits, i32)
    sign = builder.shl(builder.and_(h, const(0x8000)), const(16))
    mag = builder.shl(builder.and_(h, const(0x7FFF)), const(13))
    scaled = builder.bitcast(builder.fmul(builder.bitcast(mag, f32), const(2.0 ** 112, f32)), i32)
    top = builder.icmp_unsigned("==", builder.and_(h, const(0x7C00)), const(0x7C00))  # inf or NaN
    out = builder.select(top, builder.or_(mag, const(0x7F800000)), scaled)
    return builder.bitcast(builder.or_(out, sign), f32)


@intrinsic
def f16_to_f32(typingctx, bits):
    """The fp16 value whose bits are `bits` (int16/uint16), as fp32, exactly: the magnitude's bits
    moved to fp32's places and scaled by 2^112 (subnormals included), inf/NaN given fp32's top
    exponent, the sign put back. Integer ops and one multiply, so LLVM vectorizes it (a plain fpext
    from half it leaves scalar: 1.3-2.9 G weights/s against 7-9 for bf16)."""
    if not _bits16(bits):
        return None

    def codegen(context, builder, signature, args):
        return f16_value(builder, args[0])

    return types.float32(bits), codegen


@intrinsic
def bf16_to_f32(typingctx, bits):
    """The bf16 value whose bits are `bits` (int16/uint16), as fp32 (exact: the bits are the top half)."""
    if not _bits16(bits):
        return None

    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def bits_f32(typingctx, word, shift, mask):
    """float32((word >> shift) & mask) with every step on 32-bit integers (word zero-extended or
    truncated to 32 bits). numba's own integer arithmetic widens to int64 (its literals are int64),
    which LLVM leaves scalar; kept at 32 bits, the per-lane shifts of a packed plane vectorize
    (vpsrlvd)."""
    if not all(isinstance(a, types.Integer) for a in (word, shift, mask)):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)

        def to32(value, ty):
            if ty.bitwidth < 32:
                return builder.zext(value, i32)
            return builder.trunc(value, i32) if ty.bitwidth > 32 else value

        w, s, m = (to32(v, t) for v, t in zip(args, signature.args))
        return builder.uitofp(builder.and_(builder.lshr(w, s), m), ir.FloatType())

    return types.float32(word, shift, mask), codegen


def serial(func):
    """`func` compiled for one thread, with no FMA contraction or reassociation: every float
    operation is rounded where the reference's torch ops round it (the fused decode-step ops)."""
    return compiled(func, boundscheck=False, error_model="numpy")

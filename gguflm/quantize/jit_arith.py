"""ggml's scalar float32 arithmetic for the compiled quantizers: an exact numba wrapper, nearest_int,
and fp32 <-> fp16 as ggml (and numpy's float16 casts) round.

Exact means no fastmath flag at all, not even FMA contraction: every product and sum is rounded
to float32 where the C source rounds it, so the compiled quantizers write the bytes of the numpy
ones (`arith`, `search`, `kquants`: the oracle) and of ggml-quants.c built at -O2. Inside these
functions every constant is an np.float32 and every level is made float32 before it meets a float:
numba would otherwise promote float32 * python float (or * int64) to float64.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from gguflm.numba_jit import compiled

GROUP_MAX_EPS = np.float32(1e-15)  # ggml: a group whose largest |x| is below this is all zero


def exact(func=None, *, parallel: bool = False, inline: bool = False):
    """`func` compiled without fastmath (IEEE float32, C's order), cached on disk when a cache
    directory is writable (next to the source, else ~/.cache/numba), compiled per process otherwise.
    `inline` puts its body into its callers (numba IR level): a call left as a call keeps the
    caller's loop from being vectorized."""

    def wrap(f):
        return compiled(f, parallel=parallel, fastmath=False, boundscheck=False, error_model="numpy",
                        inline="always" if inline else "never")

    return wrap if func is None else wrap(func)


@intrinsic
def f32_bits(typingctx, v):
    """The bits of float32 `v` as int32 (C's memcpy from float to int)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(v), codegen


@intrinsic
def bits_f32(typingctx, b):
    """The float32 whose bits are the low 32 of integer `b` (numba widens int32 arithmetic to int64)."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0] if b.bitwidth == 32 else builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(b), codegen


@exact(inline=True)
def nearest_int(v):
    """ggml's nearest_int: v + 1.5*2^23 in float32 rounds v to the nearest integer (ties to even),
    which lands in the low mantissa bits (|v| <= 2^22 - 1, as ggml asserts). Integer ops only after
    the add, so it vectorizes and never meets an undefined float-to-int conversion (NaN lanes of
    unused groups give some integer, not a trap)."""
    return (f32_bits(v + np.float32(12582912.0)) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


@exact(inline=True)
def round_clamp(v, lo, hi):
    """float32(MAX(lo, MIN(hi, nearest_int(v)))) without leaving float32: (v + 1.5*2^23) - 1.5*2^23
    is nearest_int(v) exactly (both steps exact but the first's rounding, which is the one wanted),
    and clamping an integer-valued float is clamping the integer. Vectorizes where an int64 level
    (numba widens int32 arithmetic) converted back to float would not (no AVX2 instruction for it)."""
    r = (v + np.float32(12582912.0)) - np.float32(12582912.0)
    r = hi if r > hi else r
    return lo if r < lo else r


@exact(inline=True)
def clamp(v, lo, hi):
    """C's MAX(lo, MIN(hi, v))."""
    return max(lo, min(hi, v))


@exact
def fp16_bits(v):
    """GGML_FP32_TO_FP16(v) as an int32 holding the 16 bits: round to nearest even, fp16 subnormals,
    inf past 65520 (what numpy's float16 cast gives), a quiet NaN for NaN."""
    x = f32_bits(v)
    sign = (x >> np.int32(16)) & np.int32(0x8000)
    a = x & np.int32(0x7FFFFFFF)
    if a > np.int32(0x7F800000):
        h = np.int32(0x7E00)
    elif a >= np.int32(0x477FF000):  # 65520 and up round to inf
        h = np.int32(0x7C00)
    elif a >= np.int32(0x38800000):  # normal in fp16: rebias the exponent, round 13 mantissa bits away
        h = (a - np.int32(0x38000000) + np.int32(0xFFF) + ((a >> np.int32(13)) & np.int32(1))) >> np.int32(13)
    else:  # subnormal in fp16: a multiple of 2^-24, |v| * 2^24 exact in float32 and below 2^10
        h = nearest_int(bits_f32(a) * np.float32(16777216.0))
    return sign | h


@exact(inline=True)
def fp16_value(h):
    """GGML_FP16_TO_FP32 of the 16 bits in int `h` (any fp16 but NaN: the quantizers make none)."""
    sign = np.float32(-1) if h & 0x8000 else np.float32(1)
    e = (h >> 10) & 0x1F
    if e == 0:  # zero or subnormal: mantissa * 2^-24, exact in float32
        return sign * (np.float32(h & 0x3FF) * np.float32(5.9604644775390625e-08))
    if e == 31:
        return sign * np.float32(np.inf)
    return sign * bits_f32(((h & 0x7FFF) << 13) + 0x38000000)


@exact
def fp16_round(v):
    """(bits, value read back as float32) of GGML_FP32_TO_FP16(v)."""
    h = fp16_bits(v)
    return h, fp16_value(h)


@exact
def put_fp16(out, o, h):
    """The fp16 bits `h` as two little-endian bytes at out[o]."""
    out[o] = np.uint8(h & 0xFF)
    out[o + 1] = np.uint8((h >> 8) & 0xFF)

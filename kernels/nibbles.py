"""The bit unpacking of ggml's 4/5-bit 32-blocks, in registers: one helper per step, shared by the
decode GEMV (gemv_legacy.py) and the prefill GEMM (gemm.py). Layouts: gguflm/quants/legacy.py.

A block's byte j holds element j in its low nibble and element j + 16 in its high one, so a
(.., 16) byte tile unpacks to the block's first and second halves; Q5's fifth bits come from one
32-bit word per block (bit j = element j).
"""

import triton
import triton.language as tl

# gguflm.quants `kernel` name -> the constexprs the kernels specialize on: FIFTH (a qh plane), NL (codes
# index the IQ4_NL table), HAS_MIN (w = d * q + m, an m plane), OFFSET (else w = d * (q - OFFSET))
NIBBLE_FORMATS = {
    "q4_0": dict(FIFTH=False, NL=False, HAS_MIN=False, OFFSET=8),
    "q4_1": dict(FIFTH=False, NL=False, HAS_MIN=True, OFFSET=0),
    "q5_0": dict(FIFTH=True, NL=False, HAS_MIN=False, OFFSET=16),
    "q5_1": dict(FIFTH=True, NL=False, HAS_MIN=True, OFFSET=0),
    "iq4_nl": dict(FIFTH=False, NL=True, HAS_MIN=False, OFFSET=0),
}


def _table_words(values) -> tuple[tl.constexpr, ...]:
    """KVALUES as four int32 words of four signed bytes (little-endian), for a lookup without memory."""
    words = []
    for i in range(0, 16, 4):
        word = sum((v & 0xFF) << (8 * j) for j, v in enumerate(values[i:i + 4]))
        words.append(tl.constexpr(word - (1 << 32) if word >= 1 << 31 else word))
    return tuple(words)


IQ4NL_W0, IQ4NL_W1, IQ4NL_W2, IQ4NL_W3 = _table_words(
    (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113))  # gguflm.quants.iq4_nl.KVALUES


@triton.jit
def nibble_codes(q, h, j, FIFTH: tl.constexpr):
    """q uint8 bytes; h int32 fifth-bit words broadcastable to q, j the byte's index in its block
    (0..15, broadcastable). Returns (lo, hi) int32 codes of elements j and j + 16 (5-bit with FIFTH)."""
    qi = q.to(tl.int32)
    lo = qi & 15
    hi = qi >> 4
    if FIFTH:
        lo = lo | (((h >> j) & 1) << 4)
        hi = hi | (((h >> (j + 16)) & 1) << 4)
    return lo, hi


@triton.jit
def iq4nl_values(code):
    """int32 codes 0..15 -> KVALUES[code] as int32: the byte picked out of four constant words
    (two selects and two shifts; no table in memory)."""
    low = tl.where(code < 4, IQ4NL_W0, IQ4NL_W1)
    high = tl.where(code < 12, IQ4NL_W2, IQ4NL_W3)
    word = tl.where(code < 8, low, high)
    return (word << (24 - 8 * (code & 3))) >> 24  # arithmetic shift: the byte, sign-extended


@triton.jit
def block_values(q, h, j, FIFTH: tl.constexpr, NL: tl.constexpr):
    """(lo, hi) fp32 unscaled values of a byte tile: the code (IQ4_NL: its table value); the Q4_0/Q5_0
    offset is not subtracted (callers fold it in per block, or subtract it themselves)."""
    lo, hi = nibble_codes(q, h, j, FIFTH)
    if NL:
        lo = iq4nl_values(lo)
        hi = iq4nl_values(hi)
    return lo.to(tl.float32), hi.to(tl.float32)

"""Decode GEMV over the 256-weight superblock formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS),
dequantized in registers, with the epilogues and split-K reduction of kernels/gemv.py.

A program owns BLOCK_N rows and walks its K range SB superblocks (BLOCK_K = 256*SB) at a time.
A format's unpack helper loads one step's quant bytes as a (BLOCK_N, R, L) tile (R*L bytes per
row: L = 32 for Q4_K/Q5_K, 16 otherwise) and returns two groups of integer quants, the two bit
fields of each byte, each with one scale (and min) per row r of the tile, i.e. per sub-block:
    part[n, r] = sa * sum_l qa*xa + sb * sum_l qb*xb  (- ma * sum_l xa - mb * sum_l xb)
so a weight costs a shift, a mask, an OR and an add (`_to_f32`, no int-to-float conversion) and an
FMA; scales and mins are decoded from their packed bytes once per 16 or 32 weights (small gathers
from L1, the superblock's bytes) and multiplied after the sum. Work per weight byte: Q4_K/IQ4_XS
decode 2 weights per byte (twice Q8_0's ALU work per byte; IQ4_XS also looks each nibble up in a
16-entry table), Q2_K/Q3_K read each quant byte twice (from L1; DRAM traffic is still once) for
their 4 two-bit fields.
The planes p0..p3 are each format's `PLANES` (gguflm/quants/kquants.py) in order: the quant bits,
then qh / hmask / scales_l where the format has them, scales, d (and dmin).
"""

import torch
import triton
import triton.language as tl

from gguflm.quants import PackedWeight
from gguflm.quants import kquants

from .gemv import GemvCall, GemvFamily, _epilogue, _reduce_kernel, register_family
from .settings import kquant_gemv_settings

# kernel name of a format -> the FMT constexpr the kernels branch on
FORMATS = {"q2_k": 0, "q3_k": 1, "q4_k": 2, "q5_k": 3, "q6_k": 4, "iq4_xs": 5}
_WIDE = ("q4_k", "q5_k")  # tiles of 32 bytes per sub-block row (L = 32, R = 4 per superblock)


def geometry(kernel: str, sb: int) -> tuple[int, int]:
    """(R, L) of a step of `sb` superblocks."""
    return (4 * sb, 32) if kernel in _WIDE else (8 * sb, 16)


# ---------------------------------------------------------------------------- per-format unpacking


@triton.jit
def _to_f32(u, offset: tl.constexpr):
    """u - offset in fp32 for small unsigned ints u (< 2^23): u's bits OR-ed into 2^23's mantissa and the
    2^23 + offset taken off, one logic op and one add instead of an int-to-float conversion (a quarter-rate
    instruction on the SMs: this is the per-weight conversion of every format)."""
    return (u.to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + offset)


@triton.jit
def _k4_scale(sp, i):
    """Q4_K/Q5_K six-bit (scale, min) of sub-blocks i (R,) from the 12 bytes at sp (BLOCK_N, R); fp32."""
    first = (i < 4)[None, :]
    a = tl.load(sp + tl.where(i < 4, i, i + 4)[None, :])
    b = tl.load(sp + tl.where(i < 4, i + 4, i - 4)[None, :])
    c = tl.load(sp + i[None, :])
    sc = tl.where(first, a & 63, (a & 15) | ((b >> 6) << 4))
    mn = tl.where(first, b & 63, (a >> 4) | ((c >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _k3_scale(sp, i):
    """Q3_K signed six-bit scale (sc - 32) of sub-blocks i (R,) from the 12 bytes at sp (BLOCK_N, R); fp32."""
    low = (tl.load(sp + (i % 8)[None, :]) >> (4 * (i // 8))[None, :]) & 15
    high = (tl.load(sp + (8 + i % 4)[None, :]) >> (2 * (i // 4))[None, :]) & 3
    return (low | (high << 4)).to(tl.float32) - 32.0


@triton.jit
def _unpack(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows, sb0,
            FMT: tl.constexpr, R: tl.constexpr, L: tl.constexpr):
    """One step's quants of rows (BLOCK_N,) from superblock sb0: (qa, qb) (BLOCK_N, R, L) fp32 and
    per-row-r (sa, sb, ma, mb) (BLOCK_N, R) fp32 with w = s*q - m (ma, mb zero without mins)."""
    r = tl.arange(0, R)
    e = tl.arange(0, L)[None, None, :]
    r3 = r[None, :, None]
    row3 = rows[:, None, None]
    row2 = rows[:, None]
    if FMT == 0 or FMT == 1:  # Q2_K / Q3_K: r = (superblock, half, shift pair tp, 16-byte run u)
        tp = (r // 2) % 2
        q = tl.load(p0 + row3 * s0 + sb0 * 64 + (r3 // 4) * 32 + (r3 % 2) * 16 + e, eviction_policy="evict_first")
        shift = (4 * tp)[None, :, None]
        qa = (q >> shift) & 3
        qb = (q >> (shift + 2)) & 3
        sub = 8 * ((r // 4) % 2) + 4 * tp + r % 2  # the low group's sub-block in its superblock
        sbi = sb0 + r // 8
        if FMT == 0:
            sc_a = tl.load(p1 + row2 * s1 + (sbi * 16 + sub)[None, :])
            sc_b = tl.load(p1 + row2 * s1 + (sbi * 16 + sub + 2)[None, :])
            dp = p2 + row2 * s2 + (2 * sbi)[None, :]
            d = tl.load(dp).to(tl.float32)
            dmin = tl.load(dp + 1).to(tl.float32)
            sa, sb = d * (sc_a & 15).to(tl.float32), d * (sc_b & 15).to(tl.float32)
            ma, mb = dmin * (sc_a >> 4).to(tl.float32), dmin * (sc_b >> 4).to(tl.float32)
            qa = _to_f32(qa, 0.0)
            qb = _to_f32(qb, 0.0)
        else:
            hm = tl.load(p1 + row3 * s1 + (sbi * 32 + (r % 2) * 16)[None, :, None] + e,
                         eviction_policy="evict_first")
            bit = (4 * ((r // 4) % 2) + 2 * tp)[None, :, None]
            qa = _to_f32(qa | (((hm >> bit) & 1) << 2), 4.0)  # q2 + 4*hbit - 4
            qb = _to_f32(qb | (((hm >> (bit + 1)) & 1) << 2), 4.0)
            sp = p2 + row2 * s2 + (sbi * 12)[None, :]
            d = tl.load(p3 + row2 * s3 + sbi[None, :]).to(tl.float32)
            sa, sb = d * _k3_scale(sp, sub), d * _k3_scale(sp, sub + 2)
            ma = tl.zeros_like(sa)
            mb = ma
    elif FMT == 2 or FMT == 3:  # Q4_K / Q5_K: r = 64-weight chunk j of superblock sbi
        q = tl.load(p0 + row3 * s0 + sb0 * 128 + r3 * 32 + e, eviction_policy="evict_first")
        j = r % 4
        sbi = sb0 + r // 4
        if FMT == 3:
            qh = tl.load(p1 + row3 * s1 + (sbi * 32)[None, :, None] + e, eviction_policy="evict_first")
            qa = _to_f32((q & 15) | (((qh >> (2 * j)[None, :, None]) & 1) << 4), 0.0)
            qb = _to_f32((q >> 4) | (((qh >> (2 * j + 1)[None, :, None]) & 1) << 4), 0.0)
            ps, ss, pd, sd = p2, s2, p3, s3
        else:
            qa = _to_f32(q & 15, 0.0)
            qb = _to_f32(q >> 4, 0.0)
            ps, ss, pd, sd = p1, s1, p2, s2
        sp = ps + row2 * ss + (sbi * 12)[None, :]
        sc_a, mn_a = _k4_scale(sp, 2 * j)
        sc_b, mn_b = _k4_scale(sp, 2 * j + 1)
        dp = pd + row2 * sd + (2 * sbi)[None, :]
        d = tl.load(dp).to(tl.float32)
        dmin = tl.load(dp + 1).to(tl.float32)
        sa, sb, ma, mb = d * sc_a, d * sc_b, dmin * mn_a, dmin * mn_b
    elif FMT == 4:  # Q6_K: r = (128-weight half, 16-byte run u); low nibbles weights 16u.., high 64 + 16u..
        u = r % 4
        ql = tl.load(p0 + row3 * s0 + sb0 * 128 + r3 * 16 + e, eviction_policy="evict_first")
        qh = tl.load(p1 + row3 * s1 + sb0 * 64 + ((r // 4) * 32 + (u % 2) * 16)[None, :, None] + e,
                     eviction_policy="evict_first")
        shift = (2 * (u // 2))[None, :, None]
        qa = _to_f32((ql & 15) | (((qh >> shift) & 3) << 4), 32.0)
        qb = _to_f32((ql >> 4) | (((qh >> (shift + 4)) & 3) << 4), 32.0)
        scp = p2 + row2 * s2 + (sb0 * 16 + (r // 4) * 8 + u)[None, :]
        d = tl.load(p3 + row2 * s3 + (sb0 + r // 8)[None, :]).to(tl.float32)
        sa = d * tl.load(scp).to(tl.float32)
        sb = d * tl.load(scp + 4).to(tl.float32)
        ma = tl.zeros_like(sa)
        mb = ma
    else:  # IQ4_XS: r = 32-weight sub-block; low nibbles weights 0..15, high 16..31, one scale
        q = tl.load(p0 + row3 * s0 + sb0 * 128 + r3 * 16 + e, eviction_policy="evict_first")
        qa = tl.load(tab_ptr + (q & 15))
        qb = tl.load(tab_ptr + (q >> 4))
        ib = r % 8
        sbi = sb0 + r // 8
        low = (tl.load(p1 + row2 * s1 + (sbi * 4 + ib // 2)[None, :]) >> (4 * (ib % 2))[None, :]) & 15
        high = (tl.load(p2 + row2 * s2 + sbi[None, :]).to(tl.int32) >> (2 * ib)[None, :]) & 3
        d = tl.load(p3 + row2 * s3 + sbi[None, :]).to(tl.float32)
        sa = d * ((low.to(tl.int32) | (high << 4)).to(tl.float32) - 32.0)
        sb = sa
        ma = tl.zeros_like(sa)
        mb = ma
    return qa, qb, sa, sb, ma, mb


@triton.jit
def _offsets(FMT: tl.constexpr, R: tl.constexpr, L: tl.constexpr):
    """(oa, ob) (R, L): the weight index, within the step, of each element of the two groups."""
    r = tl.arange(0, R)[:, None]
    e = tl.arange(0, L)[None, :]
    if FMT == 0 or FMT == 1:
        oa = (r // 4) * 128 + ((r // 2) % 2) * 64 + (r % 2) * 16 + e
        ob = oa + 32
    elif FMT == 2 or FMT == 3:
        oa = r * 64 + e
        ob = oa + 32
    elif FMT == 4:
        oa = (r // 4) * 128 + (r % 4) * 16 + e
        ob = oa + 64
    else:
        oa = r * 32 + e
        ob = oa + 16
    return oa, ob


@triton.jit
def _dot(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows, sb0, xa, xb,
         FMT: tl.constexpr, R: tl.constexpr, L: tl.constexpr, HAS_MIN: tl.constexpr):
    """(BLOCK_N, R) partial dot products of one step with x's groups xa, xb (R, L) fp32."""
    qa, qb, sa, sb, ma, mb = _unpack(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows, sb0, FMT, R, L)
    part = tl.sum(qa * xa[None, :, :], axis=2) * sa + tl.sum(qb * xb[None, :, :], axis=2) * sb
    if HAS_MIN:
        part -= ma * tl.sum(xa, axis=1)[None, :] + mb * tl.sum(xb, axis=1)[None, :]
    return part


# ---------------------------------------------------------------------------- kernel


@triton.jit
def _kq_gemv_kernel(x_ptr, p0, p1, p2, p3, tab_ptr, bias_ptr, res_ptr, out_ptr, part_ptr,
                    M, N_OUT, stride_xm, s0, s1, s2, s3, stride_rm, stride_om, sb_per_split,
                    FMT: tl.constexpr, BLOCK_N: tl.constexpr, SB: tl.constexpr, R: tl.constexpr,
                    L: tl.constexpr, HAS_MIN: tl.constexpr, GLU: tl.constexpr, SPLIT: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr):
    """Grid (M, cdiv(N_OUT, BLOCK_N), SPLIT_K); x (M, K); the weight's planes p0..p3 (N rows each,
    row strides s0..s3 in elements), N = N_OUT or 2*N_OUT (GLU: gate rows n, up rows N_OUT + n).

    g[m, n] = sum over superblocks of split s (sb_per_split, a multiple of SB) of x . W[n], fp32;
    then the Q8_0 GEMV's epilogue (bias, residual or silu(g)*u), or partial sums (SPLIT).
    """
    m = tl.program_id(0)
    pid_n = tl.program_id(1)
    s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N_OUT
    rows = tl.minimum(offs_n, N_OUT - 1).to(tl.int64)  # clamped: loads need no row mask
    oa, ob = _offsets(FMT, R, L)
    x_row = x_ptr + m * stride_xm
    acc = tl.zeros((BLOCK_N, R), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, R), dtype=tl.float32)
    sb_lo = s * sb_per_split
    for sb0 in range(sb_lo, sb_lo + sb_per_split, SB):
        xa = tl.load(x_row + sb0 * 256 + oa).to(tl.float32)
        xb = tl.load(x_row + sb0 * 256 + ob).to(tl.float32)
        acc += _dot(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows, sb0, xa, xb, FMT, R, L, HAS_MIN)
        if GLU:
            acc2 += _dot(p0, p1, p2, p3, s0, s1, s2, s3, tab_ptr, rows + N_OUT, sb0, xa, xb, FMT, R, L, HAS_MIN)
    g = tl.sum(acc, axis=1)
    u = tl.sum(acc2, axis=1)
    if SPLIT:
        width = 2 * N_OUT if GLU else N_OUT
        base = part_ptr + (s * M + m) * width
        tl.store(base + offs_n, g, mask=nmask)
        if GLU:
            tl.store(base + N_OUT + offs_n, u, mask=nmask)
    else:
        _epilogue(g, u, m, offs_n, nmask, bias_ptr, res_ptr, out_ptr, stride_rm, stride_om,
                  GLU, HAS_BIAS, HAS_RES)


# ---------------------------------------------------------------------------- launcher


def planes(w: PackedWeight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four plane arguments of a packed weight (three-plane formats repeat p0 as the unused p3)."""
    return w.parts if len(w.parts) == 4 else (*w.parts, w.parts[0])


def iq4_table(device: torch.device) -> torch.Tensor:
    """IQ4_XS's value table on the device (made on the first call: a prefill or a graph's warm-up)."""
    return kquants.IQ4_XS.values(device)


def _launch(call: GemvCall, weight: PackedWeight) -> None:
    """The superblock family's launcher (kernels/gemv.py checks x, out, bias and residual, sizes the
    tiles with kquant_gemv_settings and reduces split-K)."""
    kernel, config, x2 = weight.fmt.kernel, call.config, call.x
    n, k = weight.shape
    p = planes(weight)
    if any(t.dim() != 2 or t.shape[0] != n or t.stride(1) != 1 for t in p) or k % 256:
        raise ValueError(f"{weight.fmt.name} planes must be ({n}, ...) with unit stride and K % 256 == 0")
    sb, n_sb = config.block_k // 256, k // 256
    if config.block_k % 256 or n_sb % (sb * config.split_k):
        raise ValueError(f"block_k {config.block_k} x split_k {config.split_k} must tile K = {k} in superblocks")
    tab = iq4_table(x2.device) if kernel == "iq4_xs" else call.out
    r, l = geometry(kernel, sb)
    _kq_gemv_kernel[call.grid](
        x2, *p, tab, call.bias, call.res, call.out, call.part,
        x2.shape[0], call.n_out, x2.stride(0), *(t.stride(0) for t in p), call.stride_rm, call.out.stride(0),
        n_sb // config.split_k,
        FMT=FORMATS[kernel], BLOCK_N=config.block_n, SB=sb, R=r, L=l, HAS_MIN=weight.fmt.has_min,
        GLU=call.glu, SPLIT=config.split_k > 1, HAS_BIAS=call.has_bias, HAS_RES=call.has_res,
        num_warps=config.num_warps)


register_family(tuple(FORMATS), GemvFamily(
    _launch, lambda w: w.fmt.type_size / 256,
    settings=lambda n_out, k, w, n_mats, device: kquant_gemv_settings(n_out, k, w.fmt.type_size, n_mats, device)))

"""KV-cache element formats inside kernels: storing one head quantized, loading a tile dequantized.

KIND 0: a float cache (the row is cast); 1: q8_0; 2: q4_0 (the layouts of `gguflm.kv_cache`).
The quantization is ggml's, bit-exact with `gguflm.ops.quantize_q8_0` / `quantize_q4_0` (and so
with gguf-py): divisions are correctly rounded (`div_rn`) and the kernels that store are compiled
without FMA contraction, so every product is rounded as numpy rounds it.
"""

import torch
import triton
import triton.language as tl

KINDS = {"f32": 0, "f16": 0, "bf16": 0, "q8_0": 1, "q4_0": 2}


def kind_of(layer) -> int:
    return KINDS[layer.kind.name]


@triton.jit
def store_head(ptr, s_ptr, x, e, emask, HD: tl.constexpr, BLOCK_D: tl.constexpr, KIND: tl.constexpr):
    """Store one head x (BLOCK_D,) fp32 (elements e < HD valid, emask also says whether to write at all):
    as ptr's type (KIND 0), or as blocks of 32 values at ptr with their fp16 scales at s_ptr."""
    if KIND == 0:
        tl.store(ptr + e, x.to(ptr.dtype.element_ty), mask=emask)
    else:
        NB: tl.constexpr = BLOCK_D // 32
        b = tl.reshape(x, (NB, 32))  # (NB, 32) natural order
        nb = tl.arange(0, NB)
        j = tl.arange(0, 32)
        bmask = tl.reshape(emask, (NB, 32))
        smask = tl.max(bmask.to(tl.int32), axis=1) > 0  # (NB,) blocks inside the head and written
        if KIND == 1:  # q8_0: d = max|x| / 127, q = round half away from zero (x / d)
            d = tl.math.div_rn(tl.max(tl.abs(b), axis=1), 127.0)
            inv = tl.where(d == 0, 0.0, tl.math.div_rn(tl.full(d.shape, 1.0, tl.float32), tl.where(d == 0, 1.0, d)))
            a = b * inv[:, None]
            f = tl.floor(tl.abs(a))
            q = f + tl.floor(2.0 * (tl.abs(a) - f))
            q = tl.where(a < 0, -q, q)
            tl.store(ptr + nb[:, None] * 32 + j[None, :], q.to(tl.int8), mask=bmask)
        else:  # q4_0: d = (value of largest magnitude) / -8, q = trunc(x / d + 8.5) clamped to 15
            top_at = tl.argmax(tl.abs(b), axis=1, tie_break_left=True)
            top = tl.sum(tl.where(j[None, :] == top_at[:, None], b, 0.0), axis=1)
            d = tl.math.div_rn(top, -8.0)
            inv = tl.where(d == 0, 0.0, tl.math.div_rn(tl.full(d.shape, 1.0, tl.float32), tl.where(d == 0, 1.0, d)))
            q = tl.minimum(tl.floor(b * inv[:, None] + 8.5), 15.0).to(tl.uint8)  # >= 0.5 before the floor
            lo, hi = tl.split(tl.permute(tl.reshape(q, (NB, 2, 16)), (0, 2, 1)))  # elements i and 16 + i
            i = tl.arange(0, 16)
            tl.store(ptr + nb[:, None] * 16 + i[None, :], lo | (hi << 4), mask=smask[:, None] & (i[None, :] < 16))
        tl.store(s_ptr + nb, d.to(tl.float16), mask=smask)


@triton.jit
def load_tile(ptr, s_ptr, rows, rmask, s_row, s_srow, offs_d, dmask, KIND: tl.constexpr):
    """Rows `rows` (T,) of a cache layer as a (T, BLOCK_D) fp32 tile (zero where masked), dequantized.

    ptr/s_ptr point at one KV head's data and scales; s_row/s_srow are their strides per position.
    """
    mask = rmask[:, None] & dmask[None, :]
    r = rows[:, None].to(tl.int64)
    if KIND == 0:
        x = tl.load(ptr + r * s_row + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    else:
        d = tl.load(s_ptr + r * s_srow + (offs_d // 32)[None, :], mask=mask, other=0.0).to(tl.float32)
        if KIND == 1:
            q = tl.load(ptr + r * s_row + offs_d[None, :], mask=mask, other=0)
            x = q.to(tl.float32) * d
        else:  # q4_0: element 32b + i is byte 16b + i's low nibble, element 32b + 16 + i its high nibble
            byte = tl.load(ptr + r * s_row + ((offs_d // 32) * 16 + offs_d % 16)[None, :], mask=mask, other=0)
            q = (byte >> (((offs_d // 16) % 2) * 4)[None, :].to(tl.uint8)) & 15
            x = (q.to(tl.float32) - 8.0) * d
    return x


@triton.jit
def slot_row(slot_ptr, row, kc_ptr, ks_ptr, vc_ptr, vs_ptr, s_kc, s_ks, s_vc, s_vs):
    """The K and V data and scale pointers of the pooled-cache slot that batch row `row` reads and writes."""
    slot = tl.load(slot_ptr + row).to(tl.int64)
    return kc_ptr + slot * s_kc, ks_ptr + slot * s_ks, vc_ptr + slot * s_vc, vs_ptr + slot * s_vs


def layer_args(layer) -> tuple[torch.Tensor, torch.Tensor, int, int, int, int]:
    """(data, scales, data strides (head, position), scale strides) of a cache layer, as the kernels take them;
    for a pooled layer (n_slots, n_kv, ...), those of one slot."""
    scale = layer.data if layer.scale is None else layer.scale  # an unread stand-in for float caches
    d, sc = layer.data.stride(), scale.stride()
    return layer.data, scale, d[-3], d[-2], sc[-3], sc[-2]


def slot_strides(layer) -> tuple[int, int]:
    """(data, scale) strides between the slots of a pooled layer (n_slots, n_kv, max_ctx, ...); 0, 0 for a plain one."""
    if layer.data.dim() == 3:
        return 0, 0
    scale = layer.data if layer.scale is None else layer.scale
    return layer.data.stride(0), scale.stride(0)


def check_layer(layer, name: str, head_dim: int, pooled: bool = False) -> None:
    dims = 4 if pooled else 3
    if layer.data.dim() != dims:
        raise ValueError(f"{name} must be a {'pooled ' if pooled else ''}cache layer of {dims} dimensions, "
                         f"got {tuple(layer.data.shape)}")
    if layer.head_dim != head_dim or layer.data.stride(-1) != 1:
        raise ValueError(f"{name} must hold heads of {head_dim} with unit stride, got {tuple(layer.data.shape)}")
    if layer.kind.quantized and (head_dim % 32 or layer.scale.stride(-1) != 1):
        raise ValueError(f"a {layer.kind.name} {name} needs a head size that is a multiple of 32")


def check_rows(pos: torch.Tensor, slots: torch.Tensor | None, rows: int, device: torch.device) -> None:
    """pos: (1,) int32 for one sequence; with slots, pos and slots (rows,) int32 (row b's position and slot)."""
    n = 1 if slots is None else rows
    for name, t in (("pos", pos), ("slots", slots)):
        if t is not None and (t.dtype != torch.int32 or t.shape != (n,) or t.device != device or t.stride(0) != 1):
            raise ValueError(f"{name} must be a contiguous int32 tensor of {n} element(s) on the device, "
                             f"got {t.dtype} {tuple(t.shape)}")

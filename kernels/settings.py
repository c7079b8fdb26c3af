"""Every kernel's launch settings, in one place: tiles keyed on the shape and on the device
(its SM count read from the device), and the variants the CPU interpreter needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def interpreting() -> bool:
    """Kernels run in numpy under TRITON_INTERPRET=1 (tests on the CPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 16 for the CPU interpreter (small grids)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 16


def dot_dtype(dtype: torch.dtype):
    """The tl dtype tl.dot operands are cast to: the torch dtype itself on a GPU.

    Under TRITON_INTERPRET=1 bf16 is held as uint16 and tl.dot on it returns garbage
    (triton 3.9), so the interpreter multiplies bf16 operands in fp32 instead.
    """
    if dtype == torch.bfloat16 and interpreting():
        return tl.float32
    return _TL_DTYPES[dtype]


# ---------------------------------------------------------------------------- decode GEMV


@dataclass(frozen=True)
class GemvConfig:
    block_n: int  # output rows per program (per half for gate+up)
    block_k: int  # K elements per loop step; a multiple of 32
    split_k: int  # K ranges reduced by a second, deterministic pass when > 1
    num_warps: int


def gemv_config(n_out: int, k: int, elem_bytes: float, n_mats: int, num_sms: int) -> GemvConfig:
    """Tiles for an (n_out x n_mats, K) weight of `elem_bytes` per element (1 for Q8_0, 0.5 for the
    nibbles of 4/5-bit formats) on `num_sms` SMs.

    Each step streams up to 1 KiB and 1024 weights of each row (more weights would cost x registers and
    the K splits of short-N matrices); tiles of 0.5-8 KiB give every thread 16-32
    bytes (16-byte loads); >= 4 programs per SM keep every SM's memory pipe full, and K is
    split (second, deterministic pass) only when N is too small for that. K that is not a
    multiple of 128 takes a masked, slower path (real models' K are multiples of 128).
    """
    widest = min(1024, int(1024 / elem_bytes))
    block_k = widest
    while block_k > 128 and k % block_k:
        block_k //= 2
    if k % block_k:  # odd K: masked tail (a block is >= 32 wide)
        block_k = max(32, min(widest, triton.next_power_of_2(k)))
    row_bytes = int(block_k * elem_bytes * n_mats)
    max_bn = max(1, 8192 // row_bytes)
    block_n = min(max_bn, triton.cdiv(512, row_bytes))  # at least 16 bytes per thread of a warp
    want = 4 * num_sms
    while block_n * 2 <= max_bn and triton.cdiv(n_out, block_n * 2) >= want:
        block_n *= 2
    split_k = 1
    n_kb = triton.cdiv(k, block_k)
    while (triton.cdiv(n_out, block_n) * split_k * 2 <= want and split_k * 2 <= n_kb
           and n_kb % (split_k * 2) == 0):
        split_k *= 2
    while split_k == 1 and block_n > 1 and triton.cdiv(n_out, block_n) < 2 * num_sms:
        block_n //= 2  # short rows that K cannot be split along (K/128 odd): smaller tiles, busier SMs
    num_warps = max(1, min(8, block_n * row_bytes // 1024))
    return GemvConfig(block_n, block_k, split_k, num_warps)


def interpreter_gemv_config(n_out: int, k: int) -> GemvConfig:
    """Under the interpreter programs run one after another in numpy: few wide ones keep tests fast."""
    block_k = max(32, min(256, triton.next_power_of_2(k)))  # the kernel works in 32-wide blocks
    return GemvConfig(block_n=min(256, triton.next_power_of_2(n_out)), block_k=block_k, split_k=1, num_warps=1)


def gemv_settings(n_out: int, k: int, elem_bytes: float, n_mats: int, device: torch.device) -> GemvConfig:
    """The GEMV tiles for this shape on this device (the interpreter's own on the CPU)."""
    if device.type != "cuda":
        return interpreter_gemv_config(n_out, k)
    return gemv_config(n_out, k, elem_bytes, n_mats, num_sms(device))


def reduce_block(n_out: int) -> int:
    """Outputs per program of the split-K reduction."""
    return min(1024, triton.next_power_of_2(n_out))


# ---------------------------------------------------------------------------- prefill GEMM


def gemm_config(m: int, n: int, k: int) -> dict:
    """Tiles keyed on shape: 128x128 for long prompts, narrower M tiles for short ones."""
    block_m = 128 if m >= 128 else max(16, triton.next_power_of_2(m))
    block_n = 128 if n >= 128 else max(16, triton.next_power_of_2(n))
    block_k = 64 if k % 64 == 0 else 32  # always divides K (K % 32 == 0)
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=num_warps, num_stages=3)


# ---------------------------------------------------------------------------- attention, norms, rope


# Rows of a K/V tile by cache type (gguflm.kv_cache names). 64 rows of an fp32 cache (ieee dot) need 255
# registers and spill 768 bytes with triton 3.6 at head size 128; 64 q8_0 rows spill 8 bytes at head size 64.
ATTENTION_TILE_ROWS = {"f16": 64, "bf16": 64, "q4_0": 64, "f32": 32, "q8_0": 32}


def attention_config(n_kv: int, max_ctx: int, num_sms: int, kinds: tuple[str, ...]) -> tuple[int, int]:
    """(BLOCK_T, NUM_SPLITS) for K and V caches of these types: the fewer tile rows of the two; about
    two programs per SM, never more slices than BLOCK_T rows."""
    block_t = min(ATTENTION_TILE_ROWS[k] for k in kinds)
    splits = max(1, min(triton.cdiv(2 * num_sms, n_kv), triton.cdiv(max_ctx, block_t)))
    return block_t, splits


ATTENTION_WARPS, ATTENTION_STAGES, MERGE_WARPS = 4, 2, 4


def rmsnorm_settings(h: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_R, num_warps): a whole row in registers; short rows packed several per program."""
    block_h = triton.next_power_of_2(h)
    block_r = max(1, min(16, 2048 // block_h))
    num_warps = max(1, min(16, block_r * block_h // 512))
    return block_h, block_r, num_warps


ROPE_WARPS = 1  # one program per (token, head): a head is at most a few hundred values

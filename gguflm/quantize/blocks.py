"""The block quantizer of each ggml type gguflm writes: float32 rows in, file bytes out.

`quantize_rows(rows, qtype)` maps (N, K) float32 to (N, row_bytes) uint8, each row independent,
so a tensor can be encoded a chunk of rows at a time with the same bytes as in one piece. The
k-quants are the compiled `jit_kquants` (their numpy twins in `kquants` are the tests' oracle).
"""

from __future__ import annotations

from typing import Callable

import gguf
import numpy as np

from gguflm.errors import GGUFLMError
from gguflm.quantize import iq4, jit_kquants, legacy

QT = gguf.GGMLQuantizationType
# The searches make hundreds of passes over their input: chunks this size stay in the CPU's caches.
CHUNK_WEIGHTS = 1 << 18


def _f32(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32).view(np.uint8)


def _f16(rows: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return rows.astype(np.float16).view(np.uint8)


def _bf16(rows: np.ndarray) -> np.ndarray:
    """Round to nearest even on the top 16 bits; NaN stays a quiet NaN (ggml_fp32_to_bf16)."""
    n = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = (n & 0x7FFFFFFF) > 0x7F800000
    rounded = (n + (0x7FFF + ((n >> 16) & 1))) >> 16
    return np.where(nan, (n >> 16) | 64, rounded).astype(np.uint16).view(np.uint8)


QUANTIZERS: dict[QT, Callable[[np.ndarray], np.ndarray]] = {
    QT.F32: _f32, QT.F16: _f16, QT.BF16: _bf16,
    QT.Q4_0: legacy.quantize_q4_0, QT.Q4_1: legacy.quantize_q4_1, QT.Q5_0: legacy.quantize_q5_0,
    QT.Q5_1: legacy.quantize_q5_1, QT.Q8_0: legacy.quantize_q8_0,
    QT.Q2_K: jit_kquants.quantize_q2_k, QT.Q3_K: jit_kquants.quantize_q3_k, QT.Q4_K: jit_kquants.quantize_q4_k,
    QT.Q5_K: jit_kquants.quantize_q5_k, QT.Q6_K: jit_kquants.quantize_q6_k,
    QT.IQ4_NL: iq4.quantize_iq4_nl, QT.IQ4_XS: iq4.quantize_iq4_xs,
}


def row_bytes(qtype: QT, k: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return k // block * size


def quantize_rows(rows: np.ndarray, qtype: QT) -> np.ndarray:
    """(N, K) float32 rows as (N, row_bytes) uint8 blocks of `qtype`."""
    fn = QUANTIZERS.get(qtype)
    if fn is None:
        raise GGUFLMError(f"gguflm cannot write {qtype.name} tensors (it writes {', '.join(t.name for t in QUANTIZERS)}).")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n, k = rows.shape
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if k % block:
        raise GGUFLMError(f"a {qtype.name} row holds whole blocks of {block} weights; {k} is not a multiple.")
    if n == 0:
        return np.zeros((0, row_bytes(qtype, k)), dtype=np.uint8)
    if qtype not in (QT.F32, QT.F16, QT.BF16) and not np.isfinite(rows).all():
        raise GGUFLMError(f"weights that are NaN or infinite cannot be quantized to {qtype.name}.")
    out = np.empty((n, row_bytes(qtype, k)), dtype=np.uint8)
    step = max(1, CHUNK_WEIGHTS // k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a in range(0, n, step):
            out[a:a + step] = fn(rows[a:a + step]).reshape(-1, out.shape[1])
    return out

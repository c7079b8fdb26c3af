"""Turn one planned tensor into its GGUF bytes, a bounded chunk of rows at a time."""

from __future__ import annotations

from typing import Iterator

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

from gguflm.convert.hparams import permute_qk
from gguflm.convert.plan import PlannedTensor
from gguflm.quantize.blocks import quantize_rows

# Rows per chunk keep a chunk's float32 copy near this size, so peak memory is set by the
# chunk, not by the largest tensor (an embedding table can be hundreds of MB).
CHUNK_BYTES = 16 * 1024 * 1024


def row_chunks(t: PlannedTensor) -> Iterator[torch.Tensor]:
    """The tensor as consecutive 2-D row blocks in the checkpoint's dtype, Q/K permuted for llama."""
    if t.generated is not None:
        yield t.generated.reshape(1, -1)
        return
    src = t.source
    rows = src.n_rows
    cols = int(torch.Size(t.shape).numel()) // rows
    step = max(1, CHUNK_BYTES // (4 * cols))
    if t.heads is not None:
        # The permutation mixes rows within a head; Q/K are small next to the embedding, so load whole.
        data = permute_qk(src.load(), t.heads).reshape(rows, cols)
        for a in range(0, rows, step):
            yield data[a:a + step]
        return
    for a in range(0, rows, step):
        yield src.read_rows(a, min(rows, a + step))


def encode_chunks(t: PlannedTensor) -> Iterator[np.ndarray]:
    """Contiguous arrays that, concatenated, are the tensor's GGUF data.

    Every type encodes rows independently, so chunking by rows gives exactly the bytes of
    `gguf.quants.quantize` (float types, Q8_0) or gguflm's quantizers on the whole tensor.
    """
    for chunk in row_chunks(t):
        # float32 first, as llama.cpp does: exact for f16/bf16 sources, so no double rounding.
        yield _encode(chunk.to(torch.float32).numpy(), t.qtype)


def _encode(chunk: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return np.ascontiguousarray(chunk, dtype=np.float32)
    if qtype == Q.F16:
        return chunk.astype(np.float16)
    if qtype in (Q.BF16, Q.Q8_0):
        return gguf.quants.quantize(chunk, qtype)
    return quantize_rows(chunk, qtype)  # llama-quantize's block types

"""Shared helpers for kernel tests: import this module before triton or gguflm.kernels.

Without a CUDA device the Triton kernels run under the interpreter (TRITON_INTERPRET=1),
which must be set before triton is first imported.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def poisoned(shape, dtype=torch.float32) -> torch.Tensor:
    """An output buffer full of NaN, so any element the kernel forgets to write shows up."""
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def rand(*shape, dtype=torch.float32, scale=1.0, seed=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return (torch.randn(*shape, generator=g) * scale).to(dtype=dtype, device=DEVICE)


def quantize_q8_0(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize fp32 w (N, K) with gguf's own Q8_0 quantizer and unpack its 34-byte blocks.

    Each block is one little-endian fp16 scale d followed by 32 int8 quants: returns
    qs int8 (N, K) and d fp16 (N, K/32), the layout the loader hands to the kernels.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    n, k = w.shape
    raw = np.asarray(quantize(w.cpu().numpy().astype(np.float32), GGMLQuantizationType.Q8_0))
    blocks = raw.reshape(n, k // 32, 34)
    d = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).reshape(n, k // 32)
    qs = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(n, k)
    return torch.from_numpy(qs.copy()).to(DEVICE), torch.from_numpy(d.copy()).to(DEVICE)


def dequantize_gguf(qs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Independent dequantization: repack into Q8_0 blocks and run gguf's dequantizer."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    n, k = qs.shape
    blocks = np.empty((n, k // 32, 34), dtype=np.uint8)
    blocks[:, :, :2] = d.cpu().numpy().reshape(n, k // 32, 1).view(np.uint8)
    blocks[:, :, 2:] = qs.cpu().numpy().reshape(n, k // 32, 32).view(np.uint8)
    w = dequantize(blocks.reshape(n, k // 32 * 34), GGMLQuantizationType.Q8_0)
    return torch.from_numpy(np.asarray(w, dtype=np.float32).reshape(n, k).copy())

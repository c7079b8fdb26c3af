"""Triton kernels for the decode step and prefill, installed as gguflm.kernels.

Each module holds @triton.jit kernels and a checked launcher; launch settings live in `settings`,
and each op's torch reference in `gguflm.ops`.
"""

from .attention_decode import attention_decode
from .gemm import gemm, nibble_gemm, q8_gemm
from .gemv import gemv, gemv_silu_mul, supports
from . import gemv_kquants, gemv_legacy  # noqa: F401,E402  (register the 4/5-bit and superblock families with the GEMV dispatch)
from .rmsnorm import rmsnorm
from .rope import rope_and_cache
from .settings import GemvConfig, gemv_config

__all__ = [
    "GemvConfig", "attention_decode", "gemm", "gemv", "gemv_config", "gemv_silu_mul", "nibble_gemm", "q8_gemm", "rmsnorm",
    "rope_and_cache", "supports",
]

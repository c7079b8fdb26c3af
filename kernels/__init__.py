"""Triton kernels for the decode step, installed as gguflm.kernels.

Each module holds a @triton.jit kernel, a checked launcher, and a pure-torch `*_ref`.
"""

from .attention_decode import attention_decode, attention_decode_ref
from .q8_gemm import q8_gemm, q8_gemm_ref
from .q8_gemv import (GemvConfig, dequantize_q8_0_ref, gemv_config, q8_gemv, q8_gemv_ref,
                      q8_gemv_silu_mul, q8_gemv_silu_mul_ref)
from .rmsnorm import rmsnorm, rmsnorm_heads, rmsnorm_heads_ref, rmsnorm_ref
from .rope import RopeConfig, rope_and_cache, rope_and_cache_ref, rope_ref

__all__ = [
    "GemvConfig", "RopeConfig",
    "attention_decode", "attention_decode_ref",
    "dequantize_q8_0_ref", "gemv_config",
    "q8_gemm", "q8_gemm_ref",
    "q8_gemv", "q8_gemv_ref", "q8_gemv_silu_mul", "q8_gemv_silu_mul_ref",
    "rmsnorm", "rmsnorm_heads", "rmsnorm_heads_ref", "rmsnorm_ref",
    "rope_and_cache", "rope_and_cache_ref", "rope_ref",
]

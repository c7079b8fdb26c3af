"""Launch helpers shared by the kernel files: device facts and interpreter workarounds."""

import os

import torch
import triton.language as tl

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


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
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        return tl.float32
    return _TL_DTYPES[dtype]

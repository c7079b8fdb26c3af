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
    """Quantize fp32 w (N, K) with gguf's own Q8_0 quantizer and unpack its 34-byte blocks by hand.

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


def q8_weight(w: torch.Tensor):
    """fp32 w (N, K) quantized by gguf's Q8_0 quantizer, packed by the quant registry as the loader packs it."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    from gguflm import quants

    raw = np.asarray(quantize(w.cpu().numpy().astype(np.float32), GGMLQuantizationType.Q8_0))
    return quants.pack(torch.from_numpy(raw.copy()).to(DEVICE), GGMLQuantizationType.Q8_0)


def dense_weight(w: torch.Tensor):
    """A dense (N, K) fp32/fp16/bf16 tensor as the packed weight the loader would make of it."""
    from gguflm.quants import PackedWeight, dense

    fmt = {torch.float32: dense.F32, torch.float16: dense.F16, torch.bfloat16: dense.BF16}[w.dtype]
    return PackedWeight(fmt, (w,), w.shape[1])


def cache_layer(kind: str, n_kv: int, max_ctx: int, hd: int, seed: int):
    """A cache layer of a cache type, filled with the quantization of random rows."""
    from gguflm.kv_cache import CacheTensor, cache_type

    layer = CacheTensor.allocate(cache_type(kind), 1, n_kv, max_ctx, hd, DEVICE).layer(0)
    layer.write(torch.arange(max_ctx, device=DEVICE), rand(max_ctx, n_kv, hd, seed=seed))
    return layer


def clone_layer(layer):
    from gguflm.kv_cache import CacheLayer

    if isinstance(layer, torch.Tensor):
        return layer.clone()
    return CacheLayer(layer.kind, layer.data.clone(), None if layer.scale is None else layer.scale.clone(),
                      layer.head_dim)


def rope_and_cache_ref(qkv, pos, k_cache, v_cache, rope, *, n_head, q_norm=None, k_norm=None, norm_eps=1e-6):
    """What rope_and_cache must do, from the reference ops: returns (q fp32, new k_cache, new v_cache),
    the caches as given (plain tensors or cache layers), copied."""
    from gguflm import ops
    from gguflm.kv_cache import CacheLayer

    kc, vc = clone_layer(k_cache), clone_layer(v_cache)
    k_layer, v_layer = (c if isinstance(c, CacheLayer) else CacheLayer.of(c) for c in (kc, vc))
    qkv2 = qkv if qkv.dim() == 2 else qkv.unsqueeze(0)
    positions = pos.long()[0] + torch.arange(qkv2.shape[0], device=qkv.device)
    q, k, v = ops.qkv_heads(qkv2, positions, rope, n_head, k_layer.data.shape[0], q_norm, k_norm, norm_eps)
    k_layer.write(positions, k)
    v_layer.write(positions, v)
    return (q if qkv.dim() == 2 else q[0]), kc, vc


def attention_decode_ref(q, k_cache, v_cache, pos, *, sm_scale=None):
    """What attention_decode must give: the reference attention over cache rows [0, pos] (dequantized
    when the caches are cache layers of a block type), in q's dtype."""
    from gguflm import ops
    from gguflm.kv_cache import CacheLayer

    valid = int(pos.reshape(-1)[0]) + 1
    k, v = ((c if isinstance(c, CacheLayer) else CacheLayer.of(c)).read(0, valid) for c in (k_cache, v_cache))
    return ops.attention(q[None], k, v, scale=sm_scale).reshape(q.shape).to(q.dtype)


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


def block_weight(w: torch.Tensor, name: str, seed: int = 0):
    """fp32 w (N, K) in the block format `name`, packed by the quant registry as the loader packs it:
    quantized by gguf-py where it has a quantizer, else (IQ4_NL) random blocks with scales of w's size."""
    import gguf

    from gguflm import quants

    qtype = gguf.GGMLQuantizationType[name]
    raw = random_blocks(w.shape[0], w.shape[1], qtype, float(w.abs().max()) / 127, seed)
    if raw is None:
        raw = np.asarray(gguf.quants.quantize(w.cpu().numpy().astype(np.float32), qtype))
    return quants.pack(torch.from_numpy(raw.copy()).to(DEVICE), qtype)


def random_blocks(n: int, k: int, qtype, scale: float, seed: int):
    """(n, row bytes) uint8 of random IQ4_NL blocks (fp16 d in [scale/2, scale], either sign); None for
    the formats gguf-py quantizes itself."""
    import gguf

    if qtype != gguf.GGMLQuantizationType.IQ4_NL:
        return None
    rng = np.random.default_rng(seed)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
    d = rng.uniform(0.5, 1.0, (n, k // block, 1)) * rng.choice([-1, 1], (n, k // block, 1)) * scale
    raw[:, :, :2] = d.astype(np.float16).view(np.uint8)
    return raw.reshape(n, -1)

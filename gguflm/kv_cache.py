"""A preallocated key/value cache for every layer, in a float type or a 32-value block format, and
`KVPool`: the same for several sequences at once, one slot each (serving).

K and V each have a cache type (llama.cpp's `-ctk` / `-ctv`): f32, f16, bf16, or q8_0 / q4_0,
whose blocks of 32 values along the head dimension share one fp16 scale (as ggml's formats):
  q8_0: data int8 (..., head_dim), w = d * q;
  q4_0: data uint8 (..., head_dim / 2), byte 16b + i holds elements 32b + i (low nibble) and
        32b + 16 + i (high nibble); w = d * (q - 8).
Writes quantize a block as it is stored, reads dequantize; `ops.quantize_q8_0` / `quantize_q4_0`
are the arithmetic (bit-exact with gguf-py's quantizers), shared with the kernels' tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gguflm import ops
from gguflm.errors import GGUFLMError


@dataclass(frozen=True)
class CacheType:
    name: str
    dtype: torch.dtype  # what `data` holds
    per_byte: int = 1  # values per element of `data` along the head dimension (2 for q4_0)
    block: int = 1  # values sharing one fp16 scale; 1: no scales

    @property
    def quantized(self) -> bool:
        return self.block > 1

    def bytes_per_value(self) -> float:
        return torch.finfo(self.dtype).bits / 8 if self.dtype.is_floating_point else 1 / self.per_byte

    def row_bytes(self, head_dim: int) -> float:
        """Bytes one head of one position takes, scales included."""
        return head_dim * self.bytes_per_value() + (2 * head_dim / self.block if self.quantized else 0)


CACHE_TYPES = {t.name: t for t in (
    CacheType("f32", torch.float32), CacheType("f16", torch.float16), CacheType("bf16", torch.bfloat16),
    CacheType("q8_0", torch.int8, block=32), CacheType("q4_0", torch.uint8, per_byte=2, block=32),
)}
DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def cache_type(name: str | torch.dtype) -> CacheType:
    """A cache type by name (or a float dtype), or a GGUFLMError listing the choices."""
    if isinstance(name, torch.dtype):
        name = DTYPE_NAMES.get(name, str(name))
    if name not in CACHE_TYPES:
        raise GGUFLMError(f"unknown cache type '{name}' (choose from {', '.join(CACHE_TYPES)})")
    return CACHE_TYPES[name]


@dataclass
class CacheLayer:
    """K or V of one layer: data (n_kv, max_ctx, head_dim / per_byte), scale (n_kv, max_ctx, head_dim / 32) fp16."""

    kind: CacheType
    data: torch.Tensor
    scale: torch.Tensor | None
    head_dim: int

    @classmethod
    def of(cls, data: torch.Tensor) -> "CacheLayer":
        """A float cache layer (n_kv, max_ctx, head_dim) as it is."""
        return cls(cache_type(data.dtype), data, None, data.shape[-1])

    @property
    def max_ctx(self) -> int:
        return self.data.shape[-2]

    def slot(self, s: int) -> "CacheLayer":
        """One slot of a pooled layer (n_slots, n_kv, max_ctx, ...): a plain layer view (n_kv, max_ctx, ...)."""
        return CacheLayer(self.kind, self.data[s], None if self.scale is None else self.scale[s], self.head_dim)

    def write(self, positions: torch.Tensor, x: torch.Tensor) -> None:
        """Store x (T, n_kv, head_dim) at `positions` (T,), quantizing each block (the reference path)."""
        x = x.transpose(0, 1)  # (n_kv, T, head_dim)
        if not self.kind.quantized:
            self.data.index_copy_(1, positions, x.to(self.data.dtype))
            return
        q, d = ops.quantize_q8_0(x) if self.kind.name == "q8_0" else ops.quantize_q4_0(x)
        self.data.index_copy_(1, positions, q)
        self.scale.index_copy_(1, positions, d)

    def write_rows(self, slots: torch.Tensor, positions: torch.Tensor, x: torch.Tensor) -> None:
        """A pooled layer: store row b of x (B, n_kv, head_dim) at positions[b] of slot slots[b]."""
        if not self.kind.quantized:
            self.data[slots, :, positions] = x.to(self.data.dtype)
            return
        q, d = ops.quantize_q8_0(x) if self.kind.name == "q8_0" else ops.quantize_q4_0(x)
        self.data[slots, :, positions] = q
        self.scale[slots, :, positions] = d

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) dequantized: (n_kv, stop - start, head_dim) fp32."""
        data = self.data[:, start:stop]
        if not self.kind.quantized:
            return data.float()
        d = self.scale[:, start:stop]
        return ops.dequantize_q8_0(data, d) if self.kind.name == "q8_0" else ops.dequantize_q4_0(data, d)


@dataclass
class CacheTensor:
    """K or V of every layer: data (n_layers, n_kv, max_ctx, ...), scale (n_layers, n_kv, max_ctx, hd/32) or None;
    pooled: (n_layers, n_slots, n_kv, max_ctx, ...)."""

    kind: CacheType
    data: torch.Tensor
    scale: torch.Tensor | None
    head_dim: int

    @classmethod
    def allocate(cls, kind: CacheType, n_layers: int, n_kv: int, max_ctx: int, head_dim: int,
                 device: str | torch.device, n_slots: int | None = None) -> "CacheTensor":
        """Zeros for every layer; with `n_slots`, a slot dimension after the layer one (a pool)."""
        if kind.quantized and head_dim % kind.block:
            raise GGUFLMError(f"a {kind.name} cache needs a head size that is a multiple of {kind.block}, "
                              f"and this model's is {head_dim} (use f16, bf16 or f32)")
        lead = (n_layers, n_kv, max_ctx) if n_slots is None else (n_layers, n_slots, n_kv, max_ctx)
        data = torch.zeros((*lead, head_dim // kind.per_byte), dtype=kind.dtype, device=device)
        scale = None
        if kind.quantized:
            scale = torch.zeros((*lead, head_dim // kind.block), dtype=torch.float16, device=device)
        return cls(kind, data, scale, head_dim)

    def layer(self, i: int) -> CacheLayer:
        return CacheLayer(self.kind, self.data[i], None if self.scale is None else self.scale[i], self.head_dim)

    def slot(self, s: int) -> "CacheTensor":
        """Slot s of a pooled tensor: a view (n_layers, n_kv, max_ctx, ...) sharing its memory."""
        return CacheTensor(self.kind, self.data[:, s], None if self.scale is None else self.scale[:, s], self.head_dim)

    @property
    def nbytes(self) -> int:
        scales = 0 if self.scale is None else self.scale.numel() * self.scale.element_size()
        return self.data.numel() * self.data.element_size() + scales

    def fill_random(self, stop: int) -> None:
        """Random rows [0, stop) of every layer (benchmarks: decode speed does not depend on the values)."""
        if self.kind.quantized:
            self.data[:, :, :stop].random_(0, 256 if self.kind.dtype == torch.uint8 else 127)
            self.scale[:, :, :stop].uniform_(0.001, 0.01)
        else:
            self.data[:, :, :stop].normal_()


@dataclass
class _KV:
    """K and V of every layer (plain or pooled), and what both kinds answer alike."""

    k: CacheTensor
    v: CacheTensor

    def layer(self, i: int) -> tuple[CacheLayer, CacheLayer]:
        return self.k.layer(i), self.v.layer(i)

    @property
    def max_ctx(self) -> int:
        return self.k.data.shape[-2]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def _kinds(k_type: str | torch.dtype, v_type: str | torch.dtype | None) -> tuple[CacheType, CacheType]:
    k_kind = cache_type(k_type)
    return k_kind, k_kind if v_type is None else cache_type(v_type)


@dataclass
class KVCache(_KV):
    length: int = 0  # positions [0, length) hold valid entries

    @classmethod
    def allocate(cls, cfg, max_ctx: int, device: str | torch.device, k_type: str | torch.dtype,
                 v_type: str | torch.dtype | None = None) -> "KVCache":
        """A cache for `max_ctx` positions of every layer; V in K's type unless given."""
        k_kind, v_kind = _kinds(k_type, v_type)
        dims = (cfg.n_layers, cfg.n_kv_heads, max_ctx, cfg.head_dim)
        return cls(CacheTensor.allocate(k_kind, *dims, device), CacheTensor.allocate(v_kind, *dims, device))

    @property
    def row_bytes(self) -> int:
        """Bytes of K and V of one position, all layers (scales included): what attention reads per cached token."""
        return self.nbytes // self.max_ctx


@dataclass
class KVPool(_KV):
    """Caches of `n_slots` sequences in one allocation, K and V (n_layers, n_slots, n_kv, max_ctx, ...).

    `slots[s]` is slot s as a plain `KVCache` view with a length of its own (prefill and the
    single-sequence code run on it unchanged); `layer(i)` gives pooled layers (n_slots, n_kv, ...)
    for the batched decode step, which reads and writes each row's own slot.
    """

    slots: list[KVCache] = field(init=False)

    def __post_init__(self) -> None:
        self.slots = [KVCache(self.k.slot(s), self.v.slot(s)) for s in range(self.k.data.shape[1])]

    @classmethod
    def allocate(cls, cfg, max_ctx: int, n_slots: int, device: str | torch.device, k_type: str | torch.dtype,
                 v_type: str | torch.dtype | None = None) -> "KVPool":
        k_kind, v_kind = _kinds(k_type, v_type)
        dims = (cfg.n_layers, cfg.n_kv_heads, max_ctx, cfg.head_dim, device, n_slots)
        return cls(CacheTensor.allocate(k_kind, *dims), CacheTensor.allocate(v_kind, *dims))

    @property
    def n_slots(self) -> int:
        return len(self.slots)


def bytes_per_token(cfg, k_type: str, v_type: str) -> float:
    """Cache bytes one position takes for a config and the two cache types."""
    per_head = cache_type(k_type).row_bytes(cfg.head_dim) + cache_type(v_type).row_bytes(cfg.head_dim)
    return cfg.n_layers * cfg.n_kv_heads * per_head

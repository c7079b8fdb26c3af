"""The one torch reference of each op: the reference backend is built from these, and every Triton
kernel's test compares against them. Activations are fp32; weights stay packed until used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gguflm.quants import PackedWeight, StackedWeight

# fp32 rows expanded at a time: a whole expanded matrix (a 128k-vocab head is 1 GiB) would be
# allocated and page-faulted afresh on every call; chunks under glibc's mmap threshold are reused,
# and a block that stays in a core's L2 cache is read from there by every row of a batched step.
EXPAND_BYTES = 1 << 20

# ---------------------------------------------------------------------------- matrices


def linear(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (T, K) @ W^T (+ bias) -> (T, N) fp32, expanding W to fp32 a block of rows at a time."""
    if isinstance(w, StackedWeight):  # mixed formats: each piece in its own
        return _stacked(linear, x, w, bias)
    x = x.float()
    n, k = w.shape
    step = max(1, EXPAND_BYTES // (4 * k))
    if step >= n or w.fmt.torch_dtype == torch.float32:  # F32 is used as it lies
        return F.linear(x, w.dequantize(), bias)
    out = torch.empty(x.shape[:-1] + (n,), dtype=torch.float32, device=x.device)
    for a in range(0, n, step):
        out[..., a : a + step] = F.linear(x, w.rows(slice(a, a + step)).dequantize())
    return out if bias is None else out + bias


def linear_rows(x: torch.Tensor, w: PackedWeight | StackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`linear` with each row of x (B, K) multiplied as a (1, K) product of its own: bit for bit what
    `linear` gives that row alone, whatever the other rows (a matmul's summation order depends on its
    M). The weight is still expanded once per block of rows and read by every row from there."""
    if isinstance(w, StackedWeight):
        return _stacked(linear_rows, x, w, bias)
    x = x.float()
    b, (n, k) = x.shape[0], w.shape
    step = n if w.fmt.torch_dtype == torch.float32 else max(1, EXPAND_BYTES // (4 * k))
    out = torch.empty((b, n), dtype=torch.float32, device=x.device)
    for a in range(0, n, step):
        part = w.dequantize() if step >= n else w.rows(slice(a, a + step)).dequantize()  # (n', K)
        out[:, a : a + step] = torch.bmm(x[:, None, :], part.t().expand(b, k, part.shape[0]))[:, 0]
    return out if bias is None else out + bias


def _stacked(product, x: torch.Tensor, w: StackedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """`product` (linear or linear_rows) of each piece of a stacked weight, side by side along N."""
    out = torch.cat([product(x, piece) for piece in w.pieces], dim=-1)
    return out if bias is None else out + bias


def embed(w: PackedWeight, tokens: torch.Tensor) -> torch.Tensor:
    """Rows of the embedding table: (T,) -> (T, dim) fp32."""
    return w.rows(tokens).dequantize()


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for a fused (..., 2F) product: gate is the first half, up the second."""
    gate, up = gate_up.float().chunk(2, dim=-1)
    return F.silu(gate) * up


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim, in fp32."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


# ---------------------------------------------------------------------------- rotary embedding


@dataclass(frozen=True)
class Rope:
    """mode "normal" rotates (x[2i], x[2i+1]) (llama); "neox" rotates (x[i], x[i + rot_dim/2]).

    theta_i = (pos / pos_scale) * base^(-2i/rot_dim) / freq_factors[i]; dims >= rot_dim pass through.
    """

    head_dim: int
    rot_dim: int | None = None  # None: the whole head
    base: float = 10000.0
    mode: str = "normal"
    pos_scale: float = 1.0  # linear position scaling
    freq_factors: torch.Tensor | None = None  # fp32 (rot_dim/2,), Llama 3.1 "rope_freqs"

    def __post_init__(self):
        rot = self.rot_dim if self.rot_dim is not None else self.head_dim
        if self.mode not in ("normal", "neox"):
            raise ValueError(f"rope mode must be 'normal' or 'neox', got {self.mode!r}")
        if rot % 2 or not 0 < rot <= self.head_dim:
            raise ValueError(f"rope rot_dim must be even and <= head_dim {self.head_dim}, got {rot}")
        object.__setattr__(self, "rot_dim", rot)
        ff = self.freq_factors
        if ff is not None and (tuple(ff.shape) != (rot // 2,) or ff.dtype != torch.float32):
            raise ValueError(f"rope freq_factors must be fp32 ({rot // 2},), got {ff.dtype} {tuple(ff.shape)}")

    @classmethod
    def of(cls, cfg, freq_factors: torch.Tensor | None = None) -> "Rope":
        """The rotation a ModelConfig describes (with the file's `rope_freqs`, if any)."""
        return cls(head_dim=cfg.head_dim, rot_dim=cfg.rope_dim, base=cfg.rope_base, mode=cfg.rope_mode,
                   pos_scale=cfg.rope_scale, freq_factors=freq_factors)


def rope_angles(rope: Rope, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (T, rot_dim / 2) fp32, for positions (T,); the angles are computed in fp64
    on the positions' device (no host round trip, so a CUDA graph can capture it)."""
    half = rope.rot_dim // 2
    inv_freq = rope.base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) * 2 / rope.rot_dim)
    if rope.freq_factors is not None:
        inv_freq = inv_freq / rope.freq_factors.double()
    theta = (positions.double()[:, None] / rope.pos_scale) * inv_freq[None, :]  # (T, half)
    return theta.cos().float(), theta.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mode: str) -> torch.Tensor:
    """Rotate the first rot_dim dims of each head of x (T, heads, head_dim); returns fp32."""
    rot = 2 * cos.shape[-1]
    x = x.float()
    r, rest = x[..., :rot], x[..., rot:]
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, rot/2)
    if mode == "normal":  # adjacent pairs (x[2i], x[2i+1])
        a, b = r[..., 0::2], r[..., 1::2]
        rotated = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:  # "neox": halves (x[i], x[i + rot/2])
        a, b = r[..., : rot // 2], r[..., rot // 2 :]
        rotated = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((rotated, rest), dim=-1)


# ---------------------------------------------------------------------------- attention


def qkv_heads(qkv: torch.Tensor, positions: torch.Tensor, rope: Rope, n_heads: int, n_kv: int,
              q_norm: torch.Tensor | None = None, k_norm: torch.Tensor | None = None,
              eps: float = 1e-6, angles: tuple[torch.Tensor, torch.Tensor] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused qkv (T, (n_heads + 2 n_kv) * hd) into q (T, n_heads, hd), k and v (T, n_kv, hd):
    q and k RMS-normalized per head when norms are given (Qwen3), then rotated at `positions`
    (`angles`: `rope_angles(rope, positions)` when the caller has them already, as every layer can share them)."""
    t, hd = qkv.shape[0], rope.head_dim
    q, k, v = qkv.float().split((n_heads * hd, n_kv * hd, n_kv * hd), dim=-1)
    q, k, v = q.reshape(t, n_heads, hd), k.reshape(t, n_kv, hd), v.reshape(t, n_kv, hd)
    if q_norm is not None:
        q = rmsnorm(q, q_norm, eps)
    if k_norm is not None:
        k = rmsnorm(k, k_norm, eps)
    cos, sin = angles if angles is not None else rope_angles(rope, positions)
    return rotate(q, cos, sin, rope.mode), rotate(k, cos, sin, rope.mode), v


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v with grouped KV heads, in fp32.

    q (T, n_heads, hd); keys, values (n_kv, S, hd); mask (T, S) bool, True where a query may look
    (None: everything). Returns (T, n_heads * hd).
    """
    t, n_heads, hd = q.shape
    n_kv = keys.shape[0]
    group = n_heads // n_kv
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    if t == 1:  # one query (decode): the grouped heads share their K/V without copies, the softmax written out
        scores = torch.bmm(q.float().reshape(n_kv, group, hd), keys.float().transpose(1, 2)) * scale  # (n_kv, g, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.bmm(torch.softmax(scores, dim=-1), values.float()).reshape(1, n_heads * hd)
    keys = keys.float().repeat_interleave(group, dim=0)  # (n_heads, S, hd)
    values = values.float().repeat_interleave(group, dim=0)
    out = F.scaled_dot_product_attention(q.float().transpose(0, 1), keys, values, attn_mask=mask, scale=scale)
    return out.transpose(0, 1).reshape(t, n_heads * hd)  # (T, n_heads * hd)


def causal_mask(positions: torch.Tensor, span: int) -> torch.Tensor:
    """(T, span) bool: query at positions[t] sees cache rows [0, positions[t]]."""
    return torch.arange(span, device=positions.device)[None, :] <= positions[:, None]


# ---------------------------------------------------------------------------- 32-value blocks (the KV cache)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(..., K) -> (..., K / 32, 32) fp32."""
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // 32, 32)


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / d)


def quantize_q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's Q8_0 of x (..., K): q int8 (..., K) and d fp16 (..., K/32), bit-exact with gguf-py:
    d = max|x| / 127, q = x / d rounded half away from zero."""
    b = _blocks(x)
    d = b.abs().amax(-1, keepdim=True) / 127
    a = b * _reciprocal(d)
    f = a.abs().floor()
    q = torch.sign(a) * (f + (2 * (a.abs() - f)).floor())
    return q.to(torch.int8).reshape(x.shape), d.squeeze(-1).half()


def quantize_q4_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's Q4_0 of x (..., K): packed nibbles uint8 (..., K/2) and d fp16 (..., K/32), bit-exact with
    gguf-py: d = (the value of largest magnitude) / -8, q = trunc(x / d + 8.5) clamped to 15; byte i of
    a block holds q[i] (low nibble) and q[i + 16] (high)."""
    b = _blocks(x)
    top = b.gather(-1, b.abs().argmax(-1, keepdim=True))  # the first value of largest magnitude
    d = top / -8
    q = torch.trunc(b * _reciprocal(d) + 8.5).clamp(0, 15).to(torch.uint8)  # (..., K/32, 32)
    packed = q[..., :16] | (q[..., 16:] << 4)
    return packed.reshape(*x.shape[:-1], x.shape[-1] // 2), d.squeeze(-1).half()


def dequantize_q8_0(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(..., K) fp32 from q int8 (..., K) and d fp16 (..., K/32)."""
    return (_blocks(q) * d.float().unsqueeze(-1)).reshape(q.shape)


def dequantize_q4_0(packed: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(..., K) fp32 from packed nibbles uint8 (..., K/2) and d fp16 (..., K/32)."""
    b = packed.reshape(*packed.shape[:-1], packed.shape[-1] // 16, 16)
    q = torch.cat((b & 15, b >> 4), dim=-1).float() - 8  # (..., K/32, 32)
    return (q * d.float().unsqueeze(-1)).reshape(*packed.shape[:-1], packed.shape[-1] * 2)

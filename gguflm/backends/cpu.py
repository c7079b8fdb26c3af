"""The CPU backend: the reference transformer with its products computed by the CPU kernels
(`gguflm.cpu`): the packed blocks are read where they lie, never expanded as a whole per call.

Its layer loop is the reference's, step for step, with the small ops between the products fused
(`gguflm.cpu.step`: residual add + RMSNorm, QKV split + RoPE, SiLU * up; one compiled call each
where the reference makes several torch ops, the main per-token cost at decode besides the
products). A decode step's attention over an fp32 cache is one compiled call per layer too
(`step.attend_cached`); prefill's attention, the embedding and the KV cache are the reference's own
code; Qwen3's per-head q/k norms take the reference loop whole. The loop keeps its activations as
numpy arrays from the embedding to the last norm: at decode a tensor's creation and `.numpy()` cost
more than many of the kernels they feed (SmolLM2 Q4_K_M: 17.4 ms a token with tensors between the
products, 13.1 with arrays). The kernels run on `threads` threads, torch's ops on one.
"""

from __future__ import annotations

import numpy as np
import torch

from gguflm import cpu, ops
from gguflm.backends.reference import ReferenceBackend
from gguflm.cpu import step
from gguflm.quants import PackedWeight
from gguflm.threads import check_threads


class CpuBackend(ReferenceBackend):
    """`ReferenceBackend` with `gguflm.cpu.linear` (matvec or GEMM path) and `linear_rows` (row-exact)."""

    cache_dtype = torch.float32

    def __init__(self, cfg, weights, threads: int | None = None):
        super().__init__(cfg, weights)
        self.threads = check_threads(threads)
        norms = [(layer.attn_norm, layer.ffn_norm) for layer in weights.layers]  # (dim,) each, as numpy fp32
        self._norms = [tuple(_array(n) for n in pair) for pair in norms]
        self._output_norm = _array(weights.output_norm)
        self._bqkv = [None if layer.bqkv is None else _array(layer.bqkv) for layer in weights.layers]

    def linear(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear(x, w, bias, self.threads)

    def linear_rows(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear_rows(x, w, bias, self.threads)

    def _attend_span(self, cache, positions: torch.Tensor, span: int):
        """A decode step (one query) over an fp32 cache: store and attend in one compiled call per layer
        (`step.attend_cached`; the reference's torch ops took 130 us a layer); otherwise the reference's.
        Either way an attend on arrays (`_layers`)."""
        if positions.shape[0] != 1 or not _f32(cache):  # callers' spans always reach past the position
            return _on_arrays(super()._attend_span(cache, positions, span))
        caches, where = (cache.k.data.numpy(), cache.v.data.numpy()), positions.numpy()

        def attend(i: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
            return step.attend_cached(q, k, v, caches, i, where)

        return attend

    def _attend_rows(self, pool, positions: torch.Tensor, slots: torch.Tensor):
        """Batched decode: each row as `_attend_span` attends it alone, in its own slot."""
        if not _f32(pool):
            return _on_arrays(super()._attend_rows(pool, positions, slots))
        where = positions.numpy()
        caches = [(pool.slots[s].k.data.numpy(), pool.slots[s].v.data.numpy()) for s in slots.tolist()]

        def attend(i: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
            return np.concatenate([step.attend_cached(q[b : b + 1], k[b : b + 1], v[b : b + 1], c, i, where[b : b + 1])
                                   for b, c in enumerate(caches)])  # (B, q_dim)

        return attend

    def _layers(self, tokens: torch.Tensor, positions: torch.Tensor, attend, linear=None) -> torch.Tensor:
        """`ReferenceBackend._layers` with the fused step ops, on numpy arrays from the embedding to the
        last norm (`attend` takes and gives arrays): each layer's residual add is fused with the RMSNorm
        after it (the next layer's, or the output norm after the last). `linear`: None or
        `self.linear_rows` (every row as if alone)."""
        cfg, w = self.cfg, self.weights
        if not w.layers or any(layer.q_norm is not None or layer.k_norm is not None for layer in w.layers):
            return super()._layers(tokens, positions, _on_tensors(attend), linear)
        rows, n_threads = linear is not None and linear == self.linear_rows, self.threads

        def product(x: np.ndarray, weight, bias=None) -> np.ndarray:
            if rows:
                return cpu.matvecs(x, weight, bias, n_threads, ops.linear_rows)
            return cpu.linear_array(x, weight, bias, n_threads)

        x = _array(ops.embed(w.tok_embd, tokens))  # (T, dim): the residual stream, added to in place
        h = np.empty_like(x)  # (T, dim): the normed input of the next product
        angles = tuple(_array(a) for a in ops.rope_angles(self.rope, positions))  # (cos, sin) (T, rot / 2) each
        eps, hd = np.float32(cfg.norm_eps), self.rope.head_dim
        step.rmsnorm(x, self._norms[0][0], eps, h)
        for i, layer in enumerate(w.layers):
            qkv = product(h, layer.wqkv, self._bqkv[i])  # (T, q_dim + 2 kv_dim)
            q, k, v = step.qkv_heads(qkv, angles, cfg.n_heads, cfg.n_kv_heads, hd, self.rope.mode)
            step.add_rmsnorm(x, product(attend(i, q, k, v), layer.wo), self._norms[i][1], eps, h)
            down = product(step.silu_mul(product(h, layer.w_gate_up)), layer.w_down)
            step.add_rmsnorm(x, down, self._norms[i + 1][0] if i + 1 < len(w.layers) else self._output_norm, eps, h)
        return torch.from_numpy(h)


def _array(t: torch.Tensor) -> np.ndarray:
    """`t` as an fp32 C-contiguous array (a copy where it is another dtype or strided)."""
    return t.float().contiguous().numpy()


def _on_arrays(attend):
    """A tensor attend (the reference's) as `_layers` calls it: arrays in, an array out."""

    def on_arrays(i: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        return _array(attend(i, torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)))

    on_arrays.tensors = attend
    return on_arrays


def _on_tensors(attend):
    """An attend made for `_layers` as the reference's layer loop calls it: tensors in, a tensor out."""
    if hasattr(attend, "tensors"):
        return attend.tensors

    def on_tensors(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(attend(i, _array(q), _array(k), _array(v)))

    return on_tensors


def _f32(cache) -> bool:
    """Whether both K and V of a cache (or pool) are held as fp32 (the fused attention's cache)."""
    return cache.k.kind.name == "f32" and cache.v.kind.name == "f32"

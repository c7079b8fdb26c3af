"""The CPU backend: the reference transformer with its products computed by the CPU kernels
(`gguflm.cpu`): the packed blocks are read where they lie, never expanded as a whole per call.

Its layer loop is the reference's, step for step, with the small ops between the products fused
(`gguflm.cpu.step`: residual add + RMSNorm, QKV split + RoPE, SiLU * up; one compiled call each
where the reference makes several torch ops, the main per-token cost at decode besides the
products). A decode step's attention over an fp32 cache is one compiled call per layer too
(`step.attend_cached`); prefill's attention, the embedding and the KV cache are the reference's own
code; Qwen3's per-head q/k norms take the reference loop whole. The kernels run on `threads` threads, torch's ops on one.
"""

from __future__ import annotations

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
        self._norms = [tuple(n.float().contiguous().numpy() for n in pair) for pair in norms]
        self._output_norm = weights.output_norm.float().contiguous().numpy()

    def linear(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear(x, w, bias, self.threads)

    def linear_rows(self, x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
        return cpu.linear_rows(x, w, bias, self.threads)

    def _attend_span(self, cache, positions: torch.Tensor, span: int):
        """A decode step (one query) over an fp32 cache: store and attend in one compiled call per layer
        (`step.attend_cached`; the reference's torch ops took 130 us a layer); otherwise the reference's."""
        if positions.shape[0] != 1 or not _f32(cache):  # callers' spans always reach past the position
            return super()._attend_span(cache, positions, span)
        caches, where = (cache.k.data.numpy(), cache.v.data.numpy()), positions.numpy()

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return step.attend_cached(q, k, v, caches, i, where)

        return attend

    def _attend_rows(self, pool, positions: torch.Tensor, slots: torch.Tensor):
        """Batched decode: each row as `_attend_span` attends it alone, in its own slot."""
        if not _f32(pool):
            return super()._attend_rows(pool, positions, slots)
        where = positions.numpy()
        caches = [(pool.slots[s].k.data.numpy(), pool.slots[s].v.data.numpy()) for s in slots.tolist()]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.cat([step.attend_cached(q[b : b + 1], k[b : b + 1], v[b : b + 1], c, i, where[b : b + 1])
                              for b, c in enumerate(caches)])  # (B, q_dim)

        return attend

    def _layers(self, tokens: torch.Tensor, positions: torch.Tensor, attend, linear=None) -> torch.Tensor:
        """`ReferenceBackend._layers` with the fused step ops: each layer's residual add is fused with the
        RMSNorm after it (the next layer's, or the output norm after the last)."""
        cfg, w = self.cfg, self.weights
        if not w.layers or any(layer.q_norm is not None or layer.k_norm is not None for layer in w.layers):
            return super()._layers(tokens, positions, attend, linear)
        linear = linear or self.linear
        x = ops.embed(w.tok_embd, tokens).float().contiguous()  # (T, dim): the residual stream, added to in place
        h = torch.empty_like(x)  # (T, dim): the normed input of the next product
        angles = ops.rope_angles(self.rope, positions)  # (cos, sin), each (T, rot_dim / 2): every layer's
        eps, hd = cfg.norm_eps, self.rope.head_dim
        step.rmsnorm(x, self._norms[0][0], eps, h)
        for i, layer in enumerate(w.layers):
            qkv = linear(h, layer.wqkv, layer.bqkv)  # (T, q_dim + 2 kv_dim)
            q, k, v = step.qkv_heads(qkv, angles, cfg.n_heads, cfg.n_kv_heads, hd, self.rope.mode)
            step.add_rmsnorm(x, linear(attend(i, q, k, v), layer.wo), self._norms[i][1], eps, h)
            down = linear(step.silu_mul(linear(h, layer.w_gate_up)), layer.w_down)
            step.add_rmsnorm(x, down, self._norms[i + 1][0] if i + 1 < len(w.layers) else self._output_norm, eps, h)
        return h


def _f32(cache) -> bool:
    """Whether both K and V of a cache (or pool) are held as fp32 (the fused attention's cache)."""
    return cache.k.kind.name == "f32" and cache.v.kind.name == "f32"

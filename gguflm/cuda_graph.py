"""The decode step, output head and sampler captured once as a CUDA graph and replayed per token.

Static inputs: the token and its position (device tensors), the sampler parameters that are
tensors (`SamplerTensors`: temperature, top-p, min-p, penalty; updated in place) and a ring
buffer of recent tokens for the repetition penalty. What shapes the captured code (argmax-only
or not, the penalty window, top-k) is the `GraphKey`: each key is captured once. The graph ends by feeding its sampled token and the next position back into its own
inputs, so a step is one `replay()` and one `.item()` (the only host sync per token), and the
engine can launch step k+1 before its caller has handled token k.

Serving batches B sequences into one step (`BatchGraph`): one graph per batch-size bucket (1, 2, 4,
..., the slot count), as vLLM does; a batch of 3 replays the graph of 4 with one padding row, which
writes and reads only the pool's scratch slot. Sampling runs after it, per sequence.

RNG: the engine's own seeded `torch.Generator` is registered with the graph before capture
(`CUDAGraph.register_generator_state`). Each replay then draws Philox numbers at the offset
the generator holds at replay time and advances it, as an eager call would: re-seeding needs
no re-capture and a seeded run reproduces itself. No global RNG state is touched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from gguflm.backends import Backend
from gguflm.kv_cache import KVCache, KVPool
from gguflm.sampling import SamplerTensors, SamplingParams, sample


def capture_graph(body, device: torch.device, reset=None, generator: torch.Generator | None = None):
    """`body` run twice on a side stream (compiles the Triton kernels, settles the allocator), then captured.
    `reset()` runs before the warm-up and again before the capture; `generator` is registered with the graph."""
    reset = reset or (lambda: None)
    reset()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(side)
    reset()
    graph = torch.cuda.CUDAGraph()
    if generator is not None:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        body()
    return graph


@dataclass(frozen=True)
class GraphKey:
    """What the captured code depends on; anything else is a tensor copied in."""

    argmax: bool  # greedy without a repetition penalty: argmax only, no sort, no RNG
    history: int  # ring buffer length for the repetition penalty (0: none kept)
    top_k: int  # candidates ranked with topk (0: the whole vocabulary sorted)

    @classmethod
    def of(cls, p: SamplingParams) -> "GraphKey":
        if p.argmax_only:
            return cls(True, 0, 0)
        return cls(False, p.penalty_window, p.top_k)


class DecodeGraph:
    """One captured decode step: copy in with `start`, then `launch()` and `result()` per token.

    capture=False runs the same body eagerly each step (how the tests check its logic on the CPU).
    """

    def __init__(self, backend: Backend, cache: KVCache, key: GraphKey, tensors: SamplerTensors,
                 generator: torch.Generator, capture: bool = True):
        dev = backend.device
        self.backend, self.cache, self.key = backend, cache, key
        self.tensors, self.generator = tensors, generator
        self.token = torch.zeros(1, dtype=torch.long, device=dev)  # (1,) the token fed at `pos`
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)  # (1,)
        self.ring = torch.full((max(1, key.history),), -1, dtype=torch.long, device=dev)  # (R,) token at p % R
        self.next = torch.zeros(1, dtype=torch.long, device=dev)  # (1,) the sampled token
        self.graph = self._capture() if capture else None

    @torch.inference_mode()
    def _body(self) -> None:
        """The captured work: cache write at pos, all layers, head, sampling, then feed back."""
        if self.key.history:
            self.ring.index_copy_(0, self.pos % self.key.history, self.token)
        logits = self.backend.decode_step(self.token, self.pos, self.cache)  # (n_vocab,) static buffer
        if self.key.argmax:
            self.next.copy_(logits.argmax().reshape(1))
        else:
            self.next.copy_(sample(logits, self.tensors, self.ring, self.generator, top_k=self.key.top_k))
        self.token.copy_(self.next)
        self.pos.add_(1)

    def _capture(self) -> torch.cuda.CUDAGraph:
        # Warm-up writes cache rows at cache.length and the one after, which no valid entry uses yet.
        return capture_graph(self._body, self.backend.device, lambda: self.pos.fill_(self.cache.length),
                             None if self.key.argmax else self.generator)

    def start(self, token: int, pos: int, recent: list[int]) -> None:
        """Copy in the first token to feed, its position, and the tokens before it (for the penalty)."""
        self.token.fill_(token)
        self.pos.fill_(pos)
        n = self.key.history
        if n:
            ring = [-1] * n
            for p, t in enumerate(recent[-n:], start=pos - len(recent[-n:])):
                ring[p % n] = t
            self.ring.copy_(torch.tensor(ring, dtype=torch.long), non_blocking=False)

    def launch(self) -> None:
        """Enqueue one step (no sync): it feeds the current token and samples the next into `self.next`."""
        if self.graph is None:
            self._body()
        else:
            self.graph.replay()

    def result(self) -> int:
        """The token the last launched step sampled: the one host sync per token."""
        return int(self.next.item())


class DecodeGraphs:
    """The captured graphs of one backend and cache, by sampling mode, sharing one generator and sampler."""

    def __init__(self, backend: Backend, cache: KVCache, tensors: SamplerTensors, generator: torch.Generator,
                 capture: bool = True):
        self.backend, self.cache = backend, cache
        self.tensors, self.generator = tensors, generator
        self.capture = capture
        self.graphs: dict[GraphKey, DecodeGraph] = {}
        self.failed: set[GraphKey] = set()

    def get(self, sampling: SamplingParams) -> DecodeGraph | None:
        """The graph for this sampling mode, captured on first use; None where it cannot be captured."""
        key = GraphKey.of(sampling)
        if key in self.failed:
            return None
        if key not in self.graphs:
            try:
                graph = DecodeGraph(self.backend, self.cache, key, self.tensors, self.generator, self.capture)
            except RuntimeError as e:  # an op that cannot be captured: say so once, then decode eagerly
                warnings.warn(f"CUDA graph capture failed, decoding without graphs: {e}", stacklevel=2)
                self.failed.add(key)
                return None
            self.graphs[key] = graph
        return self.graphs[key]


# ---------------------------------------------------------------------------- batched decode (serving)


def buckets(n_slots: int) -> tuple[int, ...]:
    """The batch sizes that get a graph: powers of two below `n_slots`, then `n_slots` itself."""
    sizes, b = [], 1
    while b < n_slots:
        sizes.append(b)
        b *= 2
    return (*sizes, n_slots)


class BatchGraph:
    """The batched decode step for a bucket of `rows` rows: static tokens, positions and slots, then logits.

    Rows past the batch are padding: token 0 at position 0 of the scratch slot. capture=False runs the
    same padded body eagerly (how the tests check the bucket logic on the CPU).
    """

    def __init__(self, backend: Backend, pool: KVPool, rows: int, scratch: int, capture: bool = True):
        dev = backend.device
        self.backend, self.pool, self.rows, self.scratch = backend, pool, rows, scratch
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)  # (rows,)
        self.positions = torch.zeros(rows, dtype=torch.int32, device=dev)  # (rows,)
        self.slots = torch.full((rows,), scratch, dtype=torch.int32, device=dev)  # (rows,)
        self.logits: torch.Tensor | None = None  # (rows, n_vocab), written by each step
        self.graph = self._capture() if capture else None

    @torch.inference_mode()
    def _body(self) -> None:
        self.logits = self.backend.decode_batch(self.tokens, self.positions, self.slots, self.pool)

    def _capture(self) -> torch.cuda.CUDAGraph:
        # warm-up with every row on the scratch slot (position 0): no real slot is touched
        return capture_graph(self._body, self.backend.device)

    def run(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        """Copy in one step's rows (padded to the bucket), run it; logits (len(tokens), n_vocab)."""
        n, pad = len(tokens), self.rows - len(tokens)
        host = torch.tensor([tokens + [0] * pad, positions + [0] * pad, slots + [self.scratch] * pad])  # (3, rows)
        self.tokens.copy_(host[0])
        self.positions.copy_(host[1])
        self.slots.copy_(host[2])
        if self.graph is None:
            self._body()
        else:
            self.graph.replay()
        return self.logits[:n]


class BatchGraphs:
    """The batched step of one backend and pool, a graph per bucket captured on first use; eager where
    capture fails (said once)."""

    def __init__(self, backend: Backend, pool: KVPool, n_slots: int, capture: bool = True):
        self.backend, self.pool, self.capture = backend, pool, capture
        self.buckets = buckets(n_slots)
        self.scratch = pool.n_slots - 1  # a one-slot pool has only bucket 1: never padded
        self.graphs: dict[int, BatchGraph] = {}
        self.failed = False

    def bucket(self, n: int) -> int:
        """The smallest bucket that holds n rows."""
        return next(b for b in self.buckets if b >= n)

    def run(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        if not self.failed:
            size = self.bucket(len(tokens))
            if size not in self.graphs:
                try:
                    self.graphs[size] = BatchGraph(self.backend, self.pool, size, self.scratch, self.capture)
                except RuntimeError as e:
                    warnings.warn(f"CUDA graph capture of the batched step failed, decoding without graphs: {e}",
                                  stacklevel=2)
                    self.failed = True
            if not self.failed:
                return self.graphs[size].run(tokens, positions, slots)
        return eager_batch(self.backend, self.pool, tokens, positions, slots)


def eager_batch(backend: Backend, pool: KVPool, tokens: list[int], positions: list[int],
                slots: list[int]) -> torch.Tensor:
    """The batched decode step run directly, unpadded (no graph): logits (B, n_vocab)."""
    dev = backend.device
    return backend.decode_batch(torch.tensor(tokens, device=dev), torch.tensor(positions, dtype=torch.int32, device=dev),
                                torch.tensor(slots, dtype=torch.int32, device=dev), pool)

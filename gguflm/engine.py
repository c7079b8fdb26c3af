"""The engine, THE generation loop: one backend, a KV cache of one or more slots sized to the context,
and the tokens each slot holds. Every way in (the Python API, `run`, `chat`, the benchmark, the
server) generates through it.

`generate` streams text; `generate_ids` streams token ids (slot 0). A new prompt reuses the longest
common prefix already in its slot, so a chat turn prefills only what the template added.
Sampling defaults to greedy (as transformers does) unless `SamplingParams` are given.
Serving uses the same pieces for many sequences: `start` prefills a slot, `step` decodes one token
for each of several slots in one batched step (a CUDA graph per batch-size bucket on a GPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from gguflm.backends import Backend
from gguflm.cuda_graph import BatchGraphs, DecodeGraph, DecodeGraphs, eager_batch
from gguflm.errors import GGUFLMError
from gguflm.info import human_bytes
from gguflm.kv_cache import bytes_per_token, cache_type
from gguflm.sampling import GREEDY, SamplerTensors, SamplingParams, pick, seed_generator
from gguflm.stop_strings import StopStrings

if TYPE_CHECKING:
    from gguflm.tokenizer import Tokenizer

PREFILL_CHUNK = 512  # tokens per prefill call: bounds activation memory for long prompts
CPU_DEFAULT_CTX = 4096  # the CPU cache is fp32; a model's full training context rarely fits
MAX_CHARS_PER_TOKEN = 64  # a text longer than this many characters per context token cannot fit: refuse it unread


@dataclass
class TurnStats:
    """Numbers for the last generate call."""

    prompt_tokens: int = 0  # the whole prompt
    prefilled_tokens: int = 0  # the part not already in the cache
    prefill_seconds: float = 0.0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    finish_reason: str = ""  # eog, length, stop, context, interrupted

    @property
    def prefill_tok_s(self) -> float:
        return self.prefilled_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tok_s(self) -> float:
        return (self.generated_tokens - 1) / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class EngineStats:
    total_prefilled: int = 0
    total_generated: int = 0
    last: TurnStats = field(default_factory=TurnStats)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a host clock reads true times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> int:
    """Bytes free for a new allocation: the GPU's free memory, or the host's MemAvailable (Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: let the allocation decide


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def cache_types(backend: Backend, k_type: str | None, v_type: str | None) -> tuple[str, str]:
    """The (K, V) cache type names: each the backend's default float type unless given."""
    return cache_type(k_type or backend.cache_dtype).name, cache_type(v_type or backend.cache_dtype).name


def choose_context(backend: Backend, requested: int | None, k_type: str | None = None,
                   v_type: str | None = None, slots: int = 1) -> tuple[int, str]:
    """The context size (per slot) to allocate and a message saying why, when it differs from what was asked.

    On CUDA the default is as much of the training context as fits in 90% of free memory,
    counting the real bytes per token of the cache types and every slot.
    """
    cfg = backend.cfg
    if requested is not None:
        if requested <= 0:
            raise GGUFLMError(f"context size must be positive, not {requested}")
        return requested, ""
    ctx = cfg.n_ctx_train
    if backend.device.type == "cpu":
        if ctx > CPU_DEFAULT_CTX:
            return CPU_DEFAULT_CTX, f"context capped at {CPU_DEFAULT_CTX} on the CPU (model trained for {ctx}; use --ctx)"
        return ctx, ""
    free, _ = torch.cuda.mem_get_info(backend.device)
    per_token = slots * bytes_per_token(cfg, *cache_types(backend, k_type, v_type))  # K and V of every layer
    fits = int(free * 0.9 // per_token)
    if fits < ctx:
        fits = max(256, fits // 256 * 256)
        return fits, f"context capped at {fits} tokens by free GPU memory (model trained for {ctx}; use --ctx)"
    return ctx, ""


class Engine:
    """Generation over one persistent KV cache; safe to interrupt between and inside steps.

    `self.tokens` is the truth: a step writes the cache first and appends its token after, so an
    interrupt anywhere leaves `tokens` a prefix of what the cache holds, and the next call
    resets `cache.length` from it. With `graphs` (default on CUDA) each decode step and its
    sampling replay one captured CUDA graph; `graphs=False` decodes eagerly. `capture=False`
    keeps the graph path but runs its step body eagerly each token (checks its logic on the CPU).
    `tokenizer` gives the default stop set (its end-of-generation ids) and text in `generate`.
    `slots` > 1 gives that many sequences a cache slot of `ctx` positions each (plus one scratch slot
    that the padding rows of a batch-size bucket write to), for `start` and `step`.
    """

    def __init__(self, backend: Backend, tokenizer: Tokenizer | None = None, ctx: int | None = None,
                 graphs: bool | None = None, capture: bool = True, cache_type_k: str | None = None,
                 cache_type_v: str | None = None, slots: int = 1):
        self.backend = backend
        self.tokenizer = tokenizer
        if graphs is None:
            graphs = backend.device.type == "cuda"
        if graphs and capture and backend.device.type != "cuda":
            raise GGUFLMError("CUDA graphs need a CUDA device (run without graphs on the CPU)")
        self.graphs = graphs
        self.capture = capture
        if slots < 1:
            raise GGUFLMError(f"the number of cache slots must be positive, not {slots}")
        self.cache_types = cache_types(backend, cache_type_k, cache_type_v)
        self.n_slots = slots
        pool_slots = slots + 1 if slots > 1 else slots  # the last one is scratch for padding rows
        self.ctx, self.context_message = choose_context(backend, ctx, *self.cache_types, slots=pool_slots)
        need = pool_slots * self.ctx * bytes_per_token(backend.cfg, *self.cache_types)
        free = free_memory(backend.device)
        if need > free:  # refused before allocating: a CPU allocation this large ends in the OOM killer
            raise GGUFLMError(f"a KV cache of {pool_slots} x {self.ctx} tokens needs {human_bytes(need)} but "
                              f"{human_bytes(free)} of memory is free (use a smaller --ctx)")
        try:
            self.pool = self.backend.new_pool(self.ctx, pool_slots, *self.cache_types)
        except (torch.OutOfMemoryError, MemoryError):
            raise GGUFLMError(f"a KV cache of {pool_slots} x {self.ctx} tokens does not fit in free memory "
                              "(use a smaller --ctx)") from None
        # what each slot holds: pool.slots[s].length == len(self.slot_tokens[s]) between steps
        self.slot_tokens: list[list[int]] = [[] for _ in range(pool_slots)]
        self.stats = EngineStats()
        # Static sampler state, updated in place each turn so captured graphs keep their addresses.
        self.sampler = SamplerTensors.from_params(SamplingParams(), self.device)
        self.generator = torch.Generator(device=self.device)
        self._graphs: DecodeGraphs | None = None
        self._batch_graphs: BatchGraphs | None = None
        self._busy = False  # one generation at a time in slot 0: it is one conversation

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def cache(self):
        """Slot 0's cache (the only one of a single-sequence engine)."""
        return self.pool.slots[0]

    @property
    def tokens(self) -> list[int]:
        """What slot 0's cache holds."""
        return self.slot_tokens[0]

    @tokens.setter
    def tokens(self, value: list[int]) -> None:
        self.slot_tokens[0] = value

    @property
    def cache_summary(self) -> str:
        """One line about the KV cache: its size in tokens, the K and V types, the memory it takes."""
        k, v = self.cache_types
        per = f" x {self.n_slots} slots" if self.n_slots > 1 else ""
        return f"KV cache {self.ctx} tokens{per}, K {k}, V {v}, {human_bytes(self.pool.nbytes)}"

    @property
    def captured(self) -> int:
        """How many decode graphs have been captured (one per sampling mode used)."""
        return 0 if self._graphs is None else len(self._graphs.graphs)

    def reset(self, slot: int = 0) -> None:
        """Forget the conversation in a slot (the cache memory is kept)."""
        self.truncate(0, slot)

    def truncate(self, n: int, slot: int = 0) -> None:
        """Keep only the first n cached tokens of a slot."""
        n = min(n, len(self.slot_tokens[slot]))
        self.slot_tokens[slot] = self.slot_tokens[slot][:n]
        self.pool.slots[slot].length = n

    # ------------------------------------------------------------------ steps

    def _prefill(self, tokens: list[int], slot: int = 0) -> torch.Tensor:
        """Append tokens to a slot's cache in chunks; returns the last position's logits (n_vocab,)."""
        logits = None
        cache, held = self.pool.slots[slot], self.slot_tokens[slot]
        for start in range(0, len(tokens), PREFILL_CHUNK):
            chunk = tokens[start : start + PREFILL_CHUNK]
            cache.length = len(held)
            logits = self.backend.prefill_last(chunk, cache)  # the head runs on one row per chunk
            held.extend(chunk)
        return logits

    def _decode(self, token: int) -> torch.Tensor:
        """Eager step: write `token` at the next position; returns logits (n_vocab,)."""
        self.cache.length = len(self.tokens)
        logits = self.backend.decode(token, self.cache)
        self.tokens.append(token)
        return logits

    def _pick(self, logits: torch.Tensor, sampling: SamplingParams) -> int:
        """Sample from logits (n_vocab,) eagerly, the penalty reading the last cached tokens."""
        return pick(logits, sampling, self.sampler, self.tokens, self.generator)

    def _decode_graph(self, sampling: SamplingParams) -> DecodeGraph | None:
        """The captured step for this sampling mode (captured on first use); None: decode eagerly."""
        if self._graphs is None:
            self._graphs = DecodeGraphs(self.backend, self.cache, self.sampler, self.generator, self.capture)
        self.cache.length = len(self.tokens)
        return self._graphs.get(sampling)

    # ------------------------------------------------------------------ generation

    def check_text(self, text: str) -> None:
        """A GGUFLMError for a text far too long to fit the context, before the tokenizer spends time on it."""
        if len(text) > MAX_CHARS_PER_TOKEN * self.ctx:
            raise GGUFLMError(f"the prompt has {len(text)} characters, more than a {self.ctx}-token context can "
                              "hold (use --ctx)")

    def start(self, slot: int, prompt: list[int]) -> torch.Tensor:
        """Make `slot` hold `prompt`: keep the longest prefix it already holds, prefill the rest; returns
        the last position's logits (n_vocab,). `stats.last` counts the turn's prompt and prefill."""
        self.check_prompt(prompt)
        turn = self.stats.last = TurnStats(prompt_tokens=len(prompt))
        reuse = min(common_prefix(self.slot_tokens[slot], prompt), len(prompt) - 1)  # one token gives logits
        self.truncate(reuse, slot)
        started = time.perf_counter()
        logits = self._prefill(prompt[reuse:], slot)
        self._sync()
        turn.prefilled_tokens = len(prompt) - reuse
        turn.prefill_seconds = time.perf_counter() - started
        self.stats.total_prefilled += turn.prefilled_tokens
        return logits

    def step(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One batched decode step: row b feeds tokens[b] at the end of slot slots[b]; returns logits
        (B, n_vocab) (on a GPU a static buffer, overwritten by the next step). Each slot must have room."""
        positions = [len(self.slot_tokens[s]) for s in slots]
        if len(set(slots)) != len(slots) or any(not 0 <= s < self.n_slots for s in slots):
            raise GGUFLMError(f"a batched step needs distinct slots in [0, {self.n_slots}), got {slots}")
        if positions and max(positions) >= self.ctx:
            raise GGUFLMError(f"a slot is full: {max(positions)} tokens in a context of {self.ctx}")
        if self.graphs:
            if self._batch_graphs is None:
                self._batch_graphs = BatchGraphs(self.backend, self.pool, self.n_slots, self.capture)
            logits = self._batch_graphs.run(tokens, positions, slots)
        else:
            logits = eager_batch(self.backend, self.pool, tokens, positions, slots)
        for s, t in zip(slots, tokens):  # the cache rows are written: the tokens follow
            self.slot_tokens[s].append(t)
            self.pool.slots[s].length = len(self.slot_tokens[s])
        return logits

    def check_prompt(self, prompt: list[int]) -> None:
        """A GGUFLMError unless the prompt leaves room for at least one generated token."""
        if not prompt:
            raise GGUFLMError("the prompt is empty: at least one token is needed")
        if len(prompt) >= self.ctx:
            raise GGUFLMError(f"the prompt has {len(prompt)} tokens but the context holds {self.ctx} (use --ctx)")

    def generate_ids(
        self,
        prompt: list[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        stop_ids: Iterable[int] | None = None,
    ) -> Iterator[int]:
        """Yield sampled ids after `prompt` (which may extend what the cache holds); stop ids are yielded.

        `sampling` None is greedy; `stop_ids` None is the tokenizer's end-of-generation set.
        """
        if self._busy:
            raise GGUFLMError("this engine is already generating: finish or close the other stream first")
        self._busy = True
        try:
            yield from self._generate_ids(prompt, max_new_tokens, sampling or GREEDY, stop_ids)
        finally:  # however the turn ended (stop, close, Ctrl-C), the cache length follows self.tokens
            self.cache.length = len(self.tokens)
            self._busy = False

    def _generate_ids(
        self, prompt: list[int], max_new_tokens: int, sampling: SamplingParams, stop_ids: Iterable[int] | None
    ) -> Iterator[int]:
        if stop_ids is None:
            stop_ids = self.tokenizer.eog_ids if self.tokenizer is not None else ()
        stop = frozenset(stop_ids)
        logits = self.start(0, prompt)
        turn = self.stats.last

        graph = self._decode_graph(sampling) if self.graphs and max_new_tokens > 1 else None
        self.sampler.copy_from(sampling)
        seed_generator(self.generator, sampling.seed)
        turn.finish_reason = "interrupted"  # until the loop says otherwise
        decode_started = time.perf_counter()
        for step in range(max_new_tokens):
            if step:
                if len(self.tokens) >= self.ctx:
                    turn.finish_reason = "context"
                    return
                if graph is None:
                    token = self._pick(self._decode(token), sampling)
                else:
                    fed, token = token, graph.result()  # the step launched last iteration wrote fed's row
                    self.tokens.append(fed)
            else:
                token = self._pick(logits, sampling)
                decode_started = time.perf_counter()
            turn.generated_tokens += 1
            self.stats.total_generated += 1
            turn.decode_seconds = time.perf_counter() - decode_started
            if token in stop:
                turn.finish_reason = "eog"
                yield token
                return
            if graph is not None and step + 1 < max_new_tokens and len(self.tokens) < self.ctx:
                if step == 0:
                    graph.start(token, len(self.tokens), self.tokens)
                graph.launch()  # the GPU computes the next token while the caller handles this one
            yield token
        turn.finish_reason = "length"

    def generate(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 256,
        sampling: SamplingParams | None = None,
        stop_strings: Iterable[str] = (),
        add_special: bool = True,
        parse_special: bool = True,
    ) -> Iterator[str]:
        """Stream text pieces of the continuation; end-of-generation tokens are not printed."""
        tok = self.tokenizer
        if tok is None:
            raise GGUFLMError("the model file has no tokenizer, so it cannot generate text (generate ids instead)")
        if isinstance(prompt, str):
            self.check_text(prompt)
        ids = tok.encode(prompt, add_special=add_special, parse_special=parse_special) if isinstance(prompt, str) else prompt
        # Pieces as llama.cpp prints them (llama-completion, llama-server): no space is dropped, so text
        # generated from BOS alone starts with the space SentencePiece puts before its first word.
        stream = tok.stream(continuation=True)
        stops = StopStrings(stop_strings)
        for token in self.generate_ids(ids, max_new_tokens, sampling):
            if token in tok.eog_ids:
                break
            out, hit = stops.feed(stream.feed(token))
            if hit:
                self.stats.last.finish_reason = "stop"
                yield out
                return
            if out:
                yield out
        tail, hit = stops.feed(stream.flush())
        if hit:
            self.stats.last.finish_reason = "stop"
        yield tail + ("" if hit else stops.flush())

    def _sync(self) -> None:
        sync(self.device)

"""Decode and prefill speed against the memory-bandwidth ceiling measured in the same run.

Decode is timed through the Engine (graph replay and eager), with the cache filled to each
context first; the ceiling is copy bandwidth / bytes each decode step must read.
"""

from __future__ import annotations

import random
import resource
import time
from dataclasses import asdict, dataclass, field

import torch

from gguflm.engine import Engine, sync
from gguflm.model import Model
from gguflm.quants import PackedWeight, StackedWeight
from gguflm.sampling import GREEDY


@dataclass
class DecodeResult:
    context: int
    cache: str  # K and V cache types, "f16/f16"
    tok_s: float  # the default mode: graph replay on CUDA, eager on the CPU
    tok_s_eager: float
    graph_speedup: float | None  # None where there are no graphs (CPU)
    bytes_per_token: int  # weights as stored (Q8_0: 34/32 B per weight; one embedding row) + the KV cache read
    achieved_gb_s: float
    fraction_of_copy_bw: float


@dataclass
class PrefillResult:
    tokens: int
    tok_s: float
    ttft_s: float  # call to first sampled token, on an empty cache


@dataclass
class BenchReport:
    model: str
    device: str
    backend: str
    copy_bandwidth_gb_s: float  # device-to-device copy, bytes read + written
    weight_bytes_per_token: int
    decode: list[DecodeResult] = field(default_factory=list)
    prefill: list[PrefillResult] = field(default_factory=list)
    peak_memory_bytes: int = 0
    notes: str = "KV cache filled with random values to each context (decode speed does not depend on them)"

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- measurements


def copy_bandwidth(device: torch.device, n_bytes: int, repeats: int = 10) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    seconds = time.perf_counter() - started
    del src, dst
    return 2 * n_bytes * repeats / seconds


def weight_bytes_per_token(model: Model) -> int:
    """Bytes of weights one decode step streams: every matrix and vector once, one embedding row."""
    w = model.weights
    total = w.tok_embd.nbytes // model.config.n_vocab + (w.output.nbytes if w.tied else 0)
    for name, t in w.tensors():
        if name != "tok_embd":
            total += t.nbytes if isinstance(t, (PackedWeight, StackedWeight)) else t.numel() * t.element_size()
    return total


def kv_bytes_per_token(engine: Engine, context: int) -> int:
    """Bytes of K and V one decode step reads at `context` (its own new row included)."""
    return engine.cache.row_bytes * (context + 1)


def fill_cache(engine: Engine, context: int, rng: random.Random) -> None:
    """Pretend the cache holds `context` tokens: random ids and random K/V rows."""
    engine.reset()
    engine.cache.k.fill_random(context)
    engine.cache.v.fill_random(context)
    engine.tokens = [rng.randrange(3, engine.backend.cfg.n_vocab) for _ in range(context)]
    engine.cache.length = context


def time_decode(engine: Engine, context: int, steps: int, rng: random.Random) -> float:
    """Decode tokens per second after a cache of `context` tokens (one prefilled token, then `steps`)."""
    fill_cache(engine, context, rng)
    prompt = engine.tokens + [rng.randrange(3, engine.backend.cfg.n_vocab)]
    for _ in engine.generate_ids(prompt, steps + 1, GREEDY, stop_ids=()):
        pass
    return engine.stats.last.decode_tok_s


def time_prefill(engine: Engine, n: int, rng: random.Random) -> PrefillResult:
    """Prefill speed and time to first token for an n-token prompt on an empty cache."""
    engine.reset()
    prompt = [rng.randrange(3, engine.backend.cfg.n_vocab) for _ in range(n)]
    started = time.perf_counter()
    next(iter(engine.generate_ids(prompt, 1, GREEDY, stop_ids=())))
    ttft = time.perf_counter() - started
    return PrefillResult(n, engine.stats.last.prefill_tok_s, ttft)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------- the run


def run_bench(model: Model, name: str, contexts: list[int], prefill: list[int], steps: int,
              copy_bytes: int | None = None, cache_types: list[tuple[str | None, str | None]] = ((None, None),),
              ) -> BenchReport:
    """Prefill and decode timings for `model`, with the bandwidth ceiling measured first; decode once
    for each (K, V) pair of cache types (None: the backend's default)."""
    device = model.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rng = random.Random(0)
    bw = copy_bandwidth(device, copy_bytes or (2**30 if cuda else 2**26))
    ctx = max(max(contexts, default=0) + steps + 2, max(prefill, default=0) + 2)
    report = BenchReport(name, str(device), type(model.backend).__name__, bw / 1e9, weight_bytes_per_token(model))

    modes = [True, False] if cuda else [False]
    for k_type, v_type in cache_types:
        speeds: dict[bool, dict[int, float]] = {}
        for graphs in modes:  # one engine (one cache) at a time
            engine = model.new_engine(ctx=ctx, graphs=graphs, cache_type_k=k_type, cache_type_v=v_type)
            if not report.prefill:
                for n in prefill:
                    time_prefill(engine, n, rng)  # Triton specializes on the shapes: compile outside the timing
                    report.prefill.append(time_prefill(engine, n, rng))
            time_decode(engine, min(contexts), min(4, steps), rng)  # capture / compile outside the timings
            speeds[graphs] = {c: time_decode(engine, c, steps, rng) for c in contexts}
            kv_row, types = kv_bytes_per_token(engine, 0), "/".join(engine.cache_types)
            del engine
        for c in contexts:
            tok_s, eager = speeds[modes[0]][c], speeds[False][c]
            nbytes = report.weight_bytes_per_token + kv_row * (c + 1)
            report.decode.append(DecodeResult(
                context=c, cache=types, tok_s=tok_s, tok_s_eager=eager,
                graph_speedup=tok_s / eager if cuda else None, bytes_per_token=nbytes,
                achieved_gb_s=nbytes * tok_s / 1e9, fraction_of_copy_bw=nbytes * tok_s / bw,
            ))
    report.peak_memory_bytes = peak_memory(device)
    return report


def markdown(report: BenchReport) -> str:
    """The report as markdown tables."""
    lines = [
        f"**{report.model}** on {report.device} ({report.backend}) · copy bandwidth "
        f"{report.copy_bandwidth_gb_s:.1f} GB/s · weights read per token {report.weight_bytes_per_token / 1e6:.1f} MB"
        f" · peak memory {report.peak_memory_bytes / 2**30:.2f} GiB",
        "",
        "| context | KV cache K/V | decode tok/s | eager tok/s | graph speed-up | MB read/token | GB/s | % of copy bw |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in report.decode:
        speedup = f"{d.graph_speedup:.2f}x" if d.graph_speedup is not None else "n/a"
        lines.append(
            f"| {d.context} | {d.cache} | {d.tok_s:.1f} | {d.tok_s_eager:.1f} | {speedup} | {d.bytes_per_token / 1e6:.1f} "
            f"| {d.achieved_gb_s:.1f} | {100 * d.fraction_of_copy_bw:.1f}% |"
        )
    lines += ["", "| prompt tokens | prefill tok/s | time to first token |", "|---:|---:|---:|"]
    for p in report.prefill:
        lines.append(f"| {p.tokens} | {p.tok_s:.0f} | {1000 * p.ttft_s:.1f} ms |")
    lines += ["", f"_{report.notes}_"]
    return "\n".join(lines)

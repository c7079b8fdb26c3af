"""`gguflm bench`: decode and prefill speed against the bandwidth ceiling, as markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gguflm.errors import GGUFLMError
from gguflm.files import write_text_atomic


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GGUFLMError(f"{option} takes comma-separated token counts, not '{text}'") from None
    if not values or min(values) <= 0:
        raise GGUFLMError(f"{option} needs positive token counts, not '{text}'")
    return values


def _cache_pairs(k_types: str | None, v_types: str | None) -> list[tuple[str | None, str | None]]:
    """The (K, V) cache types to time: comma lists zipped, a single value (or none) standing for every run."""
    from gguflm.cli.options import _cache_type

    ks = [_cache_type(x.strip()) for x in (k_types or "").split(",") if x.strip()] or [None]
    vs = [_cache_type(x.strip()) for x in (v_types or "").split(",") if x.strip()] or [None]
    if len(ks) > 1 and len(vs) > 1 and len(ks) != len(vs):
        raise GGUFLMError("--cache-type-k and --cache-type-v lists must be the same length (or one a single type)")
    n = max(len(ks), len(vs))
    return [(ks[i % len(ks)], vs[i % len(vs)]) for i in range(n)]


def bench(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="A GGUF file to benchmark."),
    shape: Optional[str] = typer.Option(
        None, "--shape", help="Build a random model of this shape instead: llama-3-8b, llama-3.2-1b, "
        "qwen2.5-7b, qwen3-8b (or tiny, for checking the code path on the CPU)."),
    qtype: str = typer.Option(
        "q8_0", "--type", help="Tensor types of the --shape model: one type for every matrix (q8_0, q6_k, "
        "q4_0, q4_k, ...), or a llama-quantize mix (q4_k_m, q5_k_m, q3_k_l, ...: its per-tensor rules)."),
    device: str = typer.Option("cuda", help="cuda, cuda:N, or cpu (only sensible with --shape tiny)."),
    contexts: str = typer.Option("512,4096,16384,32768", help="Cache lengths to time decode at."),
    prefill: str = typer.Option("512,4096", help="Prompt lengths to time prefill at."),
    steps: int = typer.Option(64, help="Decode steps timed at each context."),
    workdir: Path = typer.Option(Path("bench-models"), help="Where synthetic GGUF files are written and reused."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    cache_type_k: Optional[str] = typer.Option(
        None, "--cache-type-k", "-ctk", help="KV cache type(s) for K, comma-separated to time several "
        "(f32, f16, bf16, q8_0, q4_0; default: the backend's)."),
    cache_type_v: Optional[str] = typer.Option(
        None, "--cache-type-v", "-ctv", help="KV cache type(s) for V, paired with --cache-type-k's."),
    threads: Optional[int] = typer.Option(
        None, "--threads", "-t", show_default=False,
        help="CPU threads that compute (default: one per physical core; the GPU path ignores it)."),
) -> None:
    """Decode tok/s per context, prefill tok/s, time to first token, and the fraction of copy bandwidth reached."""
    import torch

    import gguflm
    from gguflm.bench import markdown, run_bench
    from gguflm.synthetic import mixes
    from gguflm.synthetic.shapes import synthetic_model

    if (model is None) == (shape is None):
        raise GGUFLMError("give exactly one of --model FILE or --shape NAME")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GGUFLMError("the benchmark needs a CUDA GPU and none is available (use --device cpu --shape tiny "
                          "to check the code path on the CPU)")
    if threads is not None and threads < 1:
        raise GGUFLMError(f"--threads must be at least 1, not {threads}")
    if steps <= 0:
        raise GGUFLMError(f"--steps must be positive, not {steps}")
    ctx_list, prefill_list = _ints(contexts, "--contexts"), _ints(prefill, "--prefill")
    pairs = _cache_pairs(cache_type_k, cache_type_v)
    path = model if model is not None else synthetic_model(shape, workdir, mixes.check(qtype))
    loaded = gguflm.load(path, device=device, threads=threads)
    report = run_bench(loaded, shape or path.name, ctx_list, prefill_list, steps, cache_types=pairs)
    typer.echo(markdown(report))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.as_dict(), indent=2) + "\n", "the results")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

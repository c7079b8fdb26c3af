"""`gguflm convert`: a Hugging Face checkpoint folder to one GGUF file."""

from __future__ import annotations

import logging
from enum import Enum, IntEnum
from pathlib import Path

import typer

from gguflm.errors import GGUFLMError


# gguflm.convert.plan.OUTTYPES and auto, spelled out so that --help imports nothing heavy
OutType = Enum("OutType", {n: n for n in (
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "iq4_xs", "q2_k", "q3_k_s", "q3_k_m",
    "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "auto")}, type=str)


def convert(
    hf_dir: Path = typer.Argument(..., help="Hugging Face checkpoint folder (config.json + weights).", show_default=False),
    out: Path = typer.Option(None, "-o", "--outfile", help="Output file (default: ./<dir>-<OUTTYPE>.gguf)."),
    outtype: OutType = typer.Option(OutType.f16, "--outtype", help="Weight type of 2-D tensors: a float type, "
                                    "q8_0, or a llama-quantize type (q4_k_m, ...) with its per-tensor rules."),
    vocab_only: bool = typer.Option(False, "--vocab-only", help="Write metadata and tokenizer only."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be written, write nothing."),
    verify: bool = typer.Option(False, "--verify", help="Run the result with gguflm and transformers (float32, CPU) and compare logits and greedy tokens."),
    pre: str = typer.Option(None, "--pre", help="Force tokenizer.ggml.pre (BPE pre-tokenizer name)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file if it exists."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Read pytorch_model.bin (a pickle: only from a source you trust); safetensors needs no flag."),
) -> None:
    """Convert a Llama / Mistral / Qwen2 / Qwen3 checkpoint to GGUF (streaming, one tensor at a time)."""
    from gguflm.convert import convert_checkpoint, default_output, make_plan
    from gguflm.convert.writer import build_writer
    from gguflm.info import human_bytes

    logging.getLogger("gguf").setLevel(logging.ERROR)  # gguf-py narrates every step at INFO/WARNING
    plan = make_plan(hf_dir, outtype.value, vocab_only=vocab_only, allow_pickle=allow_pickle)
    target = out or default_output(hf_dir, plan.outtype, vocab_only)
    exists = target.is_file() and not force
    if dry_run:
        _print_plan(plan, build_writer(plan, vocab_only=vocab_only, pre=pre), target)
        if exists:
            typer.echo(f"note: {target} exists: the conversion would need --force to replace it")
        return
    if exists:
        raise GGUFLMError(f"{target} already exists (use --force to overwrite it, or -o for another name)")
    path = convert_checkpoint(hf_dir, target, plan.outtype, vocab_only=vocab_only, progress=not vocab_only, pre=pre,
                              allow_pickle=allow_pickle)
    kind = "vocabulary only" if vocab_only else plan.outtype
    typer.echo(f"wrote {path} ({human_bytes(path.stat().st_size)}, {kind})")
    if verify and not vocab_only:
        _verify(path, hf_dir, plan.outtype)


def _verify(path: Path, hf_dir: Path, outtype: str) -> None:
    """Compare with transformers and print the verdict; a failed check exits with status 1."""
    from gguflm.convert.verify import verify_conversion

    try:  # transformers' own progress bars and notices would bury the verdict
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    report = verify_conversion(path, hf_dir, outtype=outtype)
    typer.echo(report.summary())
    verdict, passed = report.verdict(outtype)
    typer.echo(verdict)
    if not passed:
        raise typer.Exit(1)


def readable(value) -> str:
    """A metadata value as a person reads it: enums by name, lists by length, long text cut short."""
    if isinstance(value, IntEnum):
        return f"{value.name} ({int(value)})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:60]!r} ... ({len(value)} characters)"
    return repr(value) if isinstance(value, str) else str(value)


def _print_plan(plan, writer, target: Path) -> None:
    from gguflm.info import human_bytes

    typer.echo(f"would write {target} ({plan.outtype}, {len(plan.tensors)} tensors, "
               f"{human_bytes(plan.total_bytes)} of tensor data)")
    for key, value in writer.kv_data[0].items():
        typer.echo(f"  {key} = {readable(value.value)}")
    for t in plan.tensors:
        shape = "x".join(str(d) for d in reversed(t.shape))  # ggml order: row length first
        typer.echo(f"  {t.name:<28} {t.qtype.name:<5} {shape:<12} {t.nbytes:>12,} B")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

"""`gguflm convert`: a Hugging Face checkpoint folder to one GGUF file."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer


class OutType(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    q8_0 = "q8_0"
    auto = "auto"


def convert(
    hf_dir: Path = typer.Argument(..., help="Hugging Face checkpoint folder (config.json + weights).", show_default=False),
    out: Path = typer.Option(None, "-o", "--outfile", help="Output file (default: ./<dir>-<OUTTYPE>.gguf)."),
    outtype: OutType = typer.Option(OutType.f16, "--outtype", help="Weight type of 2-D tensors."),
    vocab_only: bool = typer.Option(False, "--vocab-only", help="Write metadata and tokenizer only."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be written, write nothing."),
    verify: bool = typer.Option(False, "--verify", help="Run the result with gguflm and transformers (float32, CPU) and compare logits and greedy tokens."),
    pre: str = typer.Option(None, "--pre", help="Force tokenizer.ggml.pre (BPE pre-tokenizer name)."),
) -> None:
    """Convert a Llama / Mistral / Qwen2 / Qwen3 checkpoint to GGUF (streaming, one tensor at a time)."""
    from gguflm.convert import convert_checkpoint, default_output, make_plan
    from gguflm.convert.writer import build_writer

    logging.getLogger("gguf").setLevel(logging.ERROR)  # gguf-py narrates every step at INFO/WARNING
    plan = make_plan(hf_dir, outtype.value, vocab_only=vocab_only)
    target = out or default_output(hf_dir, plan.outtype, vocab_only)
    if dry_run:
        _print_plan(plan, build_writer(plan, vocab_only=vocab_only, pre=pre), target)
        return
    path = convert_checkpoint(hf_dir, target, plan.outtype, vocab_only=vocab_only, progress=not vocab_only, pre=pre)
    kind = "vocabulary only" if vocab_only else plan.outtype
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {kind})")
    if verify and not vocab_only:
        from gguflm.convert.verify import verify_conversion

        typer.echo(verify_conversion(path, hf_dir).summary())


def _print_plan(plan, writer, target: Path) -> None:
    typer.echo(f"would write {target} ({plan.outtype}, {len(plan.tensors)} tensors, "
               f"{plan.total_bytes / 2**20:.1f} MiB of tensor data)")
    for key, value in writer.kv_data[0].items():
        v = value.value
        shown = f"[{len(v)} items]" if isinstance(v, (list, tuple)) else repr(v)
        typer.echo(f"  {key} = {shown[:100]}")
    for t in plan.tensors:
        shape = "x".join(str(d) for d in reversed(t.shape))  # ggml order: row length first
        typer.echo(f"  {t.name:<28} {t.qtype.name:<5} {shape:<12} {t.nbytes:>12,} B")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)

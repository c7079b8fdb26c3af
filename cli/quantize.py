"""`gguflm quantize`: a GGUF file to another GGUF file with llama-quantize's type mixes."""

from __future__ import annotations

from pathlib import Path

import typer

from gguflm.errors import GGUFLMError

TYPES_HELP = ("Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, "
              "Q6_K, IQ4_NL, IQ4_XS, F16, BF16, F32 (Q3_K, Q4_K, Q5_K mean their _M)")


def quantize(
    src: Path = typer.Argument(..., metavar="IN.gguf", help="The GGUF file to quantize.", show_default=False),
    out: Path = typer.Argument(..., metavar="OUT.gguf", help="The GGUF file to write.", show_default=False),
    qtype: str = typer.Argument(..., metavar="TYPE", help=f"llama-quantize's type name: {TYPES_HELP}.",
                                show_default=False),
    allow_requantize: bool = typer.Option(False, "--allow-requantize",
                                          help="Start from an already quantized file (the losses add up)."),
    output_tensor_type: str = typer.Option(None, "--output-tensor-type", help="Type of output.weight."),
    token_embedding_type: str = typer.Option(None, "--token-embedding-type", help="Type of token_embd.weight."),
    pure: bool = typer.Option(False, "--pure", help="The mix's default type for every tensor (no per-tensor rules)."),
    leave_output: bool = typer.Option(False, "--leave-output-tensor", help="Copy output.weight as it is."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each tensor's type, write nothing."),
    verify: bool = typer.Option(False, "--verify", help="Run both files on built-in prompts: KL divergence, top-1 "
                                "agreement, max |dlogit|, per-tensor RMSE."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file if it exists."),
) -> None:
    """Quantize a GGUF model (streaming, one tensor at a time) with llama-quantize's per-tensor rules."""
    import logging

    from gguflm.info import human_bytes
    from gguflm.quantize.mixes import MixOptions, get_mix, tensor_qtype

    mix = get_mix(qtype)
    options = MixOptions(output_type=tensor_qtype(output_tensor_type) if output_tensor_type else None,
                         token_embedding_type=tensor_qtype(token_embedding_type) if token_embedding_type else None,
                         pure=pure, quantize_output=not leave_output)
    if dry_run:
        _print_plan(src, mix, options)
        return
    if out.is_file() and not force:
        raise GGUFLMError(f"{out} already exists (use --force to overwrite it, or another name)")
    from gguflm.quantize.rewrite import quantize_file

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    result = quantize_file(src, out, mix.name, options=options, allow_requantize=allow_requantize, progress=True)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items(), key=lambda kv: -kv[1]))
    rate = result.source_bytes / 1e6 / max(result.seconds, 1e-9)
    typer.echo(f"wrote {out} ({human_bytes(out.stat().st_size)}, {mix.name}: {counts}) in {result.seconds:.1f} s "
               f"({rate:.1f} MB/s of source)")
    if verify:
        from gguflm.quantize.verify import verify_quantized

        for line in verify_quantized(src, out).summary():
            typer.echo(line)


def _print_plan(src: Path, mix, options) -> None:
    from gguflm.gguf_file import open_gguf
    from gguflm.info import human_bytes
    from gguflm.quantize.rewrite import plan_tensors

    plan = plan_tensors(open_gguf(src), mix, options)
    typer.echo(f"would write {mix.name} ({len(plan)} tensors, {human_bytes(sum(t.nbytes for t in plan))})")
    for t in plan:
        shape = "x".join(str(d) for d in t.shape)
        typer.echo(f"  {t.name:<32} {t.source.name:<6} -> {t.target.name:<6} {shape:<14} {t.nbytes:>12,} B")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)

"""`gguflm info`: what a GGUF file holds."""

from __future__ import annotations

from pathlib import Path

import typer

from gguflm.gguf_file import open_gguf
from gguflm.info import describe


def info(model: Path = typer.Argument(..., help="A GGUF file.", show_default=False)) -> None:
    """Architecture, sizes, context length, tensor types, tokenizer and chat template of a GGUF file."""
    rows = describe(open_gguf(model))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        typer.echo(f"{label:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)

"""`gguflm info`: what a GGUF file holds."""

from __future__ import annotations

from pathlib import Path

import typer

from gguflm.gguf_file import open_gguf
from gguflm.info import describe


def info(model: Path = typer.Argument(..., help="A GGUF file.", show_default=False)) -> None:
    """Architecture, sizes, context length, tensor types, tokenizer and chat template of a GGUF file,
    then what this build cannot run in it (the file is still described; only a malformed one is an error)."""
    d = describe(open_gguf(model))
    width = max(len(label) for label, _ in d.rows)
    for label, value in d.rows:
        typer.echo(f"{label:<{width}}  {value}")
    for problem in d.problems:
        typer.echo(f"note: this build cannot run it: {problem}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)

"""`gguflm info`: what a GGUF file holds (read without torch: it answers at once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gguflm.errors import GGUFLMError


def info(
    model: Annotated[Path, typer.Argument(help="A GGUF file.", show_default=False, metavar="MODEL")],
    template: Annotated[bool, typer.Option("--template", help="Print the file's chat template, nothing else.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as one JSON object.")] = False,
) -> None:
    """Architecture, sizes, context length, tensor types, tokenizer and chat template of a GGUF file,
    then what this build cannot run in it (the file is still described; only a malformed one is an error)."""
    from gguflm.gguf_file import open_gguf
    from gguflm.info import chat_template_source, describe

    if template and as_json:
        raise GGUFLMError("give --template or --json, not both")
    gf = open_gguf(model)
    if template:
        source = chat_template_source(gf)
        if source is None:
            raise GGUFLMError(f"{model} has no chat template")
        typer.echo(source.rstrip("\n"))
        return
    d = describe(gf)
    if as_json:
        typer.echo(json.dumps(d.as_dict(), indent=2, ensure_ascii=False))
        return
    width = max(len(label) for label, _ in d.rows)
    for label, value in d.rows:
        typer.echo(f"{label:<{width}}  {value}")
    for problem in d.problems:
        typer.echo(f"note: this build cannot run it: {problem}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)

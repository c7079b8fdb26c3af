"""`gguflm tokenize`: show how a model's tokenizer splits text, like llama.cpp's llama-tokenize."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from gguflm.errors import GGUFLMError
from gguflm.tokenizer import Tokenizer


def _write(data: bytes) -> None:
    # Raw bytes, as llama-tokenize prints them: a byte token of a split character stays a byte.
    out = sys.stdout
    if not hasattr(out, "buffer"):  # a text-only stream (some embedders): replace partial characters
        out.write(data.decode("utf-8", errors="replace"))
        return
    out.flush()
    out.buffer.write(data)
    out.buffer.flush()


def _jsonl(tok: Tokenizer, add_special: bool, parse_special: bool) -> None:
    """One JSON string per stdin line in, one JSON array of ids per line out."""
    for n, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)
        except json.JSONDecodeError:
            text = None
        if not isinstance(text, str):
            raise GGUFLMError(f"stdin line {n} is not a JSON string")
        ids = tok.encode(text, add_special=add_special, parse_special=parse_special)
        sys.stdout.write(json.dumps(ids) + "\n")
    sys.stdout.flush()


def tokenize(
    text: Optional[str] = typer.Argument(None, help="The text to tokenize (omit with --jsonl).", show_default=False),
    model: Path = typer.Option(..., "--model", "-m", help="A GGUF file (vocab-only files work).", show_default=False),
    no_bos: bool = typer.Option(False, "--no-bos", help="Do not add BOS/EOS even if the model asks for them."),
    parse_special: bool = typer.Option(False, "--parse-special", help="Match control tokens such as <|im_start|>."),
    ids: bool = typer.Option(False, "--ids", help="Print only the list of ids."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Read a JSON string per stdin line, write an id array per line."),
) -> None:
    """Print each token of TEXT as `id -> 'piece'`, the way llama-tokenize does."""
    if jsonl == (text is not None):
        raise GGUFLMError("give either TEXT or --jsonl (with the texts on stdin), not both or neither")
    tok = Tokenizer.from_file(model)
    add_special = not no_bos
    if jsonl:
        _jsonl(tok, add_special, parse_special)
        return
    found = tok.encode(text, add_special=add_special, parse_special=parse_special)
    if ids:
        typer.echo("[" + ", ".join(str(i) for i in found) + "]")
        return
    _write(b"".join(b"%6d -> '%s'\n" % (i, tok.token_bytes(i)) for i in found))


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize)

"""`gguflm tokenize`: show how a model's tokenizer splits text, like llama.cpp's llama-tokenize."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gguflm.errors import GGUFLMError

if TYPE_CHECKING:
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
    first: Annotated[Optional[str], typer.Argument(help="The GGUF file (vocab-only files work); with -m, the TEXT.",
                                                   show_default=False, metavar="MODEL")] = None,
    second: Annotated[Optional[str], typer.Argument(help="The text (default: stdin, one trailing newline dropped).",
                                                    show_default=False, metavar="TEXT")] = None,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The model file, as an option.",
                                         show_default=False),
    no_bos: bool = typer.Option(False, "--no-bos", help="Do not add BOS/EOS even if the model asks for them."),
    parse_special: bool = typer.Option(False, "--parse-special", help="Match control tokens such as <|im_start|>."),
    ids: bool = typer.Option(False, "--ids", help="Print only the list of ids."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Read a JSON string per stdin line, write an id array per line."),
) -> None:
    """Print each token of TEXT as `id -> 'piece'`, the way llama-tokenize does (TEXT from stdin when omitted)."""
    from gguflm.tokenizer import Tokenizer

    if model is None:
        if first is None:
            raise GGUFLMError("give the model file: gguflm tokenize MODEL [TEXT] (or -m MODEL)")
        model, text = Path(first), second
    elif second is not None:
        raise GGUFLMError("with -m, give just TEXT (quote it if it has spaces)")
    else:
        text = first
    if jsonl and text is not None:
        raise GGUFLMError("give either TEXT or --jsonl (with the texts on stdin), not both")
    if not jsonl and text is None:
        if sys.stdin.isatty():
            raise GGUFLMError("give the TEXT to tokenize, or pipe it in")
        text = sys.stdin.read()
        text = text[:-1] if text.endswith("\n") else text  # what `echo` adds, as `run` reads a prompt
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

"""llama.cpp's vocab test vectors (models/ggml-vocab-NAME.gguf with .inp and .out): where gguflm keeps
them and how they read. Used by tests/test_tokenizer_vocab.py and scripts/fetch_vocab_tests.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

from gguflm.errors import GGUFLMError

SEPARATOR = "\n__ggml_vocab_test__\n"
NAME = re.compile(r"ggml-vocab-[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")  # the file names llama.cpp uses
CACHE_ENV = "GGUFLM_VOCAB_CACHE"


def cache_dir() -> Path:
    """$GGUFLM_VOCAB_CACHE, else $XDG_CACHE_HOME/gguflm/llama-vocab (~/.cache when XDG_CACHE_HOME is unset)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gguflm" / "llama-vocab"


def find_vocabs(*dirs: Path) -> dict[str, Path]:
    """NAME (ggml-vocab-NAME.gguf) -> the file, from the first directory that has it."""
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for path in sorted(d.glob("ggml-vocab-*.gguf")):
                if NAME.fullmatch(path.name):
                    found.setdefault(path.name[len("ggml-vocab-"): -len(".gguf")], path)
    return found


def has_cases(vocab: Path) -> bool:
    return vocab.with_name(vocab.name + ".inp").is_file() and vocab.with_name(vocab.name + ".out").is_file()


def parse_cases(inp: str, out: str, name: str = "the test file") -> list[tuple[str, list[int]]]:
    """The (text, ids) pairs, split the way llama.cpp's test-tokenizer-0 splits them: every case ends
    with the separator (the last one may not), and .out holds one line of ids per case."""
    texts, pos = [], 0
    while pos < len(inp):
        nxt = inp.find(SEPARATOR, pos)
        if nxt < 0:
            texts.append(inp[pos:])
            break
        texts.append(inp[pos:nxt])
        pos = nxt + len(SEPARATOR)
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise GGUFLMError(f"{name}: {len(texts)} test strings but {len(lines)} lines of ids")
    try:
        return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]
    except ValueError:
        raise GGUFLMError(f"{name}: the .out file holds something other than token ids") from None


def read_cases(vocab: Path) -> list[tuple[str, list[int]]]:
    """The cases beside a ggml-vocab-NAME.gguf file."""
    inp = vocab.with_name(vocab.name + ".inp").read_text(encoding="utf-8")
    out = vocab.with_name(vocab.name + ".out").read_text(encoding="utf-8")
    return parse_cases(inp, out, vocab.name)

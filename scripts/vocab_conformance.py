"""Pass counts of gguflm's tokenizer on llama.cpp's vocab test files, as a markdown table for models.md.

Reads ../shared/testdata/vocab and the cache scripts/fetch_vocab_tests.py fills. For each vocabulary:
its tokenizer model and pre-tokenizer, how many cases encode to llama.cpp's ids, how many decode back
(llama_detokenize's text: clean_spaces applied where the vocab asks), and the encoding speed over all
its cases repeated (the median of 5 runs, after one warm-up).

    python scripts/vocab_conformance.py
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

from gguflm.errors import GGUFLMError
from gguflm.tokenizer import Tokenizer
from gguflm.tokenizer.cleanup import clean_up_spaces
from gguflm.tokenizer.conformance import cache_dir, find_vocabs, has_cases, read_cases

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "vocab"


def row(name: str, path: Path) -> str:
    where = "shared" if path.parent == SHARED else "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tok = Tokenizer.from_file(path)
        except GGUFLMError as e:
            return f"| {name} ({where}) | not run: {str(e).split(': ', 1)[-1]} | | | |"
    family = tok.pre_tokenizer.family if tok.pre_tokenizer else "SentencePiece"
    label = f"| {name} ({where}) | `{tok.kind}` / `{tok.pre}` → {family} |"
    if not has_cases(path):
        return f"{label} no .inp/.out | | |"
    cases = read_cases(path)
    encoded = sum(tok.encode(t, add_special=False) == ids for t, ids in cases)
    decoded = sum(tok.decode(ids) == (clean_up_spaces(t) if tok.clean_spaces else t) for t, ids in cases)
    text = "".join(t for t, _ in cases) * 20
    tok.encode(text)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        tok.encode(text)
        times.append(time.perf_counter() - start)
    speed = len(text) / statistics.median(times) / 1e6
    return f"{label} {encoded}/{len(cases)} | {decoded}/{len(cases)} | {speed:.2f} M chars/s |"


def main() -> int:
    vocabs = find_vocabs(SHARED, cache_dir())
    if not vocabs:
        print(f"no ggml-vocab-*.gguf in {SHARED} or {cache_dir()}", file=sys.stderr)
        return 1
    print("| vocabulary | model / pre → family | encode = llama.cpp | decode = text | encode speed |")
    print("| --- | --- | --- | --- | --- |")
    for name, path in sorted(vocabs.items()):
        print(row(name, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

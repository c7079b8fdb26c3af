"""Fill gguflm's cache of llama.cpp's vocab test files (models/ggml-vocab-*.gguf, .inp, .out).

The tokenizer conformance tests (tests/test_tokenizer_vocab.py) read ../shared/testdata/vocab and this
cache, and skip the vocabularies neither holds. SOURCE is a llama.cpp checkout, or the llama-cpp-python
source archive from the package registry, which carries one under vendor/llama.cpp:

    python scripts/fetch_vocab_tests.py /path/to/llama.cpp
    pip download --no-deps --no-binary :all: llama-cpp-python -d /tmp/lcpp
    python scripts/fetch_vocab_tests.py /tmp/lcpp/llama_cpp_python-*.tar.gz

Files the shared test data already holds are skipped. Every file is checked before it is kept (a
vocab must parse as GGUF with a tokenizer, .inp/.out must pair up) and written atomically. The cache is
$GGUFLM_VOCAB_CACHE, else ~/.cache/gguflm/llama-vocab (--dest overrides).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

from gguflm.errors import GGUFLMError
from gguflm.files import atomic_write
from gguflm.gguf_file import open_gguf
from gguflm.tokenizer.conformance import NAME, cache_dir, parse_cases

MAX_BYTES = 64 * 2**20  # the largest vocab llama.cpp ships is about 16 MB
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "vocab"


def source_files(source: Path) -> dict[str, bytes]:
    """File name -> bytes of every ggml-vocab-* file under models/ of a checkout or a source archive."""
    wanted = {}
    if source.is_dir():
        models = source / "models" if (source / "models").is_dir() else source / "vendor" / "llama.cpp" / "models"
        for path in sorted(models.glob("ggml-vocab-*")):
            if _wanted(path.name) and path.is_file() and not path.is_symlink():
                if path.stat().st_size > MAX_BYTES:
                    raise GGUFLMError(f"{path} is larger than {MAX_BYTES >> 20} MiB")
                wanted[path.name] = path.read_bytes()
        return wanted
    if not tarfile.is_tarfile(source):
        raise GGUFLMError(f"{source} is neither a llama.cpp checkout nor a source archive")
    with tarfile.open(source) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) >= 2 and parts[-2] == "models" and _wanted(parts[-1]) and member.isfile():
                if member.size > MAX_BYTES:
                    raise GGUFLMError(f"{member.name} in {source} is larger than {MAX_BYTES >> 20} MiB")
                wanted[parts[-1]] = tar.extractfile(member).read()
    return wanted


def _wanted(name: str) -> bool:
    """ggml-vocab-NAME.gguf or its .inp / .out."""
    return bool(NAME.fullmatch(name[:-4] if name.endswith((".inp", ".out")) else name))


def check(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files that pass: a vocab opens as GGUF with a token list; .inp and .out pair up with it."""
    good = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if not NAME.fullmatch(name):
                continue
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                if "tokenizer.ggml.tokens" not in open_gguf(path).metadata:
                    raise GGUFLMError("it has no token list")
                inp, out = files.get(name + ".inp"), files.get(name + ".out")
                if (inp is None) != (out is None):
                    raise GGUFLMError("it has one of .inp and .out without the other")
                if inp is not None:
                    parse_cases(inp.decode("utf-8"), out.decode("utf-8"), name)
                    good[name + ".inp"], good[name + ".out"] = inp, out
            except (GGUFLMError, UnicodeDecodeError) as e:
                print(f"skipping {name}: {e}", file=sys.stderr)
                continue
            good[name] = data
    return good


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a llama.cpp checkout or a llama-cpp-python .tar.gz")
    ap.add_argument("--dest", type=Path, default=None, help=f"cache directory (default: {cache_dir()})")
    args = ap.parse_args()
    dest = args.dest or cache_dir()
    try:
        files = check(source_files(args.source.expanduser()))
        dest.mkdir(parents=True, exist_ok=True)
        written = kept = 0
        for name, data in sorted(files.items()):
            if (SHARED / name).is_file() and (SHARED / name).read_bytes() == data:
                continue  # the shared test data has it
            target = dest / name
            if target.is_file() and target.read_bytes() == data:
                kept += 1
                continue
            with atomic_write(target, name) as tmp:
                tmp.write_bytes(data)
            written += 1
    except GGUFLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    vocabs = sorted(n for n in files if n.endswith(".gguf"))
    print(f"{dest}: {written} files written, {kept} already there; vocabularies: "
          + ", ".join(n[len("ggml-vocab-"): -len(".gguf")] for n in vocabs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

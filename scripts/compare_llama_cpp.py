"""gguflm's tokenizer against llama.cpp's own, string by string (a development check, not part of the suite).

Needs a llama.cpp source tree whose libllama is built, e.g. the one inside the llama-cpp-python source
archive (vendor/llama.cpp): `cmake -S SRC -B SRC/build -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF` then
`cmake --build SRC/build --target llama`. This script compiles scripts/llama_cpp_oracle.cpp against it
and compares, printing one line per item and the totals:

  vocabs   every llama.cpp vocab file gguflm reads (../shared and the cache): each file's cases plus
           --random strings: ids, llama_detokenize with and without BOS, the printed pieces
  names    every tokenizer.ggml.pre name on a tiny vocab: the same four things on a few strings
  splits   each pre-tokenizer family: gguflm's split against llama.cpp's unicode_regex_split run with
           llama.cpp's own regexes, on --random strings and a few hard ones

    python scripts/compare_llama_cpp.py /path/to/llama.cpp [--random 300]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

from gguflm.tokenizer import Tokenizer
from gguflm.tokenizer.conformance import cache_dir, find_vocabs, has_cases, read_cases
from gguflm.tokenizer.pretokenize import _TABLE, SUPPORTED

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "testdata" / "vocab"
sys.path.insert(0, str(ROOT / "tests"))
from tiny_vocab import bpe_vocab, raw_vocab  # the tests' tiny vocab writer

ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 + list("0123456789") * 2
            + list(" \t\n\r  \n\n") * 3 + list(".,!?;:'\"-()[]{}<>/\\@#$%^&*_=+`~|") + list("'sdmtlrve")
            + list("äöüéèàçñßøÆΩπжщЯ我想在工作天漢字かなカナ한국어ก่าน่ंअआइ١٢٣½²")
            + ["😁", "🦙", "🚀", "\u200d", "\u0301", "\u0300", "\u00a0", "\u3000", "\u2028", "\ufeff", "ſ",
               "\u212a"])  # ſ and the Kelvin sign fold to s and k under (?i)
HARD = ["camelCase's", "ÄÖÜabc abcÄÖÜ", "fooÄbar", "re\u0301sume\u0301", "x'ſ y'\u212a z'S", "1234abc 1234567 12 ½²³",
        "Hello世界abc漢字かなカナ", "  \n\n \t x", "I'VE we'Ll", "ÉCOLE école", "ǅungla ǈ", "a\u00a0b\u3000c",
        "٣٤٥٦ ١٢"]
TINY_TEXTS = ["hello world", "hello , world !", "I 'm he 's we 're they 've it 't ' x", "hello\n\n\nworld  \t x",
              "3333 12345678 x1y22", "  hello", "Hello World HELLO", "é à 我想 🦙", "a.b,c?d!e",
              "hello's world'll"]


def random_texts(n: int, seed: str) -> list[str]:
    rnd = random.Random(zlib.crc32(seed.encode()))
    return ["".join(rnd.choice(ALPHABET) for _ in range(rnd.choice([1, 3, 8, 20, 60]))) for _ in range(n)]


def build_oracle(src: Path, out: Path) -> Path:
    libs = [src / "build" / "src" / "libllama.a"] + [src / "build" / "ggml" / "src" / f"libggml{x}.a"
                                                      for x in ("", "-cpu", "-base")]
    subprocess.run(["g++", "-O1", "-std=c++17", f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}",
                    f"-I{src / 'src'}", str(ROOT / "scripts" / "llama_cpp_oracle.cpp"), "-o", str(out),
                    *map(str, libs), "-lpthread", "-ldl"], check=True)
    return out


class Oracle:
    def __init__(self, binary: Path, tmp: Path):
        self.binary, self.tmp = binary, tmp

    def _write(self, name: str, strings: list[str]) -> str:
        path = self.tmp / name
        path.write_text("".join(s.encode().hex() + "\n" for s in strings))
        return str(path)

    def run(self, vocab: Path, texts: list[str]) -> list[tuple[list[int], str, str, str]]:
        out = subprocess.run([str(self.binary), str(vocab), self._write("texts", texts)],
                             capture_output=True, text=True, check=True).stdout
        rows = []
        for line in out.splitlines():
            ids, *texts_hex = (line.split(" ") + ["", "", ""])[:4]
            rows.append(([int(x) for x in ids.split(",") if x],
                         *(bytes.fromhex(h).decode("utf-8", "replace") for h in texts_hex)))
        return rows

    def split(self, regexes: list[str], texts: list[str]) -> list[list[str]]:
        out = subprocess.run([str(self.binary), "--split", self._write("regexes", regexes),
                              self._write("texts", texts)], capture_output=True, text=True, check=True).stdout
        return [[bytes.fromhex(w).decode("utf-8", "replace") for w in line.split()] for line in out.splitlines()]


def differences(oracle: Oracle, path: Path, texts: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = Tokenizer.from_file(path)
    bad = 0
    for text, (ids, detok, detok_bos, printed) in zip(texts, oracle.run(path, texts)):
        stream = tok.stream(continuation=True)
        pieces = "".join(stream.feed(t) for t in ids) + stream.flush()
        mine = (tok.encode(text, add_special=False), tok.decode(ids), tok.decode(tok.encode(text)), pieces)
        if mine != (ids, detok, detok_bos, printed):
            bad += 1
            if bad <= 2:
                print(f"    {text!r}: gguflm {mine} llama.cpp {(ids, detok, detok_bos, printed)}")
    return bad


def llama_cpp_regexes(src: Path) -> dict[str, list[str]]:
    """Each LLAMA_VOCAB_PRE_TYPE_* family's regex list, read from llama-vocab.cpp."""
    code = (src / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")
    start = code.index("struct llm_tokenizer_bpe : llm_tokenizer {")
    block = code[start:code.index("std::vector<std::string> regex_exprs;", start)]
    found = {}
    for m in re.finditer(r"((?:case LLAMA_VOCAB_PRE_TYPE_\w+:\s*)+|default:)(.*?)break;", block, re.DOTALL):
        body = "\n".join(line for line in m.group(2).splitlines() if not line.strip().startswith("//"))
        literals = [s.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
                    for s in re.findall(r'"((?:[^"\\]|\\.)*)"', body)]
        for family in re.findall(r"LLAMA_VOCAB_PRE_TYPE_(\w+)", m.group(1)) or ["DEFAULT"]:
            found[family.lower()] = literals
    return found


def vocab_file(tmp: Path, pre: str | None, label: str, **keys) -> Path:
    spec = _TABLE.get(pre or "default")
    if spec.byte_encode:
        return bpe_vocab(tmp / f"{label}.gguf", pre=pre, words=["hello"], bos_token_id=256,
                         merges=["h e", "l l", "he ll", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"], **keys)
    return raw_vocab(tmp / f"{label}.gguf", pre=pre, words=["\n", "\n\n\n"], **keys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("llama_cpp", type=Path, help="llama.cpp source tree with build/src/libllama.a")
    ap.add_argument("--random", type=int, default=300, help="random strings per vocabulary and per family")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        oracle = Oracle(build_oracle(args.llama_cpp, tmp / "oracle"), tmp)

        total = same = 0
        for name, path in sorted(find_vocabs(SHARED, cache_dir()).items()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    Tokenizer.from_file(path)
            except Exception as e:  # noqa: BLE001  (a vocab model gguflm does not implement)
                print(f"vocab {name}: skipped ({e})")
                continue
            cases = path if has_cases(path) else SHARED / "ggml-vocab-gpt-2.gguf"
            texts = [c for c, _ in read_cases(cases)] + random_texts(args.random, name)
            bad = differences(oracle, path, texts)
            total, same = total + len(texts), same + len(texts) - bad
            print(f"vocab {name}: {len(texts) - bad}/{len(texts)} identical")
        print(f"vocabs: {same}/{total} strings identical")

        names = identical = 0
        for pre in (*SUPPORTED, None):
            if pre == "whitespace":
                continue  # llama.cpp aborts on text with spaces under model gpt2 (a space in a BPE word)
            names += 1
            path = vocab_file(tmp, pre, pre or "no-pre")
            identical += differences(oracle, path, TINY_TEXTS) == 0
        for model, pre in (("gemma4", None), ("whitespace", "whitespace")):
            names += 1
            path = raw_vocab(tmp / f"model-{model}.gguf", model=model, pre=pre, words=["\n", "\n\n\n"])
            identical += differences(oracle, path, TINY_TEXTS) == 0
        print(f"names: {identical}/{names} identical on a tiny vocab (pre 'whitespace' under model gpt2 not run)")

        regexes = llama_cpp_regexes(args.llama_cpp)
        families: dict[str, str] = {}
        for name, spec in _TABLE.items():
            families.setdefault(spec.family, name)
        alike = 0
        for family, name in sorted(families.items()):
            spec = _TABLE[name]
            tok = Tokenizer.from_file(vocab_file(tmp, name, f"split-{name}"))
            texts = HARD + random_texts(args.random, family)
            theirs = oracle.split(regexes.get(family, regexes["default"]),
                                  [x.replace(" ", "▁") if spec.escape_spaces else x for x in texts])
            diffs = [(x, tok.split(x), th) for x, th in zip(texts, theirs) if tok.split(x) != th]
            alike += not diffs
            print(f"split {family}: {len(texts) - len(diffs)}/{len(texts)} identical"
                  + "".join(f"\n    {x!r}: gguflm {a} llama.cpp {b}" for x, a, b in diffs[:3]))
        print(f"splits: {alike}/{len(families)} families identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())

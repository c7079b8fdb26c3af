"""llama.cpp's vocab test cases (ggml-vocab-*.gguf with .inp/.out): every string encodes and decodes exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gguflm.gguf_file import open_gguf
from gguflm.tokenizer import Tokenizer

VOCAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "vocab"
SEPARATOR = "\n__ggml_vocab_test__\n"
VOCABS = sorted(p.name[: -len(".gguf")] for p in VOCAB_DIR.glob("*.gguf")) if VOCAB_DIR.is_dir() else []


def read_cases(name: str) -> list[tuple[str, list[int]]]:
    """The (text, ids) pairs, split the way llama.cpp's test-tokenizer-0 splits them."""
    raw = (VOCAB_DIR / f"{name}.gguf.inp").read_text(encoding="utf-8")
    texts, pos = [], 0
    while pos < len(raw):  # every case, the last included, ends with the separator
        nxt = raw.find(SEPARATOR, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)
    lines = (VOCAB_DIR / f"{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    assert len(texts) == len(lines), f"{name}: {len(texts)} inputs but {len(lines)} outputs"
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


@pytest.fixture(scope="module")
def tokenizers():
    """Each vocab opened once for the whole module (opening the big ones takes seconds)."""
    cache: dict[str, Tokenizer] = {}

    def get(name: str) -> Tokenizer:
        path = VOCAB_DIR / f"{name}.gguf"
        if not path.is_file():
            pytest.skip(f"{path} not available")
        if name not in cache:
            cache[name] = Tokenizer.from_file(path)
        return cache[name]

    return get


@pytest.mark.parametrize("name", [v for v in VOCABS if (VOCAB_DIR / f"{v}.gguf.inp").is_file()])
def test_llama_cpp_cases_encode_and_decode(name, tokenizers):
    tok = tokenizers(name)
    cases = read_cases(name)
    assert cases
    for text, expected in cases:
        assert tok.encode(text, add_special=False) == expected, f"{name}: encode {text!r}"
        # SPM's leading space rule: without BOS, llama.cpp drops the space it added in front.
        assert tok.decode(expected) == text, f"{name}: decode {text!r}"


def test_bos_defaults(tokenizers):
    spm = tokenizers("ggml-vocab-llama-spm")
    assert spm.kind == "llama" and spm.bos_id == 1 and spm.eos_id == 2
    assert spm.encode("Hello world") == [1, 15043, 3186]
    assert spm.encode("Hello world", add_special=False) == [15043, 3186]
    llama3 = tokenizers("ggml-vocab-llama-bpe")
    assert llama3.kind == "gpt2" and llama3.pre == "llama-bpe"
    assert llama3.encode("Hello")[0] == 128000  # llama3's pre-tokenizer adds BOS by default
    qwen = tokenizers("ggml-vocab-qwen2")
    assert qwen.encode("Hello", add_special=True) == qwen.encode("Hello", add_special=False)


def test_eog_sets(tokenizers):
    llama3 = tokenizers("ggml-vocab-llama-bpe")
    assert {llama3.token_id("<|eot_id|>"), llama3.token_id("<|end_of_text|>")} <= llama3.eog_ids
    assert llama3.token_id("<|begin_of_text|>") not in llama3.eog_ids
    qwen = tokenizers("ggml-vocab-qwen2")
    assert {qwen.token_id("<|im_end|>"), qwen.token_id("<|endoftext|>")} <= qwen.eog_ids
    assert qwen.token_id("<|im_start|>") not in qwen.eog_ids
    assert tokenizers("ggml-vocab-llama-spm").eog_ids == frozenset({2})


def test_parse_special(tokenizers):
    qwen = tokenizers("ggml-vocab-qwen2")
    start, end = qwen.token_id("<|im_start|>"), qwen.token_id("<|im_end|>")
    text = "<|im_start|>user\nHi<|im_end|>"
    parsed = qwen.encode(text, parse_special=True)
    assert parsed[0] == start and parsed[-1] == end
    plain = qwen.encode(text)
    assert start not in plain and end not in plain
    assert qwen.decode(plain) == text
    assert qwen.decode(parsed) == "user\nHi"  # control tokens are not printed by default
    assert qwen.decode(parsed, skip_special=False) == text
    assert qwen.is_special(start) and not qwen.is_special(plain[0])
    assert qwen.token_to_piece(start) == "<|im_start|>"
    spm = tokenizers("ggml-vocab-llama-spm")
    # After a special token SPM puts the leading space back, as llama.cpp does.
    assert spm.encode("<s>Hello", add_special=False, parse_special=True) == [1, 15043]


def test_pieces_and_stream_on_real_vocabs(tokenizers):
    spm = tokenizers("ggml-vocab-llama-spm")
    ids = spm.encode("Hi 🦙", add_special=False)
    assert [spm.token_text(i) for i in ids[-4:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    stream = spm.stream()
    assert [stream.feed(i) for i in ids] == ["Hi", " ", "", "", "", "🦙"]
    gpt2 = tokenizers("ggml-vocab-gpt-2")
    ids = gpt2.encode(" this is 🦙.cpp")
    assert gpt2.decode(ids) == " this is 🦙.cpp"
    assert gpt2.token_to_piece(ids[0]) == " this"


def test_speed(tokenizers):
    for name in ("ggml-vocab-llama-spm", "ggml-vocab-qwen2"):
        tok = tokenizers(name)
        text = "".join(t for t, _ in read_cases(name)) * 3
        tok.encode(text)  # builds the encoder
        start = time.perf_counter()
        ids = tok.encode(text)
        assert time.perf_counter() - start < 1.0, f"{name}: encoding {len(text)} characters is too slow"
        assert tok.decode(ids) == text


def test_from_gguf_matches_from_file(tokenizers):
    fast = tokenizers("ggml-vocab-llama-spm")
    slow = Tokenizer.from_gguf(open_gguf(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))
    assert slow.vocab == fast.vocab
    text = "".join(t for t, _ in read_cases("ggml-vocab-llama-spm"))
    assert slow.encode(text, parse_special=True) == fast.encode(text, parse_special=True)

"""llama.cpp's vocab test cases (ggml-vocab-*.gguf with .inp/.out): every string encodes and decodes exactly.

The files come from ../shared/testdata/vocab and from the cache scripts/fetch_vocab_tests.py fills
(gguflm.tokenizer.conformance.cache_dir); a vocabulary in neither is not collected.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.tokenizer import Tokenizer
from gguflm.tokenizer.cleanup import clean_up_spaces
from gguflm.tokenizer.conformance import cache_dir, find_vocabs, has_cases, read_cases

VOCAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "vocab"
VOCABS = find_vocabs(VOCAB_DIR, cache_dir())
WITH_CASES = sorted(name for name, path in VOCABS.items() if has_cases(path))
# Tokenizer models gguflm does not implement (WordPiece, Unigram): embedding models, not generators.
NOT_IMPLEMENTED = {"bert": "WordPiece", "t5": "Unigram"}


def open_vocab(name: str) -> Tokenizer:
    path = VOCABS.get(name)
    if path is None:
        pytest.skip(f"ggml-vocab-{name}.gguf is in neither {VOCAB_DIR} nor {cache_dir()}")
    model = open_gguf(path).metadata.get("tokenizer.ggml.model")
    if model in NOT_IMPLEMENTED:
        with pytest.raises(GGUFLMError, match=f"unsupported tokenizer model '{model}'"):
            Tokenizer.from_file(path)
        pytest.skip(f"{name}: {NOT_IMPLEMENTED[model]} ('{model}') vocabularies are not implemented")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old conversions without tokenizer.ggml.pre warn
        return Tokenizer.from_file(path)


@pytest.fixture(scope="module")
def tokenizers():
    """Each vocab opened once for the whole module (opening the big ones takes seconds)."""
    cache: dict[str, Tokenizer] = {}

    def get(name: str) -> Tokenizer:
        if name not in cache:
            cache[name] = open_vocab(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name", WITH_CASES)
def test_llama_cpp_cases_encode_and_decode(name, tokenizers):
    tok = tokenizers(name)
    cases = read_cases(VOCABS[name])
    assert cases
    wrong = [text for text, expected in cases if tok.encode(text, add_special=False) != expected]
    assert not wrong, f"{name}: {len(cases) - len(wrong)}/{len(cases)} cases match; first misses: {wrong[:3]}"
    for text, expected in cases:
        # The pieces as llama.cpp prints them: SentencePiece shows the space it put in front.
        stream = tok.stream(continuation=True)
        printed = "".join(stream.feed(t) for t in expected) + stream.flush()
        assert printed == (" " + text if expected and tok.strips_leading_space else text), f"{name}: {text!r}"
        # llama_detokenize drops that space again; some BPE vocabs also clean up spaces (tested below).
        assert tok.decode(expected) == (clean_up_spaces(text) if tok.clean_spaces else text), f"{name}: {text!r}"


def test_cache_holds_well_formed_vocab_files():
    cached = find_vocabs(cache_dir())
    if not cached:
        pytest.skip(f"no llama.cpp vocab files in {cache_dir()}: scripts/fetch_vocab_tests.py fills it")
    for name, path in cached.items():
        inp, out = path.with_name(path.name + ".inp"), path.with_name(path.name + ".out")
        assert inp.is_file() == out.is_file(), f"{name}: one of .inp and .out without the other"
        assert path.read_bytes()[:4] == b"GGUF"
        if has_cases(path):
            assert read_cases(path), f"{name}: no cases"


@pytest.mark.parametrize("name", sorted(set(VOCABS) - set(WITH_CASES)))
def test_vocabs_without_cases_load_and_round_trip(name, tokenizers):
    tok = tokenizers(name)
    for text in ("Hello world", " this is 🦙.cpp", "3333 Äpfel\n\n\tнещо"):
        ids = tok.encode(text, add_special=False)
        assert ids and tok.decode(ids) == text


def test_clean_spaces_as_llama_cpp_detokenizes(tokenizers):
    """llama_detokenize's clean-up for a vocab that asks for it (gpt-2), and none for one that does not."""
    text = "Hello, y'all! How are you 😁 ?我想 I 'm here , he 's 're 've 't 'd 'll ' ok"
    gpt2 = tokenizers("gpt-2")
    assert gpt2.clean_spaces
    assert gpt2.decode(gpt2.encode(text)) == "Hello, y'all! How are you 😁?我想 I'm here, he's're've 't 'd 'll'ok"
    qwen = tokenizers("qwen2")
    assert not qwen.clean_spaces and qwen.decode(qwen.encode(text)) == text


def test_bos_defaults(tokenizers):
    spm = tokenizers("llama-spm")
    assert spm.kind == "llama" and spm.bos_id == 1 and spm.eos_id == 2
    assert spm.encode("Hello world") == [1, 15043, 3186]
    assert spm.encode("Hello world", add_special=False) == [15043, 3186]
    llama3 = tokenizers("llama-bpe")
    assert llama3.kind == "gpt2" and llama3.pre == "llama-bpe"
    assert llama3.encode("Hello")[0] == 128000  # llama3's pre-tokenizer adds BOS by default
    qwen = tokenizers("qwen2")
    assert qwen.encode("Hello", add_special=True) == qwen.encode("Hello", add_special=False)


def test_eog_sets(tokenizers):
    llama3 = tokenizers("llama-bpe")
    assert {llama3.token_id("<|eot_id|>"), llama3.token_id("<|end_of_text|>")} <= llama3.eog_ids
    assert llama3.token_id("<|begin_of_text|>") not in llama3.eog_ids
    qwen = tokenizers("qwen2")
    assert {qwen.token_id("<|im_end|>"), qwen.token_id("<|endoftext|>")} <= qwen.eog_ids
    assert qwen.token_id("<|im_start|>") not in qwen.eog_ids
    assert tokenizers("llama-spm").eog_ids == frozenset({2})


def test_parse_special(tokenizers):
    qwen = tokenizers("qwen2")
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
    spm = tokenizers("llama-spm")
    # After a special token SPM puts the leading space back, as llama.cpp does.
    assert spm.encode("<s>Hello", add_special=False, parse_special=True) == [1, 15043]


def test_leading_space_rule_on_a_real_vocab(tokenizers):
    """llama_detokenize drops the space of the first token only: a leading BOS is that token."""
    spm = tokenizers("llama-spm")
    ids = spm.encode("Hello world")
    assert ids[0] == spm.bos_id
    assert spm.decode(ids[1:]) == "Hello world"
    assert spm.decode(ids) == " Hello world"
    assert spm.decode(ids, skip_special=False) == "<s> Hello world"


def test_pieces_and_stream_on_real_vocabs(tokenizers):
    spm = tokenizers("llama-spm")
    ids = spm.encode("Hi 🦙", add_special=False)
    assert [spm.token_text(i) for i in ids[-4:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    stream = spm.stream()
    assert [stream.feed(i) for i in ids] == ["Hi", " ", "", "", "", "🦙"]
    gpt2 = tokenizers("gpt-2")
    ids = gpt2.encode(" this is 🦙.cpp")
    assert gpt2.decode(ids) == " this is 🦙.cpp"
    assert gpt2.token_to_piece(ids[0]) == " this"


def test_gemma4_spaces_bytes_and_bos(tokenizers):
    """gemma4: spaces are "▁" inside tokens, unknown characters fall back to <0xXX>, BOS is always added."""
    tok = tokenizers("gemma-4")
    assert tok.kind == "gemma4" and tok.pre_tokenizer.family == "gemma4" and tok.add_bos
    ids = tok.encode("Hello world\n\n\n  🦙x", add_special=False)
    assert any("▁" in tok.token_text(i) for i in ids)
    assert tok.encode("Hello")[0] == tok.bos_id
    assert tok.decode(ids) == "Hello world\n\n\n  🦙x"


def test_long_text_round_trips(tokenizers):
    for name in ("llama-spm", "qwen2"):
        tok = tokenizers(name)
        text = "".join(t for t, _ in read_cases(VOCABS[name])) * 3
        ids = tok.encode(text)
        assert tok.decode(ids) == (" " + text if tok.strips_leading_space else text)


def test_from_gguf_matches_from_file(tokenizers):
    fast = tokenizers("llama-spm")
    slow = Tokenizer.from_gguf(open_gguf(VOCABS["llama-spm"]))
    assert slow.vocab == fast.vocab
    text = "".join(t for t, _ in read_cases(VOCABS["llama-spm"]))
    assert slow.encode(text, parse_special=True) == fast.encode(text, parse_special=True)

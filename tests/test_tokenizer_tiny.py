"""Tokenizer rules on tiny vocab-only GGUFs written here: SPM merges, BPE merges, special tokens, errors."""

from __future__ import annotations

import warnings

import gguf
import pytest

from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.tokenizer import Tokenizer
from gguflm.tokenizer.bpe import BYTE_TO_CHAR
from gguflm.tokenizer.pretokenize import SUPPORTED

N, UNK, CTRL, USER, BYTE = (int(t) for t in (gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN,
                                            gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
                                            gguf.TokenType.BYTE))
SPM_NORMAL = {"▁": -1, "H": -2, "e": -2, "l": -2, "o": -2, "w": -2, "r": -2, "d": -2, "ll": -3, "He": -4,
              "llo": -5, "Hello": -6, "▁Hello": -7, "▁w": -8, "or": -9, "ld": -10, "▁wor": -12, "▁world": -13}


def write_vocab(path, model, tokens, types, scores=None, merges=None, **keys):
    """A vocab-only GGUF (no tensors) with the given tokenizer metadata."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if "pre" in keys:
        w.add_tokenizer_pre(keys.pop("pre"))
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for key, value in keys.items():
        getattr(w, f"add_{key}")(value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def spm_vocab(path, **keys):
    tokens = ["<unk>", "<s>", "</s>", "<|im_end|>", "<tool>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNK, CTRL, CTRL, CTRL, USER] + [BYTE] * 256
    tokens += list(SPM_NORMAL)
    types += [N] * len(SPM_NORMAL)
    scores = [0.0] * (5 + 256) + [float(s) for s in SPM_NORMAL.values()]
    return write_vocab(path, "llama", tokens, types, scores, bos_token_id=1, eos_token_id=2, **keys)


def bpe_vocab(path, pre="qwen2", **keys):
    byte_chars = [BYTE_TO_CHAR[b] for b in range(256)]
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    words = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
    tokens = byte_chars + words + specials
    types = [N] * (256 + len(words)) + [CTRL, CTRL, CTRL, USER]
    return write_vocab(path, "gpt2", tokens, types, merges=merges, pre=pre, eos_token_id=len(tokens) - 4, **keys)


@pytest.fixture
def spm(tmp_path):
    return Tokenizer.from_file(spm_vocab(tmp_path / "spm.gguf"))


@pytest.fixture
def bpe(tmp_path):
    return Tokenizer.from_file(bpe_vocab(tmp_path / "bpe.gguf"))


def test_spm_merges_by_score(spm):
    hello, world = spm.token_id("▁Hello"), spm.token_id("▁world")
    assert spm.encode("Hello world") == [1, hello, world]
    assert spm.encode("Hello world", add_special=False) == [hello, world]
    assert spm.kind == "llama" and spm.vocab_size == 5 + 256 + len(SPM_NORMAL)


def test_spm_byte_fallback_and_spaces(spm):
    ids = spm.encode("Hé", add_special=False)
    assert [spm.token_text(i) for i in ids] == ["▁", "H", "<0xC3>", "<0xA9>"]
    assert spm.decode(ids) == "Hé"
    two = spm.encode("  Hello", add_special=False)
    assert spm.decode(two) == "  Hello"
    assert spm.decode(spm.encode("Hello")) == "Hello"  # BOS not printed, prefix space dropped
    assert spm.decode(spm.encode("Hello"), skip_special=False) == "<s> Hello"


def test_special_tokens(spm):
    end = spm.token_id("<|im_end|>")
    assert spm.encode("Hello<|im_end|>", add_special=False, parse_special=True)[-1] == end
    assert end not in spm.encode("Hello<|im_end|>", add_special=False)
    tool = spm.token_id("<tool>")
    assert tool in spm.encode("a<tool>b", add_special=False)  # user-defined: always matched
    assert end in spm.eog_ids and 2 in spm.eog_ids and 1 not in spm.eog_ids
    assert spm.is_special(end) and spm.is_special(tool) and not spm.is_special(spm.token_id("▁Hello"))
    assert spm.decode([tool]) == "<tool>" and spm.decode([end]) == ""


def test_bpe_merges_and_pieces(bpe):
    hello, world = bpe.token_id("hello"), bpe.token_id("Ġworld")
    assert bpe.encode("hello world") == [hello, world]  # qwen2 adds no BOS
    assert bpe.token_to_piece(world) == " world"
    assert bpe.decode(bpe.encode("hello wörld\n")) == "hello wörld\n"
    assert bpe.kind == "gpt2" and bpe.pre == "qwen2" and bpe.bos_id is None


def test_bpe_special_partition(bpe):
    start, end, think = (bpe.token_id(t) for t in ("<|im_start|>", "<|im_end|>", "<think>"))
    text = "<|im_start|>hello<think><|im_end|>"
    assert bpe.encode(text, parse_special=True) == [start, bpe.token_id("hello"), think, end]
    plain = bpe.encode(text)
    assert start not in plain and end not in plain and think in plain
    assert bpe.decode(plain) == text
    assert bpe.eog_ids == frozenset({bpe.token_id("<|endoftext|>"), end})


def test_add_bos_and_eos_from_metadata(tmp_path):
    tok = Tokenizer.from_file(spm_vocab(tmp_path / "v.gguf", add_bos_token=False, add_eos_token=True))
    assert tok.encode("Hello") == [tok.token_id("▁Hello"), 2]
    tok = Tokenizer.from_file(bpe_vocab(tmp_path / "b.gguf", pre="llama-bpe", bos_token_id=0))
    assert tok.encode("hello")[0] == 0  # llama3's pre-tokenizer adds BOS unless told otherwise


def test_unknown_pre_warns_and_falls_back(tmp_path):
    path = bpe_vocab(tmp_path / "b.gguf", pre="no-such-pre")
    with pytest.warns(UserWarning, match="no-such-pre"):
        tok = Tokenizer.from_file(path)
    assert tok.decode(tok.encode("hello world")) == "hello world"


def test_bad_vocabs_raise_one_sentence(tmp_path):
    path = write_vocab(tmp_path / "u.gguf", "t5", ["a"], [N])
    with pytest.raises(GGUFLMError, match="unsupported tokenizer model 't5'"):
        Tokenizer.from_file(path)
    path = write_vocab(tmp_path / "n.gguf", "none", ["a"], [N])
    with pytest.raises(GGUFLMError, match="no tokenizer"):
        Tokenizer.from_file(path)
    path = write_vocab(tmp_path / "m.gguf", "gpt2", ["a", "b"], [N, N], pre="gpt-2")
    with pytest.raises(GGUFLMError, match="merges"):
        Tokenizer.from_file(path)
    with pytest.raises(GGUFLMError, match="out of range"):
        Tokenizer.from_gguf(open_gguf(spm_vocab(tmp_path / "s.gguf"))).token_text(10**6)


def test_no_warning_for_known_vocab(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tokenizer.from_file(bpe_vocab(tmp_path / "b.gguf", pre="gpt-2")).encode("hello")


@pytest.mark.parametrize("pre", SUPPORTED)
def test_every_known_pre_tokenizer_round_trips(tmp_path, pre):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = Tokenizer.from_file(bpe_vocab(tmp_path / "b.gguf", pre=pre, bos_token_id=0))
        text = "hello world, y'all! 3333 我想 🦙\n\n  x"
        assert tok.decode(tok.encode(text, add_special=False)) == text

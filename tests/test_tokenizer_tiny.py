"""Tokenizer rules on tiny vocab-only GGUFs written here: SPM merges, BPE merges, special tokens, errors."""

from __future__ import annotations

import warnings

import pytest
from tiny_vocab import SPM_NORMAL, N, bpe_vocab, spm_vocab, write_vocab

from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.tokenizer import Tokenizer


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
    assert spm.decode(spm.encode("Hello", add_special=False)) == "Hello"  # the prefix space dropped
    assert spm.decode(spm.encode("Hello")) == " Hello"  # llama_detokenize: a leading BOS is the first token
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


def test_unknown_pre_warns_once_per_load_and_falls_back(tmp_path):
    path = bpe_vocab(tmp_path / "b.gguf", pre="no-such-pre")
    for _ in range(2):  # each load warns, and only once
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tok = Tokenizer.from_file(path)
            assert tok.decode(tok.encode("hello world")) == "hello world"
        assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
        assert "'no-such-pre'" in str(caught[0].message) and "'gpt-2'" in str(caught[0].message)
    assert tok.pre == "no-such-pre" and tok.pre_tokenizer.family == "gpt2"


def test_missing_pre_warns_and_uses_llama_cpp_default(tmp_path):
    path = bpe_vocab(tmp_path / "b.gguf", pre=None)
    with pytest.warns(UserWarning, match="has no tokenizer.ggml.pre.*'default'"):
        tok = Tokenizer.from_file(path)
    assert tok.pre is None and tok.pre_tokenizer.family == "default"


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

"""Pre-tokenizers on tiny vocabs: every name llama.cpp knows, and each family's special rules (digit
grouping, CJK runs, ignore-merges, gemma4's spaces and newlines, the whitespace model, clean_spaces)."""

from __future__ import annotations

import warnings

import pytest
from tiny_vocab import bpe_vocab, raw_vocab

from gguflm import info
from gguflm.gguf_file import open_gguf
from gguflm.tokenizer import Tokenizer
from gguflm.tokenizer.pretokenize import SUPPORTED, pre_tokenizer_for


def quiet(path) -> Tokenizer:
    """Open a vocab; any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Tokenizer.from_file(path)


def vocab_for(tmp_path, pre: str):
    """A byte-level vocab (token 0 as BOS), or a raw-UTF-8 one for the families that do not byte-encode."""
    if pre_tokenizer_for(pre).byte_encode:
        return bpe_vocab(tmp_path / f"{pre}.gguf", pre=pre, bos_token_id=0)
    return raw_vocab(tmp_path / f"{pre}.gguf", pre=pre)


@pytest.mark.parametrize("pre", SUPPORTED)
def test_every_known_pre_tokenizer_loads_quietly_and_round_trips(tmp_path, pre):
    tok = quiet(vocab_for(tmp_path, pre))
    text = "hello world, y'all! 3333 我想 🦙\n\n  x"
    assert tok.decode(tok.encode(text, add_special=False)) == text
    assert "".join(tok.split(text)) == (text.replace(" ", "▁") if tok.pre_tokenizer.escape_spaces else text)


@pytest.mark.parametrize("pre, text, pieces", [
    ("llama-bpe", "1234567", ["123", "456", "7"]),                      # \p{N}{1,3} from the left
    ("qwen2", "1234", ["1", "2", "3", "4"]),                            # single digits
    ("default", "12345", ["123", "45"]),                                # digit runs, then threes
    ("minicpm5", "x1234", ["x", "123", "4"]),
    ("afmoe", "1234567", ["1", "234", "567"]),                          # threes from the right
    ("afmoe", "ab12345 6", ["ab", "12", "345", " ", "6"]),
    ("superbpe", "x1234567", ["x", "1", "234", "567"]),                 # split before each group of three
    ("tiny_aya", "1234567 ok", ["1", "234", "567", " ok"]),
    # The original's \b finds no group end before a letter, so GPT-4o's \p{N}{1,3} cuts from the left
    # (llama.cpp's rewrite cuts 1 + 234 here).
    ("tiny_aya", "1234abc", ["123", "4", "abc"]),
])
def test_digit_grouping(tmp_path, pre, text, pieces):
    assert quiet(vocab_for(tmp_path, pre)).split(text) == pieces


@pytest.mark.parametrize("pre, text, pieces", [
    ("deepseek-v3", "我想在apple工作", ["我想在", "apple", "工作"]),
    ("deepseek-coder", "我想a1", ["我想", "a", "1"]),
    ("kimi-k2", "Hello世界abc", ["Hello", "世界", "abc"]),            # Han runs are never part of a word
    ("kimi-k2", "camelCase", ["camel", "Case"]),                        # and case changes end a word
    ("afmoe", "ok漢字かな", ["ok", "漢字かな"]),
    ("gpt-4o", "camelCase's", ["camel", "Case's"]),
    ("qwen35", "re\u0301sume\u0301", ["re\u0301sume\u0301"]),           # combining marks stay in the word
    ("qwen2", "re\u0301sume\u0301", ["re", "\u0301sume", "\u0301"]),
])
def test_scripts_cases_and_marks(tmp_path, pre, text, pieces):
    assert quiet(vocab_for(tmp_path, pre)).split(text) == pieces


def test_ignore_merges_takes_a_whole_word_from_the_vocab(tmp_path):
    merges, words = ["h e", "l l", "he ll"], ["hello"]  # the merges alone stop at "hell" + "o"
    llama3 = quiet(bpe_vocab(tmp_path / "l.gguf", pre="llama-bpe", merges=merges, words=words, bos_token_id=0))
    dbrx = quiet(bpe_vocab(tmp_path / "d.gguf", pre="dbrx", merges=merges, words=words))
    assert llama3.encode("hello", add_special=False) == [llama3.token_id("hello")]
    assert dbrx.encode("hello") == [dbrx.token_id("hell"), dbrx.token_id("o")]


def test_gemma4_spaces_newlines_and_byte_fallback(tmp_path):
    words = ["\n", "\n\n\n"]
    gemma = quiet(raw_vocab(tmp_path / "g.gguf", model="gemma4", pre=None, words=words, add_bos_token=False))
    assert gemma.pre == "gemma4" and gemma.add_bos  # llama.cpp always adds BOS for gemma4
    ids = gemma.encode("hello world\n\n\né", add_special=False)
    texts = [gemma.token_text(i) for i in ids]
    assert texts[:2] == ["hello", "▁w"] and "\n\n\n" in texts and texts[-2:] == ["<0xC3>", "<0xA9>"]
    assert gemma.decode(ids) == "hello world\n\n\né"
    sarvam = quiet(raw_vocab(tmp_path / "s.gguf", pre="sarvam-moe", words=words))
    newline = sarvam.token_id("\n")
    assert sarvam.encode("\n\n\n") == [newline] * 3  # no newline rule there: merges only


def test_whitespace_model_drops_whitespace_and_lowercases(tmp_path):
    path = raw_vocab(tmp_path / "w.gguf", model="whitespace", pre="whitespace",
                     **{"tokenizer.ggml.normalizer.lowercase": True})
    tok = quiet(path)
    assert tok.encode("Hello \t World\n") == tok.encode("hello") + tok.encode("world")
    assert tok.split("Hello \t World\n") == ["hello", "world"]


@pytest.mark.parametrize("pre, clean", [
    ("gpt-2", True), ("llama-bpe", True), ("bloom", True), ("megrez", True), ("stablelm2", True),
    ("qwen2", False), ("smollm", False), ("tekken", False), ("gpt-4o", False), ("deepseek-llm", False),
])
def test_clean_spaces_follows_llama_cpp(tmp_path, pre, clean):
    tok = quiet(vocab_for(tmp_path, pre))
    text = "hello , world !"
    assert tok.clean_spaces == clean
    assert tok.decode(tok.encode(text, add_special=False)) == ("hello, world!" if clean else text)


def test_info_shows_the_pre_tokenizer(tmp_path):
    rows = dict(info.describe(open_gguf(bpe_vocab(tmp_path / "k.gguf", pre="deepseek-r1-qwen"))).rows)
    assert rows["pre-tokenizer"].startswith("qwen2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # info shows the fallback in its row instead of warning
        d = info.describe(open_gguf(bpe_vocab(tmp_path / "u.gguf", pre="no-such-pre")))
    row = dict(d.rows)["pre-tokenizer"]
    assert row.startswith("gpt2") and "'no-such-pre'" in row
    hostile = dict(info.describe(open_gguf(bpe_vocab(tmp_path / "h.gguf", pre="x\x1b[2Jy"))).rows)
    assert "\x1b" not in hostile["pre-tokenizer"] and "'x\\x1b[2Jy'" in hostile["pre-tokenizer"]

"""Streaming detokenization: whole characters only, special tokens hidden, same text as decode."""

from __future__ import annotations

import gguf
import pytest

from gguflm.tokenizer import StreamDecoder, Tokenizer
from gguflm.tokenizer.stream import complete_prefix

WORDS = ["▁Hi", "Hi", "!", "▁"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A SentencePiece vocab with byte fallback: emoji become four <0xXX> tokens."""
    path = tmp_path_factory.mktemp("vocab") / "bytes.gguf"
    tokens = ["<unk>", "<s>", "</s>", "<|im_end|>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(WORDS)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_scores([0.0] * (len(tokens) - len(WORDS)) + [-1.0, -2.0, -3.0, -4.0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Tokenizer.from_file(path)


def test_emoji_split_over_byte_tokens_prints_whole(tok):
    ids = tok.encode("Hi 👋🏽!", add_special=False)
    assert len(ids) == 1 + 1 + 8 + 1  # ▁Hi, ▁, two 4-byte characters as byte tokens, !
    stream = tok.stream()
    pieces = [stream.feed(i) for i in ids]
    assert pieces == ["Hi", " ", "", "", "", "👋", "", "", "", "🏽", "!"]
    assert stream.flush() == ""
    assert "".join(pieces).encode() == "Hi 👋🏽!".encode()
    assert "\ufffd" not in "".join(pieces)


def test_stream_matches_decode_and_hides_control_tokens(tok):
    ids = tok.encode("Hi there! 👋", parse_special=True) + [tok.token_id("<|im_end|>")]
    for skip in (True, False):
        stream = StreamDecoder(tok, skip_special=skip)
        text = "".join(stream.feed(i) for i in ids) + stream.flush()
        assert text == tok.decode(ids, skip_special=skip)
    assert tok.decode(ids) == " Hi there! 👋"  # the hidden BOS is the first token: no space dropped
    assert tok.decode(ids, skip_special=False) == "<s> Hi there! 👋<|im_end|>"


def test_leading_space_rule(tok):
    """llama_detokenize: only the first token's piece loses one leading space."""
    hi, space = tok.token_id("▁Hi"), tok.token_id("▁")
    assert tok.decode([hi]) == "Hi"
    assert tok.decode([1, hi]) == " Hi"  # the first token is the BOS, printed as nothing
    assert tok.decode([hi, hi]) == "Hi Hi"
    assert tok.decode([space, space, hi]) == "  Hi"  # one space of three dropped
    continuation = tok.stream(continuation=True)
    assert continuation.feed(hi) == " Hi"  # a generation after its prompt keeps its space


def test_flush_releases_an_unfinished_character(tok):
    stream = tok.stream()
    assert stream.feed(tok.token_id("<0xF0>")) == ""
    assert stream.flush() == "\ufffd"
    assert stream.feed(tok.token_id("<0x41>")) == "A"


@pytest.mark.parametrize(
    "data, cut",
    [(b"", 0), (b"abc", 3), ("é".encode()[:1], 0), ("aé".encode(), 3), ("a👋".encode()[:4], 1),
     (b"\x80\x80", 2), (b"a\xff", 2)],
)
def test_complete_prefix(data, cut):
    assert complete_prefix(data) == cut

"""A small valid SentencePiece vocabulary for synthetic models, padded to any vocabulary size."""

from __future__ import annotations

import string

import gguf

K = gguf.Keys.Tokenizer
VT = gguf.GGUFValueType
TT = gguf.TokenType

WORDS = ("the", "a", "and", "of", "to", "in", "is", "it", "was", "on", "hello", "world", "once", "upon", "time")


def spm_tokenizer(n_vocab: int) -> dict:
    """tokenizer.ggml.* metadata for `write_synthetic_gguf`: <unk> <s> </s>, 256 byte tokens, pieces, fillers.

    Ids 0-2 are unk/bos/eos as llama.cpp's SentencePiece defaults; n_vocab must be at least 300.
    Every token text is distinct: llama.cpp maps text -> id and refuses a vocabulary that repeats one.
    """
    if n_vocab < 300:
        raise ValueError(f"a synthetic SentencePiece vocabulary needs at least 300 tokens, not {n_vocab}")
    texts = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TT.UNKNOWN, TT.CONTROL, TT.CONTROL] + [TT.BYTE] * 256
    pieces = ["▁", *string.ascii_lowercase, *(f"▁{c}" for c in string.ascii_lowercase), *(f"▁{w}" for w in WORDS)]
    for piece in dict.fromkeys(pieces):  # once each: "▁a" is a letter and a word
        if len(texts) < n_vocab:
            texts.append(piece)
            types.append(TT.NORMAL)
    while len(texts) < n_vocab:
        texts.append(f"▁w{len(texts)}")  # its own id: no piece above is "▁w" and digits
        types.append(TT.NORMAL)
    # longer pieces score higher, so merges prefer whole words
    scores = [0.0] * 259 + [float(len(t)) - i * 1e-3 for i, t in enumerate(texts[259:])]
    return {
        K.MODEL: ("llama", VT.STRING),
        K.LIST: (texts, VT.ARRAY),
        K.SCORES: (scores, VT.ARRAY),
        K.TOKEN_TYPE: ([int(t) for t in types], VT.ARRAY),
        K.UNK_ID: (0, VT.UINT32),
        K.BOS_ID: (1, VT.UINT32),
        K.EOS_ID: (2, VT.UINT32),
        K.ADD_BOS: (True, VT.BOOL),
    }

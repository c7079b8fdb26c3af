"""`Tokenizer`: text <-> token ids from a GGUF file's tokenizer.ggml.* metadata, matching llama.cpp."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from gguflm.errors import GGUFLMError
from gguflm.gguf_file import GGUFFile, open_gguf
from gguflm.tokenizer.bpe import BpeEncoder, decode_byte_chars
from gguflm.tokenizer.cleanup import clean_up_spaces
from gguflm.tokenizer.pretokenize import SUPPORTED, PreTokenizer, pre_tokenizer_for
from gguflm.tokenizer.spm import SPACE, SpmEncoder
from gguflm.tokenizer.stream import StreamDecoder
from gguflm.tokenizer.vocab import (BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, K, Vocab, check_types, load_vocab,
                                    pre_name)

BPE_MODELS = ("gpt2", "gemma4", "whitespace")

_HIDDEN = UNKNOWN | CONTROL  # not printed unless special tokens are asked for


class Tokenizer:
    """Encodes and decodes like llama.cpp's llama_tokenize / llama_detokenize for SentencePiece (`llama`)
    and BPE (`gpt2`, `gemma4`, `whitespace`) vocabs."""

    def __init__(self, vocab: Vocab, pre: PreTokenizer | None = None):
        self.vocab = vocab
        if vocab.model != "llama" and pre is None:
            pre = pre_tokenizer_for(vocab.pre)
        self._pre = None if vocab.model == "llama" else pre
        self._encoder: SpmEncoder | BpeEncoder | None = None  # built on first encode: decoding never needs it
        self._pieces: dict[int, bytes] = {}  # per instance: decoded text of each token seen so far

    def _get_encoder(self) -> SpmEncoder | BpeEncoder:
        if self._encoder is None:
            self._encoder = SpmEncoder(self.vocab) if self._pre is None else BpeEncoder(self.vocab, self._pre)
        return self._encoder

    @classmethod
    def from_gguf(cls, gf: GGUFFile) -> Tokenizer:
        """Build from an opened GGUF file (a vocab-only file is enough)."""
        return cls._from_metadata(gf.metadata, gf.path.name)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        """Build from a GGUF path (a vocab-only file is enough)."""
        return cls.from_gguf(open_gguf(path))

    @classmethod
    def _from_metadata(cls, md: dict[str, Any], name: str) -> Tokenizer:
        pre = None
        defaults = (True, True)  # SentencePiece: BOS and a leading space by default
        try:
            check_types(md)
            if md.get(K.MODEL) in BPE_MODELS:
                pre = pre_tokenizer_for(pre_name(md), name)  # warns here, once per load, if it must guess
                defaults = (pre.add_bos, False)
            return cls(load_vocab(md, defaults, force_bos=pre is not None and pre.family == "gemma4"), pre)
        except GGUFLMError as e:
            raise GGUFLMError(f"{name}: {e}") from None

    # ---- properties -------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.vocab.model

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eog_ids(self) -> frozenset[int]:
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def pre_tokenizer_label(self) -> str:
        """Which split is in use, and why when it is a fallback (for `gguflm info`)."""
        if self._pre is None:
            return "none (SentencePiece merges the whole text)"
        label = self._pre.summary()
        if self.vocab.pre is None:
            return f"{label}; the file names none, so llama.cpp's default"
        if self.vocab.pre not in SUPPORTED:
            return f"{label}; fallback for the unknown {self.vocab.pre!r}"  # repr: the file's text, escaped
        return label

    @property
    def pre(self) -> str | None:
        """tokenizer.ggml.pre as the file gives it (None when absent)."""
        return self.vocab.pre

    @property
    def pre_tokenizer(self) -> PreTokenizer | None:
        """The split in use for a BPE vocab (an unknown or missing name gets a fallback); None for SPM."""
        return self._pre

    @property
    def clean_spaces(self) -> bool:
        """Whether decode applies llama.cpp's space clean-up (" ," -> ","); streams never do."""
        return self._pre is not None and self._pre.clean_spaces

    def is_special(self, token_id: int) -> bool:
        """Control, unknown or user-defined: matched as a whole by parse_special."""
        return bool(self.vocab.attrs[self._check(token_id)] & (CONTROL | UNKNOWN | USER_DEFINED))

    def token_text(self, token_id: int) -> str:
        """The token's stored text (e.g. "▁Hello", "ĠHello", "<0x0A>")."""
        return self.vocab.texts[self._check(token_id)]

    def token_id(self, text: str) -> int | None:
        """The id of the token whose stored text is exactly `text`, if any."""
        return self.vocab.token_to_id.get(text)

    # ---- encode -----------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for text; add_special adds BOS/EOS as the model asks, parse_special matches control tokens."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: undecodable bytes from argv or stdin, or a "\ud800"
            raise GGUFLMError(f"the text is not valid UTF-8 (character {e.start} is {text[e.start]!r})") from None
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos:
            out.append(v.bos_id)
        encoder = self._get_encoder()
        spm = v.model == "llama"
        prev_special = True  # SPM: a leading space goes before the text and after each special token
        for frag in self._partition(text, parse_special):
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
            elif spm:
                if v.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(encoder.encode(frag.replace(" ", SPACE)))
                prev_special = False
            else:
                out.extend(encoder.encode(frag))
        if add_special and v.add_eos:
            out.append(v.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Split out special tokens, longest first (llama.cpp's tokenizer_st_partition)."""
        frags: list[str | int] = [text] if text else []
        v = self.vocab
        for tid in v.special_cache:
            if not parse_special and v.attrs[tid] & _HIDDEN:
                continue  # user-defined tokens are always matched; control ones only when asked
            tok = v.texts[tid]
            if not any(isinstance(f, str) and tok in f for f in frags):
                continue
            split: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or tok not in f:
                    split.append(f)
                    continue
                parts = f.split(tok)
                for j, part in enumerate(parts):
                    if j:
                        split.append(tid)
                    if part:
                        split.append(part)
            frags = split
        return frags

    def split(self, text: str) -> list[str]:
        """The pieces a BPE vocab's merges run on for plain text (after llama.cpp's pre-tokenizer split);
        SentencePiece has no such split, so its text is one piece."""
        if self._pre is None:
            return [text] if text else []
        return self._get_encoder().words(text)

    # ---- decode -----------------------------------------------------------------------------

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        """The bytes a token stands for (llama.cpp's token_to_piece); hidden tokens are b"" unless special."""
        attr = self.vocab.attrs[self._check(token_id)]
        if not special and attr & _HIDDEN:
            return b""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id, attr)
        return piece

    def _piece(self, token_id: int, attr: int) -> bytes:
        text = self.vocab.texts[token_id]
        if attr & (_HIDDEN | USER_DEFINED):
            return text.encode()
        if attr & NORMAL:
            if self._pre is None or self._pre.escape_spaces:
                return text.replace(SPACE, " ").encode()
            return decode_byte_chars(text) if self._pre.byte_encode else text.encode()
        if attr & BYTE:
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                try:
                    return bytes([int(text[3:5], 16)])
                except ValueError:
                    pass  # not hex after all: print the text as it is
            return text.encode()
        return b""  # unused and undefined tokens print nothing

    def token_to_piece(self, token_id: int) -> str:
        """The token's text as llama-tokenize prints it (special tokens shown, partial UTF-8 replaced)."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text for ids, as llama_detokenize gives it: where the vocab adds a space prefix (SPM) the first
        token loses one leading space, and `clean_spaces` vocabs get llama.cpp's space clean-up."""
        stream = self.stream(skip_special=skip_special)
        text = "".join(stream.feed(t) for t in ids) + stream.flush()
        return clean_up_spaces(text) if self.clean_spaces else text

    def stream(self, skip_special: bool = True, continuation: bool = False) -> StreamDecoder:
        """An incremental decoder; continuation=True for ids that follow already printed ones (no space dropped)."""
        return StreamDecoder(self, skip_special=skip_special, continuation=continuation)

    @property
    def strips_leading_space(self) -> bool:
        """True when decode drops the leading space of the first token's piece (add_space_prefix)."""
        return self.vocab.add_space_prefix

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < self.vocab.size:
            raise GGUFLMError(f"token id {token_id} is out of range (vocabulary of {self.vocab.size})")
        return token_id

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, pre={self.pre!r}, vocab_size={self.vocab_size})"

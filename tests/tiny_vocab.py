"""Tiny vocab-only GGUF files for the tokenizer tests: SentencePiece, byte-level BPE and raw-UTF-8 BPE."""

from __future__ import annotations

import gguf

from gguflm.tokenizer.bpe import BYTE_TO_CHAR

N, UNK, CTRL, USER, BYTE = (int(t) for t in (gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN,
                                            gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
                                            gguf.TokenType.BYTE))
SPM_NORMAL = {"▁": -1, "H": -2, "e": -2, "l": -2, "o": -2, "w": -2, "r": -2, "d": -2, "ll": -3, "He": -4,
              "llo": -5, "Hello": -6, "▁Hello": -7, "▁w": -8, "or": -9, "ld": -10, "▁wor": -12, "▁world": -13}
BYTE_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
BPE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]


def write_vocab(path, model, tokens, types, scores=None, merges=None, **keys):
    """A vocab-only GGUF (no tensors) with the given tokenizer metadata; keys name GGUFWriter.add_* calls."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if keys.get("pre") is not None:
        w.add_tokenizer_pre(keys.pop("pre"))
    keys.pop("pre", None)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for key, value in keys.items():  # a dotted key is written as it is (a bool), others by GGUFWriter.add_KEY
        w.add_bool(key, value) if "." in key else getattr(w, f"add_{key}")(value)
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


def bpe_vocab(path, pre="qwen2", merges=BYTE_MERGES, words=(), **keys):
    """Byte-level BPE: the 256 byte characters, each merge's result, extra `words`, four special tokens."""
    tokens = [BYTE_TO_CHAR[b] for b in range(256)]
    for m in merges:
        if m.replace(" ", "") not in tokens:
            tokens.append(m.replace(" ", ""))
    tokens += [w for w in words if w not in tokens]
    types = [N] * len(tokens) + [CTRL, CTRL, CTRL, USER]
    tokens += BPE_SPECIALS
    return write_vocab(path, "gpt2", tokens, types, merges=list(merges), pre=pre,
                       eos_token_id=len(tokens) - 4, **keys)


def raw_vocab(path, model="gpt2", pre="gemma4", merges=("h e", "l l", "he ll", "hell o", "▁ w"), words=(), **keys):
    """SentencePiece-style BPE on raw UTF-8: ASCII letters, "▁", <0xXX> byte tokens, BOS and EOS."""
    tokens = ["<pad>", "<eos>", "<bos>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [CTRL, CTRL, CTRL] + [BYTE] * 256
    normal = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁"]
    normal += [m.replace(" ", "") for m in merges] + list(words)
    normal = list(dict.fromkeys(normal))
    tokens += normal
    types += [N] * len(normal)
    return write_vocab(path, model, tokens, types, merges=list(merges), pre=pre,
                       bos_token_id=2, eos_token_id=1, **keys)

"""Tiny random chat models with real Llama 3.1 / Qwen3 chat templates and their special tokens.

`make_chat_model` is shared by the chat and run tests; the tests here check the models themselves.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.tokenizer.bpe import BYTE_TO_CHAR

VT = gguf.GGUFValueType
NORMAL, CONTROL, USER_DEFINED = (int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL),
                                 int(gguf.TokenType.USER_DEFINED))

# flavor -> (template file, pre-tokenizer, control tokens, user-defined tokens, bos, eos, add_bos)
FLAVORS = {
    "llama3": (
        "meta-llama-Llama-3.1-8B-Instruct.jinja", "llama-bpe",
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
         "<|eom_id|>", "<|python_tag|>"],
        [], "<|begin_of_text|>", "<|eot_id|>", True,
    ),
    "qwen3": (
        "Qwen-Qwen3-0.6B.jinja", "qwen2",
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        ["<think>", "</think>"], "<|endoftext|>", "<|im_end|>", False,
    ),
}
_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]


def make_chat_model(path: Path, flavor: str, testdata: Path, seed: int = 0) -> Path:
    """A 2-layer random llama with a byte-level vocab, the flavor's special tokens and real chat template."""
    template_file, pre, control, user, bos, eos, add_bos = FLAVORS[flavor]
    texts = [BYTE_TO_CHAR[b] for b in range(256)] + [m.replace(" ", "") for m in _MERGES]
    types = [NORMAL] * len(texts) + [CONTROL] * len(control) + [USER_DEFINED] * len(user)
    texts += control + user
    template = (testdata / "chat_templates" / template_file).read_text(encoding="utf-8")
    tokenizer = {
        "tokenizer.ggml.model": ("gpt2", VT.STRING),
        "tokenizer.ggml.pre": (pre, VT.STRING),
        "tokenizer.ggml.tokens": (texts, VT.ARRAY),
        "tokenizer.ggml.token_type": (types, VT.ARRAY),
        "tokenizer.ggml.merges": (_MERGES, VT.ARRAY),
        "tokenizer.ggml.bos_token_id": (texts.index(bos), VT.UINT32),
        "tokenizer.ggml.eos_token_id": (texts.index(eos), VT.UINT32),
        "tokenizer.ggml.add_bos_token": (add_bos, VT.BOOL),
        "tokenizer.chat_template": (template, VT.STRING),
    }
    spec = SyntheticSpec(n_vocab=len(texts), n_ctx=1024, seed=seed)
    return write_synthetic_gguf(path, spec, tokenizer=tokenizer)


def make_chat_models(root: Path, testdata: Path) -> dict[str, Path]:
    """One model of each flavor under `root`, by flavor name."""
    return {flavor: make_chat_model(root / f"{flavor}.gguf", flavor, testdata) for flavor in FLAVORS}


@pytest.fixture(scope="module")
def chat_models(testdata, tmp_path_factory) -> dict[str, Path]:
    return make_chat_models(tmp_path_factory.mktemp("chat_models"), testdata)


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
def test_special_tokens_encode_whole_and_end_generation(chat_models, flavor):
    import gguflm

    tok = gguflm.load(chat_models[flavor], device="cpu").tokenizer
    _, _, control, user, bos, eos, add_bos = FLAVORS[flavor]
    for text in control + user:
        assert tok.encode(text, add_special=False, parse_special=True) == [tok.token_id(text)]
    assert tok.token_id(eos) in tok.eog_ids
    assert tok.add_bos == add_bos and tok.token_text(tok.bos_id) == bos
    assert tok.decode(tok.encode("the cat in a hat", add_special=False)) == "the cat in a hat"

"""Tokenizer export: SentencePiece and byte-level BPE checkpoints -> tokenizer.ggml.* keys."""

from __future__ import annotations

import json

import gguf
import pytest
from gguf import TokenType as T

from gguflm.convert import convert_checkpoint
from gguflm.errors import GGUFLMError
from tiny_hf import load_hf_tokenizer, make_tiny_checkpoint

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. 42 and 3.14!",
    "  leading spaces, tabs\tand\n\nnewlines  ",
    "I'm sure they'll say it's fine; café naïve 東京 🙂",
    "numbers 1234567 and symbols ---=== ...",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tok")
    out = {}
    for kind, arch in (("spm", "llama"), ("bpe-llama3", "llama"), ("bpe-qwen2", "qwen2")):
        d = make_tiny_checkpoint(root / kind, arch, tokenizer=kind)
        out[kind] = (d, convert_checkpoint(d, root / f"{kind}.gguf", "q8_0"))
    return out


def kv(path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if k.startswith("tokenizer.")}


def test_spm_vocab(converted):
    import sentencepiece as spm

    d, path = converted["spm"]
    meta = kv(path)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.pre"] == "default"
    n = sp.vocab_size()
    assert meta["tokenizer.ggml.tokens"][:n] == [sp.IdToPiece(i) for i in range(n)]
    assert meta["tokenizer.ggml.tokens"][n:] == ["<|im_start|>", "<|im_end|>"]
    assert meta["tokenizer.ggml.token_type"][n:] == [T.CONTROL, T.CONTROL]
    assert meta["tokenizer.ggml.scores"][:n] == pytest.approx([sp.GetScore(i) for i in range(n)])
    types = meta["tokenizer.ggml.token_type"]
    assert types[0] == T.UNKNOWN and types[1] == types[2] == T.CONTROL
    assert types[3] == T.BYTE and meta["tokenizer.ggml.tokens"][3] == "<0x00>"
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


@pytest.mark.parametrize("kind, pre", [("bpe-llama3", "llama-bpe"), ("bpe-qwen2", "qwen2")])
def test_bpe_vocab(converted, kind, pre):
    d, path = converted[kind]
    meta = kv(path)
    spec = json.loads((d / "tokenizer.json").read_text())
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == pre
    assert len(meta["tokenizer.ggml.merges"]) == len(spec["model"]["merges"])
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    for text, i in spec["model"]["vocab"].items():
        assert tokens[i] == text and types[i] == T.NORMAL
    for added in spec["added_tokens"]:
        assert tokens[added["id"]] == added["content"] and types[added["id"]] == T.CONTROL
    hf = load_hf_tokenizer(d)
    assert meta["tokenizer.ggml.eos_token_id"] == hf.eos_token_id
    if kind == "bpe-llama3":
        assert meta["tokenizer.ggml.bos_token_id"] == hf.bos_token_id
        assert meta["tokenizer.ggml.add_bos_token"] is True
    assert "<|im_end|>" in meta["tokenizer.chat_template"]


@pytest.mark.parametrize("kind", ["spm", "bpe-llama3", "bpe-qwen2"])
def test_gguflm_tokenizes_like_transformers(converted, kind):
    tokenizer = pytest.importorskip("gguflm.tokenizer")
    if not hasattr(getattr(tokenizer, "Tokenizer", None), "from_file"):
        pytest.skip("gguflm.tokenizer.Tokenizer.from_file is not there yet")
    d, path = converted[kind]
    ours, hf = tokenizer.Tokenizer.from_file(path), load_hf_tokenizer(d)
    for text in TEXTS:
        if kind == "spm" and text[0].isspace():
            # transformers 5's Metaspace(prepend_scheme="first") does not prepend "▁" before a leading
            # space; llama.cpp (and so gguflm) always does. The GGUF is right either way.
            continue
        assert ours.encode(text, add_special=True) == hf.encode(text), text
    chat = "<|im_start|>user\nHi there<|im_end|>\n"
    ids, want = ours.encode(chat, add_special=False, parse_special=True), hf.encode(chat, add_special_tokens=False)
    if kind == "spm":  # llama.cpp prefixes "▁" after a special token too; transformers 5 does not
        start, end = hf.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        assert ids[0] == start and ids.count(start) == 1 and ids.count(end) == 1
    else:
        assert ids == want


def test_unknown_pre_tokenizer_is_an_error_unless_forced(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "odd", "qwen2", tokenizer="bpe-qwen2")
    spec = json.loads((d / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}+|\s+|."
    (d / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(GGUFLMError, match="--pre"):
        convert_checkpoint(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    path = convert_checkpoint(d, tmp_path / "x.gguf", pre="qwen2")
    assert kv(path)["tokenizer.ggml.pre"] == "qwen2"


def test_vocab_only(converted, tmp_path):
    d, _ = converted["bpe-llama3"]
    r = gguf.GGUFReader(convert_checkpoint(d, tmp_path / "v.gguf", vocab_only=True))
    assert len(r.tensors) == 0
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.block_count"].contents() == 2
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == 405


def test_vocab_only_without_tokenizer_is_an_error(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "bare", "qwen3")
    with pytest.raises(GGUFLMError, match="tokenizer"):
        convert_checkpoint(d, tmp_path / "v.gguf", vocab_only=True)


def test_generation_config_eos_is_the_fallback(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "gen", "qwen2", tokenizer="bpe-qwen2", eos_token_id=None)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("eos_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [401, 402]}))
    assert kv(convert_checkpoint(d, tmp_path / "g.gguf"))["tokenizer.ggml.eos_token_id"] == 401


@pytest.mark.parametrize("steps, name", [
    ([{"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}], "gpt-2"),
    ([{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}], "smollm"),
    ([{"type": "Digits", "individual_digits": False}, {"type": "ByteLevel", "use_regex": True}], None),
    ([{"type": "Whitespace"}, {"type": "ByteLevel", "use_regex": False}], None),
])
def test_detect_pre_matches_whole_pipelines_only(steps, name):
    from gguflm.convert.vocab import detect_pre

    spec = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": steps}}
    if name is None:
        with pytest.raises(GGUFLMError, match="--pre"):
            detect_pre(spec)
    else:
        assert detect_pre(spec) == name


def test_runtime_knows_every_detected_pre_name():
    pretokenize = pytest.importorskip("gguflm.tokenizer.pretokenize")
    from gguflm.convert.vocab import KNOWN_PRE

    assert set(KNOWN_PRE) <= set(pretokenize.SUPPORTED)

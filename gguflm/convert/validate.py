"""What the converter checks, so a broken checkpoint is one clear error and never a file gguflm rejects.

Before anything is written: config.json's hyper-parameters (type and range of each), every checkpoint
tensor's rank and size, the layer count against the tensors present, and every output tensor's shape
against the config. After the file is written, and before it gets its name: the file itself, through
gguflm's own reader, config check, weight check and tokenizer.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from types import SimpleNamespace

from gguflm import arch as archs
from gguflm.config import MAX_DIM
from gguflm.errors import GGUFLMError, shown

# ---------------------------------------------------------------------------- config.json

_REQUIRED_INTS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
_OPTIONAL_INTS = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta")
_ROPE_BLOCKS = ("rope_scaling", "rope_parameters")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON `true` is a Python int


def positive_int(value, what: str, limit: int = MAX_DIM) -> int:
    """`value` if it is an integer in 1..limit, else a GGUFLMError naming `what`."""
    if not _is_int(value) or not 0 < value <= limit:
        raise GGUFLMError(f"{what} is {_brief(value)}, but must be a positive integer (at most {limit}).")
    return value


def positive_number(value, what: str) -> float:
    """`value` if it is a finite number above zero, else a GGUFLMError naming `what`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise GGUFLMError(f"{what} is {_brief(value)}, but must be a positive finite number.")
    return float(value)


def _brief(value) -> str:
    return shown(repr(value), 40) if not isinstance(value, str) else shown(value, 40)


def check_config(config: dict) -> None:
    """Every hyper-parameter the converter reads has the type and range a model can have."""
    names = config.get("architectures")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise GGUFLMError("config.json's 'architectures' must be a list of class names (strings).")
    for key in _REQUIRED_INTS:
        if key not in config:
            raise GGUFLMError(f"config.json lacks a positive integer {key!r}, which the converter needs.")
        positive_int(config[key], f"config.json's {key!r}")
    for key in _OPTIONAL_INTS:
        if config.get(key) is not None:
            positive_int(config[key], f"config.json's {key!r}")
    for key in _POSITIVE_NUMBERS:
        if config.get(key) is not None:
            positive_number(config[key], f"config.json's {key!r}")
    tie = config.get("tie_word_embeddings")
    if tie is not None and not isinstance(tie, bool):
        raise GGUFLMError(f"config.json's 'tie_word_embeddings' is {_brief(tie)}, but must be true or false.")
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if heads % kv_heads:
        raise GGUFLMError(f"config.json's num_attention_heads {heads} is not a multiple of num_key_value_heads "
                          f"{kv_heads}.")
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim == 0 or head_dim % 2:
        raise GGUFLMError(f"the head size {head_dim} (head_dim, or hidden_size / num_attention_heads) must be even "
                          "and positive: rotary embeddings rotate pairs.")
    for key in ("bos_token_id", "eos_token_id"):
        check_token_ids(config.get(key), f"config.json's {key!r}", config["vocab_size"])
    for key in _ROPE_BLOCKS:
        _check_rope_block(config.get(key), key)


def check_token_ids(value, what: str, n_vocab: int) -> None:
    """`value` is absent, a token id below `n_vocab` or a list of them."""
    ids = value if isinstance(value, list) else [value]
    for i in ids:
        if i is None and not isinstance(value, list):
            continue
        if not _is_int(i) or not 0 <= i < n_vocab:
            raise GGUFLMError(f"{what} is {_brief(value)}, but must be a token id below vocab_size {n_vocab}.")


def _check_rope_block(block, key: str) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        raise GGUFLMError(f"config.json's {key!r} must be an object (or null), not {_brief(block)}.")
    for name in ("rope_type", "type"):
        if block.get(name) is not None and not isinstance(block[name], str):
            raise GGUFLMError(f"config.json's {key}.{name} must be a string, not {_brief(block[name])}.")
    kind = str(block.get("rope_type") or block.get("type") or "default").lower()
    for name in ("factor", "rope_theta", "low_freq_factor", "high_freq_factor"):
        if block.get(name) is not None:
            positive_number(block[name], f"config.json's {key}.{name}")
    if block.get("original_max_position_embeddings") is not None:
        positive_int(block["original_max_position_embeddings"], f"config.json's {key}.original_max_position_embeddings")
    if kind == "yarn" and block.get("original_max_position_embeddings") is None:
        raise GGUFLMError(f"config.json's {key} is yarn scaling without original_max_position_embeddings.")
    if kind == "llama3" and block.get("low_freq_factor", 1.0) >= block.get("high_freq_factor", 4.0):
        raise GGUFLMError(f"config.json's {key}: llama3 scaling needs low_freq_factor below high_freq_factor.")


# ---------------------------------------------------------------------------- checkpoint tensors

_HF_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def check_sources(config: dict, sources) -> None:
    """Every checkpoint tensor is 1-D or 2-D with no empty dimension, and num_hidden_layers matches the
    layers the checkpoint holds (checked first: a huge count would otherwise cost minutes of name tables)."""
    for s in sources:
        if not 1 <= len(s.shape) <= 2 or 0 in s.shape:
            raise GGUFLMError(f"checkpoint tensor {shown(s.name)} has shape {tuple(s.shape)}; every weight gguflm "
                              "converts is a vector or a matrix with no empty dimension.")
    layers = {int(m.group(1)) for s in sources if (m := _HF_LAYER.search(s.name))}
    n_layers = config["num_hidden_layers"]
    if layers and max(layers) >= n_layers:
        raise GGUFLMError(f"the checkpoint has tensors of layer {max(layers)}, but config.json's num_hidden_layers "
                          f"is {n_layers}.")
    if sources and n_layers > len(layers):
        raise GGUFLMError(f"config.json's num_hidden_layers is {n_layers}, but the checkpoint has tensors for "
                          f"{len(layers)} layer(s).")


def expected_shapes(config: dict, arch: archs.Architecture) -> dict[str, tuple[int, ...]]:
    """Torch-order shape of every tensor a file of this config may hold (all of the architecture's extras)."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    cfg = SimpleNamespace(dim=config["hidden_size"], q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
                          head_dim=head_dim, ffn_dim=config["intermediate_size"], n_vocab=config["vocab_size"],
                          n_layers=config["num_hidden_layers"], rope_dim=head_dim)
    return dict(archs.file_tensors(cfg, arch.extras, tied=False, rope_freqs=True))


def check_plan(plan) -> None:
    """Every output tensor is one the architecture uses, with the shape config.json implies."""
    if not plan.tensors:
        return
    expected = expected_shapes(plan.config, plan.arch)
    for t in plan.tensors:
        source = shown(t.source.name) if t.source is not None else t.name
        want = expected.get(t.name)
        if want is None:
            raise GGUFLMError(f"checkpoint tensor {source} (GGUF {t.name}) is not one gguflm's {plan.arch.name} "
                              "architecture uses.")
        if tuple(t.shape) != want:
            hint = " (config.json's vocab_size?)" if t.name.startswith(("token_embd.", "output.")) else ""
            raise GGUFLMError(f"checkpoint tensor {source} has shape {tuple(t.shape)}, but config.json's "
                              f"hyper-parameters give {want}{hint}.")


# ---------------------------------------------------------------------------- the written file


def check_metadata(w) -> None:
    """Every metadata value the writer holds packs as the GGUF type it was given: a string or a list
    where a number belongs (a generation_config.json's top_k, say) fails here, not mid-write."""
    for key, val in w.kv_data[0].items():
        try:
            w._pack_val(val.value, val.type, add_vtype=True, sub_type=val.sub_type)
        except (struct.error, ValueError, TypeError, OverflowError, AttributeError, RecursionError):
            raise GGUFLMError(f"metadata {key} cannot be written as a GGUF {val.type.name.lower()}: the checkpoint "
                              f"gives {_brief(val.value)}.") from None


def check_output(path: Path, *, weights: bool, tokenizer: bool) -> None:
    """The written file opens in gguflm: header, config, every tensor's type and shape, the tokenizer."""
    from gguflm.config import ModelConfig
    from gguflm.gguf_file import open_gguf
    from gguflm.weights import check_weights

    try:
        gf = open_gguf(path)
        if weights:
            check_weights(gf, ModelConfig.from_gguf(gf))
        if tokenizer:
            from gguflm.tokenizer import Tokenizer

            Tokenizer.from_gguf(gf)
    except GGUFLMError as e:
        raise GGUFLMError(f"the converted file fails gguflm's own check, so nothing was written: {e}") from None


# ---------------------------------------------------------------------------- tokenizer files


def _token_id(value, what: str) -> int:
    if not _is_int(value) or value < 0:
        raise GGUFLMError(f"{what} is {_brief(value)}, but must be a token id (an integer, at least 0).")
    return value


def is_text(value) -> bool:
    """A string that is valid Unicode (JSON's escapes can spell a lone surrogate, which UTF-8 cannot hold)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _added_entries(entries, where: str) -> None:
    if not isinstance(entries, list):
        raise GGUFLMError(f"{where}'s 'added_tokens' must be a list, not {_brief(entries)}.")
    for a in entries:
        if not isinstance(a, dict) or not is_text(a.get("content")):
            raise GGUFLMError(f"{where} has an added token {_brief(a)} without a 'content' string.")
        _token_id(a.get("id"), f"{where}'s id of added token {shown(a['content'])}")


def check_tokenizer_json(spec: dict) -> None:
    """The fields of tokenizer.json the converter reads have the types the tokenizers library writes."""
    where = "tokenizer.json"
    model = spec.get("model", {})
    if not isinstance(model, dict):
        raise GGUFLMError(f"{where}'s 'model' must be an object, not {_brief(model)}.")
    vocab = model.get("vocab")
    if model.get("type") == "BPE":
        if not isinstance(vocab, dict) or not vocab:
            raise GGUFLMError(f"{where}'s model.vocab must be a non-empty object of token -> id.")
        for text, i in vocab.items():
            _token_id(i, f"{where}'s id of token {shown(text)}")
        merges = model.get("merges", [])
        pairs = all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in merges) \
            if isinstance(merges, list) else False
        if not isinstance(merges, list) or not (all(isinstance(m, str) for m in merges) or pairs):
            raise GGUFLMError(f"{where}'s model.merges must be a list of 'a b' strings or of [a, b] pairs.")
    _added_entries(spec.get("added_tokens", []), where)
    pre = spec.get("pre_tokenizer")
    if pre is not None and not isinstance(pre, dict):
        raise GGUFLMError(f"{where}'s 'pre_tokenizer' must be an object (or null), not {_brief(pre)}.")
    steps = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else []
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise GGUFLMError(f"{where}'s pre_tokenizer.pretokenizers must be a list of objects.")
    post = spec.get("post_processor")
    if post is not None and not (isinstance(post, dict) and isinstance(post.get("processors", []), list)
                                 and all(isinstance(p, dict) for p in post.get("processors", []))):
        raise GGUFLMError(f"{where}'s 'post_processor' must be an object (with a list of processor objects).")


_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def check_tokenizer_config(tc: dict) -> None:
    """tokenizer_config.json's special tokens, flags, added tokens and chat template have their types."""
    where = "tokenizer_config.json"
    for key in _SPECIAL_KEYS:
        value = tc.get(key)
        if value is not None and not is_text(value) and not (isinstance(value, dict) and is_text(value.get("content"))):
            raise GGUFLMError(f"{where}'s {key!r} must be a token's text (or an object with 'content').")
    for key in ("add_bos_token", "add_eos_token", "add_prefix_space"):
        if tc.get(key) is not None and not isinstance(tc[key], bool):
            raise GGUFLMError(f"{where}'s {key!r} is {_brief(tc[key])}, but must be true or false.")
    decoder = tc.get("added_tokens_decoder", {})
    if not isinstance(decoder, dict):
        raise GGUFLMError(f"{where}'s 'added_tokens_decoder' must be an object of id -> token.")
    for i, d in decoder.items():
        if not i.isdigit() or not isinstance(d, dict) or not is_text(d.get("content")):
            raise GGUFLMError(f"{where}'s added_tokens_decoder entry {shown(i)} must map a token id to an object "
                              "with a 'content' string.")
    template = tc.get("chat_template")
    named = isinstance(template, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                               and isinstance(t.get("template"), str) for t in template)
    if template is not None and not isinstance(template, str) and not named:
        raise GGUFLMError(f"{where}'s 'chat_template' must be a string or a list of {{name, template}} objects.")


def check_added_tokens_json(added: dict) -> None:
    for text, i in added.items():
        if not is_text(text):
            raise GGUFLMError(f"added_tokens.json has a token {shown(text)} that is not valid Unicode.")
        _token_id(i, f"added_tokens.json's id of {shown(text)}")


def special_text(value) -> str | None:
    """The text of a special-token entry of tokenizer_config.json (a string or {content: ...})."""
    return value.get("content") if isinstance(value, dict) else value


def check_special_tokens_known(tc: dict, tokens) -> None:
    """The BOS and EOS tokens tokenizer_config.json names are in the vocabulary: a file whose end token
    is missing would generate until the context runs out."""
    texts = {t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in tokens}
    for key in ("bos_token", "eos_token"):
        text = special_text(tc.get(key))
        if text and text not in texts:
            raise GGUFLMError(f"tokenizer_config.json's {key} {shown(text)} is not a token of the vocabulary.")

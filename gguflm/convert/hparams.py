"""From a Hugging Face config.json to GGUF: the architecture record, {arch}.* metadata, tensor names,
Q/K permutation. What differs per architecture is read from its record in `gguflm.arch`."""

from __future__ import annotations

import math

import gguf
import torch

from gguflm import arch as archs
from gguflm.arch import Architecture
from gguflm.convert import validate
from gguflm.errors import GGUFLMError


# Tensors HF stores that inference recomputes.
_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


def architecture_for(config: dict) -> Architecture:
    """The record for the checkpoint's `architectures[0]`, or a GGUFLMError listing what is supported."""
    names = config.get("architectures") or []
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise GGUFLMError("config.json's 'architectures' must be a list of class names (strings).")
    supported = ", ".join(archs.hf_classes())
    if not names:
        raise GGUFLMError(f"config.json names no model class in 'architectures'; supported: {supported}.")
    record = archs.for_hf_class(names[0])
    if record is None:
        raise GGUFLMError(f"architecture {names[0]!r} is not supported; supported: {supported}.")
    return record


def check_config(config: dict) -> None:
    """A GGUFLMError naming the first hyper-parameter config.json lacks or has of the wrong type or range."""
    validate.check_config(config)


def rope_params(config: dict) -> dict:
    """Rope settings from either config style: transformers 5 `rope_parameters` or `rope_theta` + `rope_scaling`."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    return params


def head_dim(config: dict) -> int:
    """Per-head dimension: explicit `head_dim` or hidden_size / num_attention_heads."""
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def write_hparams(w: gguf.GGUFWriter, config: dict, arch: Architecture) -> None:
    """The {arch}.* keys, in the order and with the presence rules of llama.cpp's converter."""
    w.add_block_count(config["num_hidden_layers"])
    if config.get("max_position_embeddings") is not None:
        w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    rope = rope_params(config)
    _write_rope_scaling(w, rope)
    if rope.get("rope_theta") is not None:
        w.add_rope_freq_base(rope["rope_theta"])
    if config.get("rms_norm_eps") is not None:
        w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        w.add_key_length(config["head_dim"])
        w.add_value_length(config["head_dim"])
    extra = {gguf.Keys.LLM.VOCAB_SIZE: config["vocab_size"], gguf.Keys.Rope.DIMENSION_COUNT: head_dim(config)}
    for key in arch.converter_keys:
        if key in extra:  # the tokenizer's keys are written with the vocabulary
            w.add_uint32(arch.key(key), extra[key])


def _write_rope_scaling(w: gguf.GGUFWriter, rope: dict) -> None:
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind in (None, "default", "llama3"):  # llama3 is carried by the rope_freqs tensor
        return
    if kind == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif kind == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    else:
        raise GGUFLMError(f"rope scaling type {kind!r} is not supported; supported: default, linear, yarn, llama3.")


def llama3_rope_factors(config: dict) -> torch.Tensor | None:
    """Llama 3.1's per-frequency rope divisors (head_dim/2 floats), or None when not llama3 scaling."""
    rope = rope_params(config)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base, dim = rope.get("rope_theta", 10000.0), head_dim(config)
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    # transformers reads this from the rope block; llama.cpp from the top level; both are 8192 for Llama 3.1.
    old_ctx = rope.get("original_max_position_embeddings", config.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    out = []
    for freq in freqs:  # 0-d fp32 tensors, as llama.cpp computes them: the factors come out bit-identical
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor([float(x) for x in out], dtype=torch.float32)


def gguf_name(arch: Architecture, n_layers: int, hf_name: str) -> str | None:
    """The GGUF tensor name for an HF tensor; None for tensors to drop; GGUFLMError for unknown ones."""
    if hf_name.endswith(_SKIPPED_SUFFIXES):
        return None
    mapped = gguf.get_tensor_name_map(arch.gguf_arch, n_layers).get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise GGUFLMError(f"checkpoint tensor {hf_name!r} has no GGUF equivalent for {arch.name}.")
    return mapped


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Interleave each head's two rotary halves so pairs are adjacent: rows (h, 2, d/2) -> (h, d/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_heads(config: dict, gguf_tensor: str) -> int | None:
    """Head count to permute a tensor by (Q: heads, K: kv heads), or None for tensors left as they are."""
    parts = gguf_tensor.split(".")
    if parts[0] != "blk" or not parts[1].isdigit():
        return None
    base = gguf_tensor.rsplit(".", 1)[0]  # weight and bias alike
    if base == gguf.TENSOR_NAMES[archs.T.ATTN_Q].format(bid=parts[1]):
        return config["num_attention_heads"]
    if base == gguf.TENSOR_NAMES[archs.T.ATTN_K].format(bid=parts[1]):
        return config.get("num_key_value_heads") or config["num_attention_heads"]
    return None

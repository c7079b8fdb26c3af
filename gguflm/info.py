"""A readable summary of a GGUF file, for `gguflm info`."""

from __future__ import annotations

from collections import Counter

import gguf

from gguflm.config import ModelConfig
from gguflm.gguf_file import GGUFFile
from gguflm.weights import check_weights


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def describe(gf: GGUFFile) -> list[tuple[str, str]]:
    """(label, value) rows describing the model, its tensors and its tokenizer."""
    rows = [("file", f"{gf.path} ({human_bytes(gf.file_size)})"), ("architecture", gf.architecture)]
    name = gf.get(gguf.Keys.General.NAME, None, str)
    if name:
        rows.append(("name", name))
    if gf.tensors:
        cfg = ModelConfig.from_gguf(gf)
        check_weights(gf, cfg)
        n_params = sum(int(t.n_elements) for t in gf.tensors.values())
        rows += [
            ("parameters", f"{n_params / 1e6:.2f} M"),
            ("layers", str(cfg.n_layers)),
            ("embedding", str(cfg.dim)),
            ("feed-forward", str(cfg.ffn_dim)),
            ("heads", f"{cfg.n_heads} (kv {cfg.n_kv_heads}, head size {cfg.head_dim})"),
            ("vocabulary", str(cfg.n_vocab)),
            ("context length", str(cfg.n_ctx_train)),
            ("rope", f"{cfg.rope_mode}, base {cfg.rope_base:g}, dims {cfg.rope_dim}, scale {cfg.rope_scale:g}"
             + (", rope_freqs" if "rope_freqs.weight" in gf.tensors else "")),
            ("tied embeddings", "yes" if "output.weight" not in gf.tensors else "no"),
        ]
    types = Counter(t.tensor_type.name for t in gf.tensors.values())
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(types.items()))
    rows.append(("tensors", f"{len(gf.tensors)}: {by_type}" if gf.tensors else "none (vocabulary only)"))
    tokens = gf.get(gguf.Keys.Tokenizer.LIST, [], list)
    kind = gf.get(gguf.Keys.Tokenizer.MODEL, "none", str)
    pre = gf.get(gguf.Keys.Tokenizer.PRE, None, str)
    rows.append(("tokenizer", f"{kind}" + (f" (pre: {pre})" if pre else "") + f", {len(tokens)} tokens"))
    rows += _eog_rows(gf)
    has_template = bool(gf.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE, "", str))
    rows.append(("chat template", "present" if has_template else "none"))
    return rows


def _eog_rows(gf: GGUFFile) -> list[tuple[str, str]]:
    """The end-of-generation set, when the file has a tokenizer we can build."""
    if not gf.get(gguf.Keys.Tokenizer.LIST, None):
        return []
    from gguflm.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(gf)
    pieces = ", ".join(f"{i} {tok.token_text(i)!r}" for i in sorted(tok.eog_ids))
    return [("end of generation", pieces or "none")]

"""A readable summary of any well-formed GGUF file, for `gguflm info`, and what would stop it running.

`describe` never refuses a file the parser accepted: an unknown architecture or tensor type, a
missing tensor, a tokenizer this build cannot build are all described, then listed as problems.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import gguf

from gguflm import arch as archs
from gguflm import quants
from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError, printable, shown
from gguflm.gguf_file import GGUFFile


@dataclass
class Description:
    rows: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    problems: list[str] = field(default_factory=list)  # what this build cannot run, one sentence each


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def describe(gf: GGUFFile) -> Description:
    """Rows describing the model, its tensors and its tokenizer, and the problems found on the way."""
    d = Description()
    d.rows += [("file", f"{gf.path} ({human_bytes(gf.file_size)})"), ("architecture", printable(gf.architecture))]
    name = gf.get(gguf.Keys.General.NAME, None, str)
    if name:
        d.rows.append(("name", printable(name)))
    if gf.tensors:
        _model_rows(gf, d)
    types = Counter(t.tensor_type.name for t in gf.tensors.values())
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(types.items()))
    d.rows.append(("tensors", f"{len(gf.tensors)}: {by_type}" if gf.tensors else "none (vocabulary only)"))
    _tokenizer_rows(gf, d)
    has_template = bool(gf.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE, "", str))
    d.rows.append(("chat template", "present" if has_template else "none"))
    return d


def _model_rows(gf: GGUFFile, d: Description) -> None:
    """Hyper-parameters (structured when the architecture is known, raw keys otherwise), then the
    checks of tensor types, presence and shapes."""
    try:
        cfg = ModelConfig.from_gguf(gf)
    except GGUFLMError as e:
        d.problems.append(str(e))
        prefix = gf.architecture + "."
        raw = [f"{k[len(prefix):]} {v}" for k, v in gf.metadata.items() if k.startswith(prefix)]
        d.rows.append(("hparams", printable(", ".join(raw), 1000) or "none"))
        _type_problems(gf, d)
        return
    n_params = sum(int(t.n_elements) for t in gf.tensors.values())
    d.rows += [
        ("parameters", f"{n_params / 1e6:.2f} M"),
        ("layers", str(cfg.n_layers)),
        ("embedding", str(cfg.dim)),
        ("feed-forward", str(cfg.ffn_dim)),
        ("heads", f"{cfg.n_heads} (kv {cfg.n_kv_heads}, head size {cfg.head_dim})"),
        ("vocabulary", str(cfg.n_vocab)),
        ("context length", str(cfg.n_ctx_train)),
        ("rope", f"{cfg.rope_mode}, base {cfg.rope_base:g}, dims {cfg.rope_dim}, scale {cfg.rope_scale:g}"
         + (", rope_freqs" if archs.tensor_name(archs.T.ROPE_FREQS) in gf.tensors else "")),
        ("tied embeddings", "yes" if archs.tensor_name(archs.T.OUTPUT) not in gf.tensors else "no"),
    ]
    if not _type_problems(gf, d):
        from gguflm.weights import check_weights  # torch: only for files whose types it can hold

        try:
            check_weights(gf, cfg)
        except GGUFLMError as e:
            d.problems.append(str(e))


def _type_problems(gf: GGUFFile, d: Description) -> bool:
    """One problem per tensor type the quant registry does not hold; True if there was any."""
    missing: dict[str, list[str]] = {}
    for t in gf.tensors.values():
        if quants.lookup(t.tensor_type) is None:
            missing.setdefault(t.tensor_type.name, []).append(t.name)
    for name, tensors in missing.items():
        d.problems.append(f"{len(tensors)} tensor(s) have type {name} (e.g. {shown(tensors[0])}), which is not supported "
                          f"(supported: {', '.join(quants.supported())})")
    return bool(missing)


def _tokenizer_rows(gf: GGUFFile, d: Description) -> None:
    """The tokenizer as the metadata names it, and the end-of-generation set when it can be built."""
    tokens = gf.get(gguf.Keys.Tokenizer.LIST, [], list)
    kind = gf.get(gguf.Keys.Tokenizer.MODEL, "none", str)
    pre = gf.get(gguf.Keys.Tokenizer.PRE, None, str)
    d.rows.append(("tokenizer", printable(f"{kind}" + (f" (pre: {pre})" if pre else "")) + f", {len(tokens)} tokens"))
    if not tokens:
        return
    from gguflm.tokenizer import Tokenizer

    try:
        with warnings.catch_warnings():  # a guessed pre-tokenizer is shown in its row instead
            warnings.simplefilter("ignore", UserWarning)
            tok = Tokenizer.from_gguf(gf)
    except GGUFLMError as e:
        d.problems.append(str(e))
        return
    d.rows.append(("pre-tokenizer", printable(tok.pre_tokenizer_label)))
    pieces = ", ".join(f"{i} {shown(tok.token_text(i))}" for i in sorted(tok.eog_ids))
    d.rows.append(("end of generation", pieces or "none"))

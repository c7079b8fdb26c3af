"""Per-tensor type mixtures of synthetic benchmark files, shaped like llama-quantize's (a small table,
not its rules: `gguflm quantize` owns those). A mix name (Q4_K_M) or a plain type name (Q6_K, Q8_0)."""

from __future__ import annotations

from gguflm.errors import GGUFLMError

# mix -> (the type of most matrices, {tensor kind: type}); "more" is the type of attn_v and ffn_down in
# the layers llama.cpp gives more bits (the first and last eighth, every third between)
MIXES = {
    "Q4_K_M": ("Q4_K", {"output": "Q6_K", "more": "Q6_K"}),
    "Q6_K": ("Q6_K", {}),
    "Q4_0": ("Q4_0", {"output": "Q6_K"}),
    "Q8_0": ("Q8_0", {}),
}
# a row that is not a multiple of 256 weights cannot be a superblock format: llama.cpp's fallbacks
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_1", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}
SUPERBLOCK = tuple(FALLBACK)


def more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the layers whose attn_v and ffn_down a _M mix keeps at higher precision."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_type(mix: str, name: str, n_layers: int, cols: int) -> str:
    """The type of file tensor `name` (a row of `cols` weights) in `mix`; a plain type name is itself."""
    base, rules = MIXES.get(mix.upper(), (mix.upper(), {}))
    kind = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else name.split(".")[0]
    qtype = rules.get(kind, base)
    if kind in ("attn_v", "ffn_down") and "more" in rules and more_bits(int(name.split(".")[1]), n_layers):
        qtype = rules["more"]
    if cols % 256 and qtype in FALLBACK:
        qtype = FALLBACK[qtype]
    return qtype


def check(mix: str) -> str:
    """A mix or type name a synthetic file can be written in (upper case), or a GGUFLMError listing them."""
    from gguflm import quants
    from gguflm.synthetic import kblocks

    name = mix.upper()
    types = [f.name for f in quants.FORMATS.values()
             if kblocks.supports(f.ggml_type) or f.name in ("Q8_0", "F16", "F32")]
    if name not in MIXES and name not in types:
        known = ", ".join(dict.fromkeys(m.lower() for m in [*MIXES, *types]))
        raise GGUFLMError(f"unknown synthetic model type '{mix}' (known: {known})")
    return name

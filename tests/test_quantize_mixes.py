"""llama-quantize's per-tensor types for Q4_K_M, Q5_K_M and Q3_K_M on a Llama- and a Qwen2-shaped
tiny model, and the row-length fallbacks.

The expected tables below are written out from llama.cpp's rules (src/llama-quant.cpp,
llama_tensor_get_type_impl and tensor_type_fallback, in the llama.cpp that llama-cpp-python 0.3.36
vendors), not computed by gguflm's code: for 8 layers use_more_bits picks layers 0, 3, 6, 7
(i < n/8, i >= 7n/8, (i - n/8) % 3 == 2); Q4_K_M/Q5_K_M give those layers' attn_v and ffn_down
Q6_K; Q3_K_M gives attn_v of layers 0-1 Q5_K, the rest Q4_K, every ffn_down Q4_K (n/16 = 0
layers of Q5_K) and attn_output Q4_K; the head (and a tied token_embd) Q6_K; rows of 320 weights
fall back Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0. Checked once outside the suite against
llama-quantize itself: `scripts/compare_quantize_llama_cpp.py --llama-python PY` (PY with
llama-cpp-python 0.3.36) on these two models gave, for every type, the same tables and
byte-identical files (2026-12-02).
"""

from __future__ import annotations

import gguf
import pytest

from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.quantize.mixes import MixOptions, fallback, get_mix, tensor_qtype
from gguflm.quantize.rewrite import plan_tensors
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

QT = gguf.GGMLQuantizationType
N_LAYERS = 8
MORE = {0, 3, 6, 7}


def per_layer(hi: str, lo: str, layers=MORE) -> list[str]:
    return [hi if i in layers else lo for i in range(N_LAYERS)]


# mix -> per-layer types of the 2-D layer tensors, and the types of token_embd/output
LLAMA = {
    "Q4_K_M": dict(attn_q="Q4_K", attn_k="Q4_K", attn_v=per_layer("Q6_K", "Q4_K"), attn_output="Q4_K",
                   ffn_gate="Q4_K", ffn_up="Q4_K", ffn_down=per_layer("Q6_K", "Q4_K"), token_embd="Q4_K",
                   output="Q6_K"),
    "Q5_K_M": dict(attn_q="Q5_K", attn_k="Q5_K", attn_v=per_layer("Q6_K", "Q5_K"), attn_output="Q5_K",
                   ffn_gate="Q5_K", ffn_up="Q5_K", ffn_down=per_layer("Q6_K", "Q5_K"), token_embd="Q5_K",
                   output="Q6_K"),
    "Q3_K_M": dict(attn_q="Q3_K", attn_k="Q3_K", attn_v=per_layer("Q5_K", "Q4_K", {0, 1}), attn_output="Q4_K",
                   ffn_gate="Q3_K", ffn_up="Q3_K", ffn_down="Q4_K", token_embd="Q3_K", output="Q6_K"),
}
# Qwen2-shaped: tied head (token_embd takes the output's rules), 4 query heads per KV head, QKV
# biases, and an FFN width of 320, so ffn_down rows (320 long) take the fallbacks.
QWEN2 = {
    "Q4_K_M": dict(attn_q="Q4_K", attn_k="Q4_K", attn_v=per_layer("Q6_K", "Q4_K"), attn_output="Q4_K",
                   ffn_gate="Q4_K", ffn_up="Q4_K", ffn_down=per_layer("Q8_0", "Q5_0"), token_embd="Q6_K"),
    "Q5_K_M": dict(attn_q="Q5_K", attn_k="Q5_K", attn_v=per_layer("Q6_K", "Q5_K"), attn_output="Q5_K",
                   ffn_gate="Q5_K", ffn_up="Q5_K", ffn_down=per_layer("Q8_0", "Q5_1"), token_embd="Q6_K"),
    "Q3_K_M": dict(attn_q="Q3_K", attn_k="Q3_K", attn_v=per_layer("Q5_K", "Q4_K", {0, 1}), attn_output="Q4_K",
                   ffn_gate="Q3_K", ffn_up="Q3_K", ffn_down="Q5_0", token_embd="Q6_K"),
}
SPECS = {
    "llama": SyntheticSpec(arch="llama", n_vocab=256, dim=256, n_layers=N_LAYERS, ffn_dim=256, n_heads=4,
                           n_kv_heads=4, qtype="F16"),
    "qwen2": SyntheticSpec(arch="qwen2", n_vocab=256, dim=256, n_layers=N_LAYERS, ffn_dim=320, n_heads=4,
                           n_kv_heads=1, qtype="F16", tied=True),
}


def expected_table(arch: str, mix: str, names: list[str]) -> dict[str, str]:
    rules = (LLAMA if arch == "llama" else QWEN2)[mix]
    out = {}
    for name in names:
        parts = name.split(".")
        if name.endswith("_norm.weight") or name.endswith(".bias"):
            out[name] = "F32"
        elif parts[0] == "blk":
            rule = rules[parts[2]]
            out[name] = rule[int(parts[1])] if isinstance(rule, list) else rule
        else:
            out[name] = rules[parts[0]]
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixes")
    return {arch: open_gguf(write_synthetic_gguf(d / f"{arch}.gguf", spec)) for arch, spec in SPECS.items()}


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q5_K_M", "Q3_K_M"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tensor_type_table_is_llama_cpps(models, arch, mix):
    src = models[arch]
    table = {t.name: t.target.name for t in plan_tensors(src, get_mix(mix))}
    assert table == expected_table(arch, mix, list(src.tensors))


def test_pure_and_overrides(models):
    src = models["llama"]
    pure = {t.name: t.target.name for t in plan_tensors(src, get_mix("Q4_K_M"), MixOptions(pure=True))}
    assert {v for k, v in pure.items() if "norm" not in k} == {"Q4_K"}
    opts = MixOptions(output_type=QT.Q8_0, token_embedding_type=QT.F16)
    table = {t.name: t.target.name for t in plan_tensors(src, get_mix("Q4_K_M"), opts)}
    assert table["output.weight"] == "Q8_0" and table["token_embd.weight"] == "F16"
    kept = {t.name: t.target.name for t in plan_tensors(src, get_mix("Q4_K_M"), MixOptions(quantize_output=False))}
    assert kept["output.weight"] == "F16"  # --leave-output-tensor: the source's type


def test_float_mixes_convert_every_weight(models):
    table = {t.name: t.target.name for t in plan_tensors(models["qwen2"], get_mix("BF16"))}
    assert table["blk.0.ffn_down.weight"] == "BF16" and table["blk.0.attn_q.bias"] == "F32"


@pytest.mark.parametrize("qtype,ne0,want", [
    (QT.Q4_K, 320, QT.Q5_0), (QT.Q5_K, 320, QT.Q5_1), (QT.Q6_K, 576, QT.Q8_0), (QT.Q3_K, 96, QT.Q4_0),
    (QT.Q2_K, 160, QT.Q4_0), (QT.IQ4_XS, 288, QT.IQ4_NL), (QT.Q4_K, 100, QT.F16), (QT.Q8_0, 48, QT.F16),
    (QT.Q4_K, 512, QT.Q4_K), (QT.Q4_0, 64, QT.Q4_0),
])
def test_fallbacks(qtype, ne0, want):
    assert fallback(qtype, ne0) == want


def test_names_and_aliases():
    assert get_mix("q4_k").name == "Q4_K_M" and get_mix("Q5_K").name == "Q5_K_M"
    assert get_mix("iq4_xs").file_type == gguf.LlamaFileType.MOSTLY_IQ4_XS
    with pytest.raises(GGUFLMError, match="unknown quantization type 'Q7_K'; choose from Q4_0"):
        get_mix("Q7_K")
    assert tensor_qtype("q6_k") == QT.Q6_K
    with pytest.raises(GGUFLMError, match="unknown tensor type 'IQ2_XXS'; choose from F32"):
        tensor_qtype("IQ2_XXS")  # a real ggml type, but not one gguflm writes

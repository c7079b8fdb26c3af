"""HF checkpoint -> GGUF: layout, types, bit-exact Q8_0, permutation, tied heads, rope_freqs."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from gguflm.convert import convert_checkpoint
from gguflm.convert.hparams import permute_qk
from tiny_hf import ARCHS, load_hf_model, make_tiny_checkpoint


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of `permute_qk`, written independently: each head's (d/2, 2) pairs back to HF's (2, d/2) halves."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf")
    out = {a: make_tiny_checkpoint(root / a, a) for a in ARCHS}
    out["llama31"] = make_tiny_checkpoint(root / "llama31", "llama", rope_scaling={"rope_type": "llama3"})
    out["tied"] = make_tiny_checkpoint(root / "tied", "qwen2", tie_embeddings=True, dtype=torch.bfloat16)
    return out


def fields(r: gguf.GGUFReader) -> dict:
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def hf_weights(ckpt) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in load_hf_model(ckpt).state_dict().items()}


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_and_outtype_reads_back(ckpts, tmp_path, arch, outtype):
    path = convert_checkpoint(ckpts[arch], tmp_path / "m.gguf", outtype)
    r = gguf.GGUFReader(path)
    kv = fields(r)
    a = GGUF_ARCH[arch]
    assert kv["general.architecture"] == a
    expect = {"block_count": 2, "context_length": 256, "embedding_length": 64, "feed_forward_length": 128,
              "attention.head_count": 4, "attention.head_count_kv": 2, "attention.key_length": 16}
    for key, value in expect.items():
        assert kv[f"{a}.{key}"] == value, key
    assert kv[f"{a}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert kv[f"{a}.rope.freq_base"] == pytest.approx(10000.0)
    assert (f"{a}.vocab_size" in kv) == (a == "llama") and (f"{a}.rope.dimension_count" in kv) == (a == "llama")
    weight_type = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "auto": Q.F16}[outtype]
    tensors = {t.name: t for t in r.tensors}
    names = {"token_embd.weight", "output_norm.weight", "output.weight"}
    for i in range(2):
        kinds = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
        kinds += ["attn_q_norm", "attn_k_norm"] if arch == "qwen3" else []
        names |= {f"blk.{i}.{k}.weight" for k in kinds}
        names |= {f"blk.{i}.attn_{x}.bias" for x in "qkv"} if arch == "qwen2" else set()
    assert set(tensors) == names
    for name, t in tensors.items():
        one_d = len(t.shape) == 1
        assert t.tensor_type == (Q.F32 if one_d else weight_type), name
    assert list(tensors["blk.0.attn_k.weight"].shape) == [64, 32]  # ggml order: row length first
    assert list(tensors["token_embd.weight"].shape) == [64, 256]


def _expected(arch: str, hf: dict, name: str) -> np.ndarray:
    """The HF weight for a GGUF tensor, permuted as llama.cpp does for llama Q/K."""
    w = hf[name]
    if GGUF_ARCH[arch] == "llama" and ".q_proj." in name:
        w = permute_qk(w, 4)
    if GGUF_ARCH[arch] == "llama" and ".k_proj." in name:
        w = permute_qk(w, 2)
    return w.numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_q8_0_bytes_match_gguf_quants(ckpts, tmp_path, arch):
    r = gguf.GGUFReader(convert_checkpoint(ckpts[arch], tmp_path / "q.gguf", "q8_0"))
    hf = hf_weights(ckpts[arch])
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
             "blk.1.attn_q.weight": "model.layers.1.self_attn.q_proj.weight",
             "blk.1.attn_k.weight": "model.layers.1.self_attn.k_proj.weight",
             "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}
    tensors = {t.name: t for t in r.tensors}
    for gname, hname in pairs.items():
        want = gguf.quants.quantize(_expected(arch, hf, hname), Q.Q8_0)
        assert tensors[gname].tensor_type == Q.Q8_0
        assert np.asarray(tensors[gname].data).tobytes() == want.tobytes(), gname


def test_llama_qk_permutation_round_trips(ckpts, tmp_path):
    r = gguf.GGUFReader(convert_checkpoint(ckpts["llama"], tmp_path / "f.gguf", "f32"))
    hf = hf_weights(ckpts["llama"])
    tensors = {t.name: torch.from_numpy(np.array(t.data)) for t in r.tensors}
    for i in range(2):
        q, k = tensors[f"blk.{i}.attn_q.weight"], tensors[f"blk.{i}.attn_k.weight"]
        assert not torch.equal(q, hf[f"model.layers.{i}.self_attn.q_proj.weight"])  # really permuted
        assert torch.equal(unpermute_qk(q, 4), hf[f"model.layers.{i}.self_attn.q_proj.weight"])
        assert torch.equal(unpermute_qk(k, 2), hf[f"model.layers.{i}.self_attn.k_proj.weight"])
        assert torch.equal(tensors[f"blk.{i}.attn_v.weight"], hf[f"model.layers.{i}.self_attn.v_proj.weight"])


def test_qwen_is_not_permuted(ckpts, tmp_path):
    r = gguf.GGUFReader(convert_checkpoint(ckpts["qwen2"], tmp_path / "f.gguf", "f32"))
    hf = hf_weights(ckpts["qwen2"])
    tensors = {t.name: torch.from_numpy(np.array(t.data)) for t in r.tensors}
    assert torch.equal(tensors["blk.0.attn_q.weight"], hf["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(tensors["blk.0.attn_q.bias"], hf["model.layers.0.self_attn.q_proj.bias"])


def test_tied_embeddings_written_once(ckpts, tmp_path):
    r = gguf.GGUFReader(convert_checkpoint(ckpts["tied"], tmp_path / "t.gguf", "auto"))
    names = [t.name for t in r.tensors]
    assert "output.weight" not in names and names.count("token_embd.weight") == 1
    assert fields(r)["general.file_type"] == gguf.LlamaFileType.MOSTLY_BF16  # auto follows the bf16 checkpoint
    assert {t.tensor_type for t in r.tensors if len(t.shape) == 2} == {Q.BF16}


def test_llama31_rope_freqs_match_transformers(ckpts, tmp_path):
    r = gguf.GGUFReader(convert_checkpoint(ckpts["llama31"], tmp_path / "r.gguf", "q8_0"))
    (t,) = [t for t in r.tensors if t.name == "rope_freqs.weight"]
    assert t.tensor_type == Q.F32 and list(t.shape) == [8]
    model = load_hf_model(ckpts["llama31"])
    base = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    hf_factors = base / model.model.rotary_emb.inv_freq.float()
    torch.testing.assert_close(torch.from_numpy(np.array(t.data)), hf_factors, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(np.array(t.data), 4).tolist())) >= 3  # 1, factor and a smoothed value
    assert "llama.rope.scaling.type" not in fields(r)


def test_legacy_rope_keys_are_read(tmp_path):
    import json

    d = make_tiny_checkpoint(tmp_path / "legacy", "qwen2")
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rope_theta=1234.0, rope_scaling={"type": "linear", "factor": 2.0})
    (d / "config.json").write_text(json.dumps(cfg))
    kv = fields(gguf.GGUFReader(convert_checkpoint(d, tmp_path / "l.gguf", "f16")))
    assert kv["qwen2.rope.freq_base"] == pytest.approx(1234.0)
    assert kv["qwen2.rope.scaling.type"] == "linear" and kv["qwen2.rope.scaling.factor"] == pytest.approx(2.0)


def test_rows_not_multiple_of_32_fall_back_to_f16(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "odd", "qwen3", intermediate_size=80)
    r = gguf.GGUFReader(convert_checkpoint(d, tmp_path / "o.gguf", "q8_0"))
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.ffn_down.weight"] == Q.F16  # row length 80
    assert types["blk.0.ffn_up.weight"] == Q.Q8_0  # row length 64


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
@pytest.mark.parametrize("arch", [*ARCHS, "llama31", "tied"])
def test_gguflm_runs_the_file_like_transformers(ckpts, tmp_path, arch, outtype):
    from gguflm.convert.verify import verify_conversion

    path = convert_checkpoint(ckpts[arch], tmp_path / "m.gguf", outtype)
    report = verify_conversion(path, ckpts[arch], n_new=4)
    if outtype == "f32":
        assert report.max_abs_diff < 1e-3 and report.greedy_match, report.summary()
    else:
        assert report.max_abs_diff < 1.0, report.summary()


def test_legacy_llama3_rope_scaling_gives_the_same_file(ckpts, tmp_path):
    import json
    import shutil

    d = tmp_path / "llama31"  # same folder name as the fixture's, since general.name comes from it
    shutil.copytree(ckpts["llama31"], d)
    cfg = json.loads((d / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope  # the layout of Llama 3.1's own config.json
    (d / "config.json").write_text(json.dumps(cfg))
    a = convert_checkpoint(ckpts["llama31"], tmp_path / "a.gguf", "q8_0")
    b = convert_checkpoint(d, tmp_path / "b.gguf", "q8_0")
    assert a.read_bytes() == b.read_bytes()

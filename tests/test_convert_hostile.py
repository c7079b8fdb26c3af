"""Broken and hostile checkpoints: every one is refused with one clear GGUFLMError before anything is
written (config values, tensor shapes, tokenizer files, pickles), and a killed conversion leaves no part."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gguflm.convert import convert_checkpoint
from gguflm.errors import GGUFLMError
from tiny_hf import make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("hostile") / "model", "llama")


@pytest.fixture(scope="module")
def bpe_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("hostile-bpe") / "model", "qwen2", tokenizer="bpe-qwen2")


def _copy(src: Path, tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(src, d)
    return d


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))  # NaN and Infinity as JSON's extension, which json.loads reads


_DELETE = object()


def _refused(d: Path, tmp_path: Path, match: str, **kw) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(GGUFLMError, match=match) as e:
        convert_checkpoint(d, out, "f32", **kw)
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".out.gguf.*"))


CONFIG_CASES = {
    "head_dim string": ({"head_dim": "16"}, "head_dim"),
    "head_dim negative": ({"head_dim": -16}, "head_dim"),
    "head_dim odd": ({"head_dim": 15}, "even"),
    "rms_norm_eps string": ({"rms_norm_eps": "1e-5"}, "rms_norm_eps"),
    "rms_norm_eps negative": ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    "rms_norm_eps NaN": ({"rms_norm_eps": math.nan}, "rms_norm_eps"),
    "rope_theta string": ({"rope_theta": "10000"}, "rope_theta"),
    "rope_theta NaN": ({"rope_theta": math.nan}, "rope_theta"),
    "rope_theta inf": ({"rope_theta": math.inf}, "rope_theta"),
    "max_position_embeddings string": ({"max_position_embeddings": "256"}, "max_position_embeddings"),
    "max_position_embeddings negative": ({"max_position_embeddings": -1}, "max_position_embeddings"),
    "hidden_size 2^40": ({"hidden_size": 2**40}, "hidden_size"),
    "hidden_size true": ({"hidden_size": True}, "hidden_size"),
    "num_key_value_heads 0": ({"num_key_value_heads": 0}, "num_key_value_heads"),
    "kv heads not dividing heads": ({"num_key_value_heads": 3}, "multiple"),
    "heads not matching q rows": ({"num_attention_heads": 2, "num_key_value_heads": 1}, "q_proj.*shape"),
    # transformers 5 writes rope_parameters, older versions rope_theta + rope_scaling: both are read
    "rope_parameters theta NaN": ({"rope_parameters": {"rope_theta": math.nan, "rope_type": "default"}}, "rope_theta"),
    "rope_parameters a list": ({"rope_parameters": [["rope_theta", 1e4]]}, "rope_parameters"),
    "rope_scaling a string": ({"rope_scaling": "linear"}, "rope_scaling"),
    "rope_scaling a list": ({"rope_scaling": [1, 2]}, "rope_scaling"),
    "rope_scaling type a number": ({"rope_scaling": {"rope_type": 5, "factor": 2.0}}, "rope_type"),
    "rope_scaling factor a string": ({"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "factor"),
    "rope_scaling yarn without context": ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}},
                                          "original_max_position_embeddings"),
    "rope_scaling llama3 equal factors": ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                            "low_freq_factor": 4.0, "high_freq_factor": 4.0}},
                                          "low_freq_factor"),
    "rope_scaling unknown type": ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "not supported"),
    "architectures nested": ({"architectures": [["LlamaForCausalLM"]]}, "architectures"),
    "architectures a string": ({"architectures": "LlamaForCausalLM"}, "architectures"),
    "tie_word_embeddings no": ({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
    "vocab_size mismatch": ({"vocab_size": 300}, "vocab_size"),
    "eos_token_id unknown": ({"eos_token_id": 99999}, "eos_token_id"),
    "eos_token_id a string": ({"eos_token_id": "</s>"}, "eos_token_id"),
    "num_hidden_layers 10^5": ({"num_hidden_layers": 10**5}, "num_hidden_layers is 100000"),
    "num_hidden_layers too few": ({"num_hidden_layers": 1}, "layer 1"),
    "intermediate_size missing": ({"intermediate_size": _DELETE}, "intermediate_size"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_value_is_refused(ckpt, tmp_path, case):
    changes, match = CONFIG_CASES[case]
    d = _copy(ckpt, tmp_path)
    if "rope_scaling" in changes:  # the older style alone, as such a config has it
        changes = {**changes, "rope_parameters": _DELETE, "rope_theta": 10000.0}
    _edit_json(d / "config.json", **changes)
    started = time.monotonic()
    _refused(d, tmp_path, match)
    assert time.monotonic() - started < 60  # 10^5 layers is refused before any per-layer work


def _retensor(d: Path, edit) -> None:
    tensors = load_file(d / "model.safetensors")
    edit(tensors)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})


Q = "model.layers.0.self_attn.q_proj.weight"
TENSOR_CASES = {
    "zero-row embedding": (lambda t: t.update({"model.embed_tokens.weight": torch.zeros(0, 64)}),
                           "embed_tokens.*shape"),
    "q_proj wrong rows": (lambda t: t.update({Q: t[Q][:48].clone()}), "q_proj.*shape"),
    "scalar norm": (lambda t: t.update({"model.norm.weight": torch.tensor(1.0)}), r"model\.norm.*shape \(\)"),
    "1-D matrix": (lambda t: t.update({Q: t[Q].flatten().clone()}), "q_proj.*shape"),
    "3-D matrix": (lambda t: t.update({Q: t[Q].reshape(4, 16, 64).clone()}), "q_proj.*shape"),
    "a layer's tensor missing": (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "lacks"),
    "a tensor of another architecture": (lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(16)}),
                                         "no GGUF equivalent"),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_bad_tensor_shape_is_refused(ckpt, tmp_path, case):
    edit, match = TENSOR_CASES[case]
    d = _copy(ckpt, tmp_path)
    _retensor(d, edit)
    _refused(d, tmp_path, match)


def test_weight_map_of_integers_or_paths_is_refused(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    names = list(load_file(d / "model.safetensors"))
    (d / "model.safetensors").rename(d / "model-00001-of-00001.safetensors")
    for bad in (1, "../model/model-00001-of-00001.safetensors", None):
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: bad for n in names}}))
        _refused(d, tmp_path, "weight_map")


def test_pytorch_bin_needs_allow_pickle(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    _refused(d, tmp_path, "pickle.*safetensors.*--allow-pickle")
    assert convert_checkpoint(d, tmp_path / "ok.gguf", "f32", allow_pickle=True).is_file()


def test_a_file_gguflm_rejects_is_never_renamed_into_place(ckpt, tmp_path, monkeypatch):
    import gguflm.convert.validate as validate

    monkeypatch.setattr(validate, "check_plan", lambda plan: None)  # as if a shape slipped past the plan
    d = _copy(ckpt, tmp_path)
    _retensor(d, lambda t: t.update({"model.norm.weight": torch.ones(32)}))
    _refused(d, tmp_path, "fails gguflm's own check")


# ---------------------------------------------------------------------------- tokenizer files

def _edit_tokenizer_json(d: Path, edit) -> None:
    spec = json.loads((d / "tokenizer.json").read_text())
    edit(spec)
    (d / "tokenizer.json").write_text(json.dumps(spec))


TOKENIZER_CASES = {
    "vocab a list": (lambda s: s["model"].update(vocab=list(s["model"]["vocab"])), "model.vocab"),
    "vocab ids strings": (lambda s: s["model"].update(vocab={k: str(v) for k, v in s["model"]["vocab"].items()}),
                          "id of token"),
    "vocab id negative": (lambda s: s["model"]["vocab"].update({"Ġthe": -5}), "id of token"),
    "merges of numbers": (lambda s: s["model"].update(merges=[[1, 2]]), "merges"),
    "merges a string": (lambda s: s["model"].update(merges="a b"), "merges"),
    "added_tokens an object": (lambda s: s.update(added_tokens={"a": 1}), "added_tokens"),
    "added token without id": (lambda s: s["added_tokens"][0].pop("id"), "added token"),
    "added token content a number": (lambda s: s["added_tokens"][0].update(content=5), "added token"),
    "pre_tokenizer a list": (lambda s: s.update(pre_tokenizer=[1]), "pre_tokenizer"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES))
def test_bad_tokenizer_json_is_refused(bpe_ckpt, tmp_path, case):
    edit, match = TOKENIZER_CASES[case]
    d = _copy(bpe_ckpt, tmp_path)
    _edit_tokenizer_json(d, edit)
    _refused(d, tmp_path, match)


@pytest.mark.parametrize("changes, match", [
    ({"eos_token": "<|no-such-token|>"}, "eos_token"),
    ({"eos_token": 7}, "eos_token"),
    ({"add_prefix_space": "yes"}, "add_prefix_space"),
    ({"added_tokens_decoder": {"x": {"content": "a"}}}, "added_tokens_decoder"),
    ({"added_tokens_decoder": [1]}, "added_tokens_decoder"),
    ({"chat_template": 5}, "chat_template"),
])
def test_bad_tokenizer_config_is_refused(bpe_ckpt, tmp_path, changes, match):
    d = _copy(bpe_ckpt, tmp_path)
    _edit_json(d / "tokenizer_config.json", **changes)
    _refused(d, tmp_path, match)


def test_the_tiny_checkpoints_still_convert(ckpt, bpe_ckpt, tmp_path):
    from gguflm.model import load

    for src in (ckpt, bpe_ckpt):
        out = convert_checkpoint(src, tmp_path / f"{src.parent.name}.gguf", "f16")
        assert load(out, device="cpu").config.n_layers == 2


# ---------------------------------------------------------------------------- killed conversions

_SLOW_CONVERSION = """
import sys, time
import gguflm.convert.encode as encode
real = encode.row_chunks
def slow(t):
    print("writing", flush=True)
    time.sleep(60)
    yield from real(t)
encode.row_chunks = slow
from gguflm.convert import convert_checkpoint
convert_checkpoint(sys.argv[1], sys.argv[2], "f32")
"""


def test_sigterm_leaves_no_part_file(ckpt, tmp_path):
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERSION, str(ckpt), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"  # the part file exists from here on
        assert len(list(out.parent.iterdir())) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert list(out.parent.iterdir()) == []


def _dead_pid() -> int:
    pid = 2**22 - 1
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_the_next_conversion_removes_stale_parts(ckpt, tmp_path):
    out = tmp_path / "m.gguf"
    stale = tmp_path / f".m.gguf.{_dead_pid()}.part"  # a SIGKILLed conversion's leftover
    live = tmp_path / f".m.gguf.{os.getppid()}.part"  # a conversion still running
    other = tmp_path / ".other.gguf.1.part"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    convert_checkpoint(ckpt, out, "f32")
    assert out.is_file() and not stale.exists() and live.exists() and other.exists()


def test_cli_refuses_a_pickle_in_one_line_and_reads_it_with_allow_pickle(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    cmd = [sys.executable, "-m", "gguflm.cli.main", "convert", str(d), "-o", str(tmp_path / "m.gguf"),
           "--outtype", "f32"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "pickle" in refused.stderr and "--allow-pickle" in refused.stderr and not (tmp_path / "m.gguf").exists()
    allowed = subprocess.run(cmd + ["--allow-pickle"], capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "m.gguf").is_file()


@pytest.mark.parametrize("name, text, match", [
    ("generation_config.json", json.dumps({"top_k": "forty"}), "top_k"),
    ("generation_config.json", json.dumps({"temperature": [1]}), "temp"),
    ("README.md", "---\nlicense: [unclosed\n---\n", "model card"),
    ("README.md", b"---\nlicense: \xff\n---\n", "model card"),
])
def test_bad_model_card_or_generation_settings_are_refused(ckpt, tmp_path, name, text, match):
    d = _copy(ckpt, tmp_path)
    (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    _refused(d, tmp_path, match)


def test_a_self_referencing_model_card_and_a_corrupt_tokenizer_model(tmp_path):
    spm = make_tiny_checkpoint(tmp_path / "spm", "llama", tokenizer="spm")
    d = _copy(spm, tmp_path)
    (d / "README.md").write_text("---\nlanguage: &a [*a]\n---\n")  # YAML's anchors make a list that holds itself
    _refused(d, tmp_path, "language")
    (d / "README.md").unlink()
    data = bytearray((d / "tokenizer.model").read_bytes())
    data[20:40] = b"\x80" * 20
    (d / "tokenizer.model").write_bytes(bytes(data))
    _refused(d, tmp_path, "tokenizer.model")

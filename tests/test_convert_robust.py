"""Converter robustness: sharded and .bin checkpoints, atomic output, clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
import torch

from gguflm.convert import convert_checkpoint
from gguflm.errors import GGUFLMError
from tiny_hf import load_hf_model, make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("single") / "model", "llama")


def tensors_of(path) -> dict[str, bytes]:
    return {t.name: np.asarray(t.data).tobytes() for t in gguf.GGUFReader(path).tensors}


def test_sharded_converts_identically(ckpt, tmp_path):
    sharded = tmp_path / "sharded" / "model"  # same folder name: general.name comes from it
    load_hf_model(ckpt).save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    a = convert_checkpoint(ckpt, tmp_path / "a.gguf", "q8_0")
    b = convert_checkpoint(sharded, tmp_path / "b.gguf", "q8_0")
    assert a.read_bytes() == b.read_bytes()


def test_pytorch_bin_converts_like_safetensors(ckpt, tmp_path):
    d = tmp_path / "bin" / "model"
    shutil.copytree(ckpt, d)
    (d / "model.safetensors").unlink()
    torch.save(load_hf_model(ckpt).state_dict(), d / "pytorch_model.bin")
    assert tensors_of(convert_checkpoint(d, tmp_path / "b.gguf", "f16", allow_pickle=True)) == \
        tensors_of(convert_checkpoint(ckpt, tmp_path / "s.gguf", "f16"))


def test_pytorch_bin_with_objects_is_refused(ckpt, tmp_path):
    d = tmp_path / "evil"
    shutil.copytree(ckpt, d)
    (d / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(2), "cfg": object.__new__(_NotATensor)}, d / "pytorch_model.bin")
    with pytest.raises(GGUFLMError, match="safely"):
        convert_checkpoint(d, tmp_path / "e.gguf", allow_pickle=True)


class _NotATensor:
    pass


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_failure_mid_write_leaves_no_file(ckpt, tmp_path, monkeypatch, exc):
    import gguflm.convert.encode as encode

    calls = {"n": 0}
    real = encode.row_chunks

    def flaky_reader(t):
        calls["n"] += 1
        for i, chunk in enumerate(real(t)):
            yield chunk
            if calls["n"] == 5 and i == 0:  # part-way through the fifth tensor's data
                raise exc("interrupted")

    monkeypatch.setattr(encode, "row_chunks", flaky_reader)
    monkeypatch.setattr(encode, "CHUNK_BYTES", 1024)  # several chunks per tensor
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    with pytest.raises(exc):
        convert_checkpoint(ckpt, out, "q8_0")
    assert calls["n"] == 5
    assert list(out.parent.iterdir()) == []


def test_failure_keeps_existing_output(ckpt, tmp_path, monkeypatch):
    import gguflm.convert.encode as encode

    out = tmp_path / "m.gguf"
    out.write_bytes(b"previous")
    monkeypatch.setattr(encode, "row_chunks", lambda t: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        convert_checkpoint(ckpt, out)
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_unsupported_architecture_lists_supported(ckpt, tmp_path):
    d = tmp_path / "gpt2"
    shutil.copytree(ckpt, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GGUFLMError, match="GPT2LMHeadModel.*LlamaForCausalLM.*Qwen3ForCausalLM"):
        convert_checkpoint(d, tmp_path / "x.gguf")


def test_truncated_safetensors_is_a_clear_error(ckpt, tmp_path):
    d = tmp_path / "trunc"
    shutil.copytree(ckpt, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GGUFLMError, match="truncated or corrupt"):
        convert_checkpoint(d, tmp_path / "x.gguf")
    (d / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(GGUFLMError, match="not a valid safetensors"):
        convert_checkpoint(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_missing_shard_and_missing_files(ckpt, tmp_path):
    d = tmp_path / "shards"
    load_hf_model(ckpt).save_pretrained(d, max_shard_size="40KB")
    next(iter(sorted(d.glob("model-*.safetensors")))).unlink()
    with pytest.raises(GGUFLMError, match="missing"):
        convert_checkpoint(d, tmp_path / "x.gguf")
    with pytest.raises(GGUFLMError, match="config.json"):
        convert_checkpoint(tmp_path, tmp_path / "x.gguf")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(ckpt / "config.json", empty)
    with pytest.raises(GGUFLMError, match="model.safetensors"):
        convert_checkpoint(empty, tmp_path / "x.gguf")


def test_dry_run_writes_nothing(ckpt, tmp_path):
    out = convert_checkpoint(ckpt, tmp_path / "d.gguf", "q8_0", dry_run=True)
    assert out == tmp_path / "d.gguf" and not out.exists()


def test_config_missing_a_hyperparameter(ckpt, tmp_path):
    d = tmp_path / "nohidden"
    shutil.copytree(ckpt, d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GGUFLMError, match="hidden_size"):
        convert_checkpoint(d, tmp_path / "x.gguf")

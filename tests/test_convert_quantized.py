"""`gguflm convert --outtype <llama-quantize type>`: straight from the checkpoint, the same tensors,
types and bytes as converting to f32 and running `gguflm quantize` on the result."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from gguflm.convert import convert_checkpoint
from gguflm.convert.verify import verify_conversion
from gguflm.quantize.mixes import get_mix
from gguflm.quantize.rewrite import quantize_file
from tiny_hf import make_tiny_checkpoint

WIDE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, head_dim=64)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("convq")
    return {"llama": make_tiny_checkpoint(d / "llama", "llama", **WIDE),
            "qwen2": make_tiny_checkpoint(d / "qwen2", "qwen2", tie_embeddings=True, **WIDE),
            "bf16": make_tiny_checkpoint(d / "bf16", "llama", dtype=torch.bfloat16, **WIDE)}


def tensors(path) -> dict[str, tuple[str, list[int], bytes]]:
    return {t.name: (t.tensor_type.name, list(t.shape), np.asarray(t.data).tobytes())
            for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("arch,mix", [("llama", "q4_k_m"), ("qwen2", "q5_k_m"), ("llama", "q3_k_m"),
                                      ("qwen2", "iq4_xs"), ("bf16", "q6_k"), ("llama", "q4_0")])
def test_convert_equals_convert_then_quantize(ckpts, tmp_path, arch, mix):
    direct = convert_checkpoint(ckpts[arch], tmp_path / "direct.gguf", mix)
    f32 = convert_checkpoint(ckpts[arch], tmp_path / "f32.gguf", "f32")
    two_step = quantize_file(f32, tmp_path / "two.gguf", mix).path
    assert tensors(direct) == tensors(two_step)
    r = gguf.GGUFReader(direct)
    assert r.fields["general.file_type"].contents() == int(gguf.LlamaFileType[f"MOSTLY_{mix.upper()}"])
    assert get_mix(mix).default in {t.tensor_type for t in r.tensors}  # the mix's own type is there


def test_verify_reports_kl_top1_and_tensor_rmse(ckpts, tmp_path):
    path = convert_checkpoint(ckpts["llama"], tmp_path / "q.gguf", "q4_k_m")
    report = verify_conversion(path, ckpts["llama"], n_new=4, outtype="q4_k_m")
    assert report.kl_mean is not None and 0 <= report.kl_mean < 0.5 and 0.5 <= report.top1 <= 1
    assert set(report.tensor_rmse) == {t.name for t in gguf.GGUFReader(path).tensors if len(t.shape) == 2}
    assert all(0.01 < v < 0.2 for v in report.tensor_rmse.values())  # 4 to 6 bits per weight
    assert "KL mean" in report.summary() and "per-tensor RMSE" in report.summary()

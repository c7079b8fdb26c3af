"""One record per architecture and one format per quant type: a new one registered in one place is
picked up by the config, the loader, the backends, the converter, synthetic files and `gguflm info`."""

from __future__ import annotations

import json

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import arch as archs
from gguflm import quants
from gguflm.arch import QK_NORM, Architecture
from gguflm.convert import convert_checkpoint
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.info import describe
from gguflm.quants import QT, QuantFormat
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from tiny_hf import make_tiny_checkpoint

# Qwen3 under another name: neox rope and per-head q/k norms, gguf-py's Qwen3 tensor names.
TOY = Architecture(name="toyarch", gguf_arch=gguf.MODEL_ARCH.QWEN3, hf_classes=("ToyForCausalLM",),
                   rope_mode="neox", permute_qk=False, extras=frozenset({QK_NORM}), typical=frozenset({QK_NORM}))


class Int8Rows(QuantFormat):
    """A made-up format over ggml's I8 type: each byte is one weight, held as an fp32 matrix."""

    ggml_type = QT.I8
    kernel = "dense"  # what the Triton GEMV reads: the fp32 matrix pack() makes
    torch_dtype = None  # not a float type, so never a norm or a bias

    def pack(self, raw):
        return (raw.view(torch.int8).to(torch.float32),)

    def dequantize(self, parts, dtype=torch.float32):
        return parts[0].to(dtype)


@pytest.fixture
def toy_arch():
    archs.register(TOY)
    yield TOY
    archs.unregister(TOY.name)


@pytest.fixture
def int8_rows():
    fmt = quants.register(Int8Rows())
    yield fmt
    quants.unregister(QT.I8)


def test_a_new_architecture_record_is_used_everywhere(toy_arch, tmp_path):
    spec = dict(qtype="F32", n_vocab=96, dim=64, n_layers=2, seed=3)
    toy = write_synthetic_gguf(tmp_path / "toy.gguf", SyntheticSpec(arch="toyarch", **spec))
    qwen3 = write_synthetic_gguf(tmp_path / "qwen3.gguf", SyntheticSpec(arch="qwen3", **spec))
    # the synthetic writer: the record's typical extras
    assert "blk.1.attn_k_norm.weight" in open_gguf(toy).tensors
    # config, loader, reference backend: the same math as Qwen3
    model = gguflm.load(toy, device="cpu")
    assert model.config.arch == "toyarch" and model.config.rope_mode == "neox"
    assert model.weights.layers[0].q_norm is not None
    ids = [1, 5, 9, 40, 2]
    assert torch.equal(model.logits(ids), gguflm.load(qwen3, device="cpu").logits(ids))
    # info
    d = describe(open_gguf(toy))
    assert not d.problems and ("rope", "neox, base 10000, dims 16, scale 1") in d.rows
    # the converter: HF class name -> the record, its name into general.architecture
    hf_dir = make_tiny_checkpoint(tmp_path / "hf", "qwen3")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "architectures": ["ToyForCausalLM"]}))
    out = convert_checkpoint(hf_dir, tmp_path / "conv.gguf", "f32")
    assert open_gguf(out).architecture == "toyarch"
    assert gguflm.load(out, device="cpu").weights.layers[1].k_norm is not None
    archs.unregister("toyarch")
    with pytest.raises(GGUFLMError, match="architecture 'toyarch' is not supported"):
        gguflm.load(toy, device="cpu")


def test_a_new_quant_format_is_used_everywhere(int8_rows, tmp_path):
    rng = np.random.default_rng(0)
    # blk.0's Q, K and V as I8 (scaled small: weights of +-1 would blow the activations up)
    qkv = {f"blk.0.attn_{x}.weight": rng.integers(-1, 2, size=(rows, 64), dtype=np.int8)
           for x, rows in (("q", 64), ("k", 32), ("v", 32))}
    as_i8 = write_synthetic_gguf(tmp_path / "i8.gguf", SyntheticSpec(
        replace_tensors={n: (w, None) for n, w in qkv.items()}))
    as_f32 = write_synthetic_gguf(tmp_path / "f32.gguf", SyntheticSpec(
        replace_tensors={n: (w.astype(np.float32), None) for n, w in qkv.items()}))
    assert open_gguf(as_i8).tensors["blk.0.attn_q.weight"].tensor_type == QT.I8
    assert "I8" in quants.supported() and not describe(open_gguf(as_i8)).problems  # info
    ref = gguflm.load(as_i8, device="cpu")  # the loader: the three fused into one weight of the format
    assert ref.weights.layers[0].wqkv.fmt is int8_rows and ref.weights.layers[0].wqkv.shape == (128, 64)
    ids = [1, 7, 3, 250]
    expect = gguflm.load(as_f32, device="cpu").logits(ids)
    assert torch.equal(ref.logits(ids), expect)  # the reference backend
    tri = gguflm.load(as_i8, device=ku.DEVICE, backend="triton")  # the kernels: prefill GEMM, decode GEMV
    torch.testing.assert_close(tri.logits(ids).cpu(), expect, atol=5e-3, rtol=0)
    cache = tri.backend.new_cache(8)
    tri.backend.prefill(ids[:-1], cache)
    torch.testing.assert_close(tri.backend.decode(ids[-1], cache).cpu(), expect[-1], atol=5e-3, rtol=0)

    quants.unregister(QT.I8)
    with pytest.raises(GGUFLMError, match="'blk.0.attn_q.weight' has type I8, which is not supported"):
        gguflm.load(as_i8, device="cpu")


def test_a_format_packed_on_its_own_reaches_the_gemv(int8_rows):
    from gguflm.kernels import gemv

    q = torch.randint(-20, 21, (37, 96), dtype=torch.int8)
    w = quants.pack(q.view(torch.uint8).to(ku.DEVICE), QT.I8)
    assert w.fmt is int8_rows and w.shape == (37, 96)
    x = ku.rand(96, seed=1)
    torch.testing.assert_close(gemv(x, w), x @ q.float().to(ku.DEVICE).T, rtol=1e-4, atol=1e-3)

"""Every 32-block format end to end: a tiny random llama whose matrices (embedding and head included)
are Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL is loaded and run, and compared with the same model written
with F32 weights that gguf-py dequantized from the first file (an independent dequantizer)."""

import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm.gguf_file import open_gguf
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

FORMATS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"]
TINY = dict(dim=64, n_layers=2, n_vocab=96, ffn_dim=160, n_heads=4, n_kv_heads=2)  # rows: multiples of 32
PROMPT = [1, 17, 42, 9, 7]


def _pair(tmp_path, qtype, **extra):
    """(the quantized file, the same model with every tensor as gguf-py dequantizes it, in F32)."""
    spec = SyntheticSpec(qtype=qtype, seed=FORMATS.index(qtype), **TINY, **extra)
    quantized = write_synthetic_gguf(tmp_path / f"{qtype}.gguf", spec)
    gf = open_gguf(quantized)
    replace = {}
    for name, t in gf.tensors.items():
        data = np.asarray(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)
        replace[name] = (np.ascontiguousarray(data, dtype=np.float32), None)
    plain = write_synthetic_gguf(tmp_path / f"{qtype}-f32.gguf",
                                 SyntheticSpec(qtype="F32", replace_tensors=replace, **TINY, **extra))
    return quantized, plain


@pytest.mark.parametrize("qtype", FORMATS)
def test_reference_backend_equals_dequantized_model(tmp_path, qtype):
    quantized, plain = _pair(tmp_path, qtype)
    q = gguflm.load(quantized, device="cpu", backend="reference")
    f = gguflm.load(plain, device="cpu", backend="reference")
    assert {w.fmt.name for _, w in q.weights.tensors() if hasattr(w, "fmt")} == {qtype}  # every matrix
    assert q.weights.tok_embd.fmt.name == qtype
    lq, lf = q.logits(PROMPT), f.logits(PROMPT)
    assert float((lq - lf).abs().max() / lf.abs().max()) < 1e-4
    assert q.generate(PROMPT, 8, stop_ids=[]) == f.generate(PROMPT, 8, stop_ids=[])


@pytest.mark.parametrize("qtype", ["Q4_1", "Q5_0", "IQ4_NL"])
def test_triton_backend_follows_reference(tmp_path, qtype):
    """The Triton backend (interpreter on the CPU): prefill GEMMs and decode GEMVs of the format, greedy equal."""
    import kernel_utils as ku

    quantized, _ = _pair(tmp_path, qtype)
    ref = gguflm.load(quantized, device="cpu", backend="reference")
    tri = gguflm.load(quantized, device=ku.DEVICE, backend="triton")
    rc, tc = ref.backend.new_cache(16), tri.backend.new_cache(16)
    expect = ref.backend.prefill(PROMPT, rc)
    got = tri.backend.prefill(PROMPT, tc)
    torch.testing.assert_close(got.cpu(), expect, atol=5e-3, rtol=0)  # fp16 GEMM inputs and cache
    token = int(expect[-1].argmax())
    for _ in range(3):
        r, t = ref.backend.decode(token, rc), tri.backend.decode(token, tc)
        torch.testing.assert_close(t.cpu(), r, atol=5e-3, rtol=0)
        assert int(t.argmax()) == int(r.argmax())
        token = int(r.argmax())

"""The superblock formats (Q2_K..Q6_K, IQ4_XS): planes bit-exact against gguf.quants, random valid
blocks, the synthetic mixes, and tiny models of each format on the CPU reference path."""

import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import quants
from gguflm.backends.reference import ReferenceBackend
from gguflm.quants import PackedWeight, StackedWeight, dense
from gguflm.synthetic import SyntheticSpec, kblocks, write_synthetic_gguf
from gguflm.synthetic.mixes import tensor_type

QT = gguf.GGMLQuantizationType
KQUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")
BITS = {"Q2_K": 2.625, "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "IQ4_XS": 4.25}


def _raw(name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    return kblocks.random_blocks(np.random.default_rng(seed), rows, cols, QT[name])


@pytest.mark.parametrize("name", KQUANTS)
@pytest.mark.parametrize("rows,cols", [(1, 256), (7, 768), (33, 512)])
def test_dequantize_bit_exact_against_gguf(name, rows, cols):
    raw = _raw(name, rows, cols, seed=rows * cols)
    w = quants.pack(torch.from_numpy(raw), QT[name])
    assert w.shape == (rows, cols) and w.fmt.kernel == name.lower()
    assert w.nbytes == raw.nbytes == rows * cols * BITS[name] / 8  # the planes hold the file's bytes, no more
    expected = gguf.quants.dequantize(raw, QT[name])
    assert np.array_equal(w.dequantize().numpy(), expected)
    assert np.array_equal(w.rows(slice(1, None)).dequantize().numpy(), expected[1:])
    assert np.array_equal(w.rows(torch.tensor([0, rows - 1])).dequantize().numpy(), expected[[0, rows - 1]])
    assert np.array_equal(w.fmt.blocks(w.parts).numpy(), raw)  # the planes put back are the file's blocks


@pytest.mark.parametrize("name", KQUANTS)
def test_every_bit_pattern_of_the_quants_and_scales(name):
    """Blocks of all-ones and all-zeros quant and scale bytes (extreme scales, mins, high bits) still match."""
    raw = _raw(name, 4, 256, seed=5)
    at = kblocks._SCALES[QT[name]][0]
    keep = raw[:, at : at + 4].copy()
    raw[0], raw[1] = 0xFF, 0x00
    raw[2, : raw.shape[1] // 2] = 0xAA
    raw[:, at : at + 4] = keep  # finite d / dmin
    w = quants.pack(torch.from_numpy(raw), QT[name])
    assert np.array_equal(w.dequantize().numpy(), gguf.quants.dequantize(raw, QT[name]))


def test_q6_k_planes_are_where_the_layout_says():
    raw = _raw("Q6_K", 2, 512, seed=3)
    ql, qh, scales, d = quants.pack(torch.from_numpy(raw), QT.Q6_K).parts
    assert (ql.dtype, qh.dtype, scales.dtype, d.dtype) == (torch.uint8, torch.uint8, torch.int8, torch.float16)
    assert ql.shape == (2, 256) and qh.shape == (2, 128) and scales.shape == (2, 32) and d.shape == (2, 2)
    block = raw[1, 210:420]  # the second superblock of row 1
    assert np.array_equal(ql[1, 128:].numpy(), block[:128]) and np.array_equal(qh[1, 64:].numpy(), block[128:192])
    assert float(d[1, 1]) == float(block[208:210].view(np.float16)[0])


@pytest.mark.parametrize("name", KQUANTS)
def test_random_blocks_keep_activations_order_one(name):
    w = gguf.quants.dequantize(_raw(name, 64, 1024, seed=9), QT[name])
    assert np.isfinite(w).all()
    assert 0.5 < w.std() * np.sqrt(1024) < 2 and abs(w.mean()) * np.sqrt(1024) < 0.3


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def test_q4_k_m_mix_is_llama_quantizes_shape():
    n = 32
    v = [tensor_type("q4_k_m", f"blk.{i}.attn_v.weight", n, 4096) for i in range(n)]
    assert v.count("Q6_K") == sum(more_bits(i, n) for i in range(n)) and v[0] == v[-1] == "Q6_K"
    assert tensor_type("Q4_K_M", "blk.6.ffn_down.weight", n, 14336) == "Q6_K"  # (6 - 32 / 8) % 3 == 2
    assert tensor_type("Q4_K_M", "blk.5.ffn_down.weight", n, 14336) == "Q4_K"
    assert tensor_type("Q4_K_M", "blk.5.attn_q.weight", n, 4096) == "Q4_K"
    assert tensor_type("Q4_K_M", "output.weight", n, 4096) == "Q6_K"
    assert tensor_type("Q4_K_M", "blk.5.attn_q.weight", n, 4000) == "Q5_0"  # rows not of 256: the fallback
    assert tensor_type("Q8_0", "output.weight", n, 4096) == "Q8_0"


# ---------------------------------------------------------------------------- tiny models, CPU reference


TINY = dict(dim=256, n_layers=2, n_vocab=96, ffn_dim=512, n_heads=4, n_kv_heads=2)
PROMPT = [1, 17, 42, 9, 77, 5]


def _expanded(model) -> ReferenceBackend:
    """The same model with every matrix dequantized to F32 (the forward over the file's dequantized weights)."""
    w = model.weights

    def expand(x):
        return PackedWeight(dense.F32, (x.dequantize(),), x.k) if isinstance(x, (PackedWeight, StackedWeight)) else x

    layers = [type(layer)(**{k: expand(v) for k, v in vars(layer).items()}) for layer in w.layers]
    tok = expand(w.tok_embd)
    return ReferenceBackend(model.config, type(w)(tok, w.output_norm, tok if w.tied else expand(w.output),
                                                  w.rope_freqs, layers))


def _check_against_expanded(model, steps=4):
    rb, dense_b = model.backend, _expanded(model)
    rc, dc = rb.new_cache(16), dense_b.new_cache(16)
    got, expect = rb.prefill(PROMPT, rc), dense_b.prefill(PROMPT, dc)
    scale = expect.abs().max()
    assert (got - expect).abs().max() <= 1e-4 * scale
    token = int(expect[-1].argmax())
    for _ in range(steps):
        a, b = rb.decode(token, rc), dense_b.decode(token, dc)
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() and int(a.argmax()) == int(b.argmax())
        token = int(b.argmax())


@pytest.mark.parametrize("name", KQUANTS)
def test_tiny_model_of_each_format_matches_its_dequantized_forward(tmp_path, name):
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(qtype=name, seed=KQUANTS.index(name), **TINY))
    model = gguflm.load(path, device="cpu", backend="reference")
    assert model.weights.layers[0].wqkv.fmt.name == name and model.weights.tok_embd.fmt.name == name
    _check_against_expanded(model)


def test_q4_k_m_file_mixes_formats_inside_the_fused_qkv(tmp_path):
    spec = SyntheticSpec(qtype="Q4_K_M", seed=7, **dict(TINY, n_layers=3))
    model = gguflm.load(write_synthetic_gguf(tmp_path / "m.gguf", spec), device="cpu", backend="reference")
    w = model.weights
    qkv = w.layers[2].wqkv  # the last layer gets more bits: V in Q6_K, Q and K fused in one Q4_K piece
    assert isinstance(qkv, StackedWeight) and [p.fmt.name for p in qkv.pieces] == ["Q4_K", "Q6_K"]
    assert [p.shape[0] for p in qkv.pieces] == [256 + 128, 128] and qkv.shape == (512, 256)
    assert qkv.nbytes == 384 * 256 * 4.5 / 8 + 128 * 256 * 6.5625 / 8  # still packed
    assert isinstance(w.layers[0].wqkv, PackedWeight) and w.layers[0].wqkv.fmt.name == "Q4_K"
    assert w.layers[2].w_down.fmt.name == "Q6_K" and w.layers[0].w_down.fmt.name == "Q4_K"
    assert w.output.fmt.name == "Q6_K" and w.tok_embd.fmt.name == "Q4_K"
    _check_against_expanded(model)


def test_llama_3_8b_q4_k_m_mix_has_the_real_files_tensor_counts_and_bytes():
    """llama-quantize's Llama-3-8B Q4_K_M: 193 Q4_K and 33 Q6_K matrices, 4.91 GB of them."""
    from gguflm import arch as archs
    from gguflm.synthetic.shapes import shape_spec

    spec = shape_spec("llama-3-8b", "Q4_K_M")
    counts, total = {}, 0
    for name, shape in archs.file_tensors(spec.config, spec.layer_extras, spec.tied, spec.rope_freqs):
        if len(shape) == 2:
            qtype = tensor_type(spec.qtype, name, spec.n_layers, shape[1], spec.arch, spec.n_heads // spec.n_kv_heads)
            block, size = gguf.GGML_QUANT_SIZES[QT[qtype]]
            counts[qtype] = counts.get(qtype, 0) + 1
            total += shape[0] * shape[1] // block * size
    assert counts == {"Q4_K": 193, "Q6_K": 33}
    assert round(total / 1e9, 2) == 4.91


def test_bench_type_is_checked(tmp_path):
    from gguflm.errors import GGUFLMError
    from gguflm.synthetic import mixes

    assert mixes.check("q4_k_m") == "Q4_K_M" and mixes.check("iq4_xs") == "IQ4_XS"
    with pytest.raises(GGUFLMError, match="unknown synthetic model type 'q9'"):
        mixes.check("q9")


def test_check_dequant_script_counts_a_mixed_file(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    spec = SyntheticSpec(qtype="Q4_K_M", seed=8, **dict(TINY, n_layers=3))
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_dequant.py"
    proc = subprocess.run([sys.executable, str(script), str(path), "--rows", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # 3 layers of 7 matrices, the embedding and the head: Q6_K for the head and layer 2's attn_v and ffn_down
    assert proc.stdout.splitlines() == ["Q4_K: 20 tensors bit-exact, 0 differ", "Q6_K: 3 tensors bit-exact, 0 differ"]

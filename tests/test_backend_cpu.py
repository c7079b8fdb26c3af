"""The CPU backend against the reference (the oracle): its kernels per format, whole models of every format
it runs, batched rows, threads, and SmolLM2's exact-math references.

Tolerance, per format. The float formats keep activations fp32: the two
backends differ only in the order fp32 products are summed: a product within REL_PRODUCT of the float64
one (relative to its largest value), logits within REL_LOGITS of the reference's. Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 (INT8_FORMATS) and Q4_K, Q5_K, Q6_K (KQUANTS; Q2_K, Q3_K, IQ4 in test_cpu_kernels_more) round x to 8 bits per 32-value block as
llama.cpp does (q8_0 / q8_1), in the matvec and the GEMM path alike: a product is within REL_PRODUCT
of the float64 product of the weights with that rounded x, and the rounding itself is held to
llama.cpp's rule for a quantized product (test-backend-ops: NMSE <= 5e-4), for a product and for a
whole model's logits; SmolLM2's logits within ABS_LOGITS_INT8 of exact math. A greedy id may then
differ from the reference's only at a near-tie the measured logit error explains.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import cpu, ops, quants
from int8_rule import (NMSE, REL_PRODUCT, assert_greedy_ids_equal_the_reference, int8_oracle, logits_close, nmse,
                       rounded_x)
from gguflm.errors import GGUFLMError
from gguflm.registry import Registry
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.threads import check_threads, physical_cores

ABS_LOGITS_INT8 = 2.0  # SmolLM2's decode-path logits against exact math: measured 1.62 (llama.cpp's own: 1.26)
MEAN_LOGITS_INT8 = 0.3  # ... and their mean error: measured 0.19 (llama.cpp's: 0.32)
FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
INT8_FORMATS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
KQUANTS = ["Q4_K", "Q5_K", "Q6_K"]  # these round x too
QT = gguf.GGMLQuantizationType


def packed(qtype: str, n: int, k: int, seed: int = 0) -> quants.PackedWeight:
    """A random (n, k) weight in `qtype`'s device layout, made from its file bytes as the loader does."""
    w = np.random.default_rng(seed).standard_normal((n, k), dtype=np.float32)
    if qtype == "F32":
        raw = w.view(np.uint8)
    elif qtype == "F16":
        raw = w.astype(np.float16).view(np.uint8)
    elif qtype == "BF16":
        raw = (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    elif qtype in KQUANTS:
        from gguflm.quantize.blocks import quantize_rows  # ggml's quantizer, byte for byte

        raw = quantize_rows(w, QT[qtype])
    else:
        raw = gguf.quants.quantize(w, QT[qtype]).view(np.uint8)
    return quants.pack(torch.from_numpy(np.ascontiguousarray(raw).reshape(n, -1)), QT[qtype])


# ---------------------------------------------------------------------------- the kernels


@pytest.mark.parametrize("qtype", FORMATS)
@pytest.mark.parametrize("n,k", [(5, 32), (37, 96), (123, 160), (7, 320)])
@pytest.mark.parametrize("rows", [1, 3, 9])  # 9 >= GEMM_ROWS: the GEMM path
def test_product_equals_the_dequantized_one(qtype, n, k, rows):
    w = packed(qtype, n, k, seed=n + k)
    assert cpu.kernel_for(w) is not None
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
    bias = torch.randn(n)
    exact = x.double() @ w.dequantize().double().T
    got = cpu.linear(x, w, bias, n_threads=2)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    int8 = qtype in INT8_FORMATS  # both paths: the GEMM path multiplies the same rounded x
    want = (int8_oracle(x, w) if int8 else exact).float() + bias
    assert (got - want).abs().max() <= REL_PRODUCT * want.abs().max()
    if int8:
        assert 0 < nmse(got - bias, exact) <= NMSE  # rounded, and within llama.cpp's rule


def test_activations_are_rounded_as_gguf_py_rounds_q8_0():
    """quantize_blocks gives the bytes of gguf-py's Q8_0 (the codes, the fp16 d) for every kind of block:
    zeros, halves, tiny and huge values."""
    from gguflm.cpu.int8 import quantize_blocks

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 40, 32)) * 10.0 ** rng.integers(-6, 5, (3, 40, 1))).astype(np.float32)
    x[0, 0] = 0
    x[0, 1] = np.arange(32) - 15.5  # halves at d = 16.5 / 127
    x[1, 2, :] = 127.0
    x[1, 2, 3] = -0.5
    xq, xd, xs = quantize_blocks(x)
    blocks = gguf.quants.quantize(x.reshape(3, -1), QT.Q8_0).reshape(3, 40, 34)
    assert np.array_equal(xq, blocks[..., 2:].view(np.int8))
    assert np.array_equal(xd, blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32))
    amax = np.abs(x).max(-1)
    with np.errstate(over="ignore"):  # s of the largest blocks is past fp16's range: inf, as in ggml
        s = (xq.astype(np.int32).sum(-1).astype(np.float32) * (amax / np.float32(127))).astype(np.float16)
    assert np.array_equal(xs, s.astype(np.float32))


@pytest.mark.parametrize("qtype", FORMATS)
def test_rows_are_computed_as_if_alone(qtype):
    w = packed(qtype, 37, 96)
    x = torch.randn(11, 96, generator=torch.Generator().manual_seed(1))
    together = cpu.linear_rows(x, w, n_threads=2)
    for b in range(x.shape[0]):
        assert torch.equal(together[b], cpu.linear(x[b : b + 1], w, n_threads=1)[0])


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1", "F16"])
def test_small_matrices_on_one_thread_and_large_on_many_give_the_same_rows(qtype, monkeypatch):
    w = packed(qtype, 37, 96)
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(cpu, "PARALLEL_BYTES", 1 << 30)
    alone = cpu.linear(x, w, n_threads=2)  # under PARALLEL_BYTES: one thread
    monkeypatch.setattr(cpu, "PARALLEL_BYTES", 0)
    assert torch.equal(cpu.linear(x, w, n_threads=2), alone)


def test_gemm_path_matches_the_reference_expansion():
    """The GEMM path expands rows exactly as the format's dequantizer does, then multiplies with torch
    (x rounded to 8 bits first where the matvec rounds it)."""
    for qtype in ("Q8_0", "Q4_0", "F16"):
        w = packed(qtype, 300, 64)
        x = torch.randn(cpu.GEMM_ROWS + 3, 64)
        xr = rounded_x(x)[0].float() if qtype in INT8_FORMATS else x
        assert torch.equal(cpu.linear(x, w), xr @ w.dequantize().T)


@pytest.mark.parametrize("qtype", INT8_FORMATS + KQUANTS + ["Q2_K", "Q3_K"])
def test_prefill_and_decode_compute_one_product(qtype):
    """The GEMM path and the matvec of a format that rounds x give one product, up to summation order."""
    w = kpacked(qtype, 37, 512) if qtype.endswith("_K") else packed(qtype, 37, 96)
    x = torch.randn(cpu.GEMM_ROWS, w.shape[1], generator=torch.Generator().manual_seed(4))
    rows = torch.cat([cpu.linear(x[b : b + 1], w) for b in range(x.shape[0])])
    together = cpu.linear(x, w)
    assert (together - rows).abs().max() <= REL_PRODUCT * rows.abs().max()


@pytest.mark.parametrize("qtype,module,name", [("Q4_0", "nibbles", "nibble_matvec"), ("Q5_1", "nibbles", "nibble_matvec"),
                                               ("Q4_K", "q4_k", "k4_matvec"), ("Q5_K", "q4_k", "k4_matvec"),
                                               ("Q6_K", "q6_k", "q6_k_matvec"), ("Q3_K", "q3_k", "q3_k_matvec"),
                                               ("Q2_K", "q2_k", "q2_k_matvec"), ("IQ4_NL", "iq4", "iq4_nl_matvec"),
                                               ("IQ4_XS", "iq4", "iq4_xs_matvec")])
def test_integer_dots_without_avx2_give_the_same_products(qtype, module, name, monkeypatch):
    """Where numba compiles for a CPU without AVX2 (Arm, older x86) the dots of unsigned codes are plain
    vector IR instead of `vpmaddubsw`, and IQ4's level lookup selects instead of `vpshufb`: the same
    exact integer sums in the same lanes, so the same products bit for bit. The format's kernel is
    compiled afresh (not from the disk cache) to show it."""
    import importlib

    import numba

    from gguflm.cpu import int8

    if qtype == "IQ4_NL":
        from gguflm.synthetic import RANDOM_BLOCKS

        raw = RANDOM_BLOCKS["IQ4_NL"](np.random.default_rng(5), 37, 96).reshape(37, -1)
        w = quants.pack(torch.from_numpy(np.ascontiguousarray(raw)), QT.IQ4_NL)
    else:
        w = kpacked(qtype, 37, 512) if qtype.endswith(("_K", "_XS")) else packed(qtype, 37, 96)
    x = torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(5))
    want = cpu.linear(x, w)
    mod = importlib.import_module(f"gguflm.cpu.{module}")
    monkeypatch.setattr(int8, "_avx2", lambda: False)
    fresh = numba.njit(parallel=True, fastmath={"contract"}, boundscheck=False, error_model="numpy")(getattr(mod, name).py_func)
    monkeypatch.setattr(mod, name, fresh)
    assert torch.equal(cpu.linear(x, w), want)
    llvm = fresh.inspect_llvm(fresh.signatures[0])
    assert "pmadd" not in llvm and "pshuf" not in llvm


def test_formats_without_a_kernel_take_the_reference_path(monkeypatch):
    w = packed("Q8_0", 8, 64)
    monkeypatch.setattr(cpu, "KERNELS", Registry(key=lambda k: k.name))  # as for a format with no CPU kernel
    assert cpu.kernel_for(w) is None
    x = torch.randn(2, 64)
    assert torch.equal(cpu.linear(x, w), ops.linear(x, w))
    assert torch.equal(cpu.linear_rows(x, w), ops.linear_rows(x, w))


# ---------------------------------------------------------------------------- whole models


@pytest.fixture(scope="module", params=FORMATS)
def pair(request, tmp_path_factory):
    spec = SyntheticSpec(qtype=request.param, n_vocab=320, dim=64, n_heads=2, n_kv_heads=1, ffn_dim=96, seed=3)
    path = write_synthetic_gguf(tmp_path_factory.mktemp("cpu") / "m.gguf", spec)
    return gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)


def test_cpu_is_the_default_backend_on_the_cpu(pair):
    assert type(pair[1].backend).__name__ == "CpuBackend" and pair[1].backend.threads == 2


def rounds_activations(model) -> bool:
    """Whether any matrix of `model` is in a format whose matvec rounds x to 8 bits."""
    layers = model.weights.layers
    mats = [model.weights.output] + [m for layer in layers for m in (layer.wqkv, layer.wo, layer.w_gate_up, layer.w_down)]
    return any(cpu.prepared(p) is not None and cpu.prepared(p)[0].rounds_x for m in mats for p in quants_pieces(m))


def assert_model_equals_the_reference(ref, fast):
    int8 = rounds_activations(fast)
    for n in (3, 20):  # matvec and GEMM paths
        ids = [(7 * i + 1) % ref.config.n_vocab for i in range(n)]
        assert logits_close(fast.logits(ids), ref.logits(ids), int8)
    assert_greedy_ids_equal_the_reference(ref, fast, 12, int8)


def test_logits_and_greedy_ids_equal_the_reference(pair):
    assert_model_equals_the_reference(*pair)


def test_batched_decode_rows_equal_lone_decode(pair):
    _, fast = pair
    prompts = [[1, 2, 3], [1, 50, 60, 70, 80], [1, 99]]
    engine = fast.new_engine(ctx=32, slots=3)
    last = [int(engine.start(i, p).argmax()) for i, p in enumerate(prompts)]
    batch = engine.step([0, 1, 2], last)
    for i, p in enumerate(prompts):
        cache = fast.backend.new_cache(32)
        fast.backend.prefill(p, cache)
        assert torch.equal(batch[i], fast.backend.decode(last[i], cache))



def kpacked(qtype: str, n: int, k: int, seed: int = 0) -> quants.PackedWeight:
    """Random valid superblocks of `qtype` (every bit pattern of quant bits and scales), packed."""
    from gguflm.synthetic import kblocks

    raw = kblocks.random_blocks(np.random.default_rng(seed), n, k, QT[qtype])
    return quants.pack(torch.from_numpy(np.ascontiguousarray(raw)), QT[qtype])


@pytest.mark.parametrize("qtype", KQUANTS)
@pytest.mark.parametrize("n,k", [(5, 256), (37, 512)])
@pytest.mark.parametrize("rows", [1, 3, 9])  # 9 >= GEMM_ROWS: the GEMM path
def test_k_quant_product_equals_the_dequantized_one(qtype, n, k, rows):
    w = kpacked(qtype, n, k, seed=n + rows)
    assert cpu.kernel_for(w) is not None
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
    want = int8_oracle(x, w).float()  # x rounded per 32 values, as for the legacy formats
    assert (cpu.linear(x, w, n_threads=2) - want).abs().max() <= REL_PRODUCT * want.abs().max()
    real = packed(qtype, n, k, seed=n + rows)  # llama.cpp's rule is for weights its quantizer made
    assert 0 < nmse(cpu.linear(x, real, n_threads=2), x.double() @ real.dequantize().double().T) <= NMSE
    together = cpu.linear_rows(x, w, n_threads=2)
    assert all(torch.equal(together[b], cpu.linear(x[b : b + 1], w)[0]) for b in range(rows))


@pytest.mark.parametrize("qtype", FORMATS[3:] + KQUANTS)
def test_expand_is_the_dequantizer_bit_for_bit(qtype):
    """The GEMM path's rows are the reference dequantizer's, bit for bit (ggml's order of roundings)."""
    w = kpacked(qtype, 37, 512, seed=7) if qtype in KQUANTS else packed(qtype, 37, 96, seed=7)
    kern, planes, _ = cpu.prepared(w)
    expanded = torch.empty(w.shape)
    kern.expand(planes, expanded)
    assert torch.equal(expanded, w.dequantize())


def test_planes_are_made_once_per_weight():
    w = packed("Q5_0", 37, 96)
    x = torch.randn(1, 96)
    first = cpu.linear(x, w)
    kern, planes, _ = cpu.prepared(w)
    assert cpu.prepared(w)[1] is planes and torch.equal(cpu.linear(x, w), first)
    assert "cpu" not in w.rows(slice(0, 5)).cache  # a row selection starts afresh


def test_q4_k_m_model_equals_the_reference(tmp_path):
    """256-wide rows: Q4_K matrices and the Q6_K ones (output, more-bits layers) all on kernels."""
    spec = SyntheticSpec(qtype="Q4_K_M", n_vocab=320, dim=256, n_heads=4, n_kv_heads=2, ffn_dim=512, n_layers=3, seed=5)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    assert fast.weights.layers[1].w_down.fmt.name == "Q4_K" and fast.weights.output.fmt.name == "Q6_K"
    matrices = [fast.weights.output] + [m for layer in fast.weights.layers for m in (layer.wqkv, layer.wo, layer.w_gate_up, layer.w_down)]
    assert all(cpu.kernel_for(p) is not None for m in matrices for p in quants_pieces(m))
    assert_model_equals_the_reference(ref, fast)


def test_mixed_format_fused_weights_run_piece_by_piece(tmp_path):
    """A Q4_K_M file with 64-wide rows: Q/K fall back to Q5_0, the more-bits layers' V to Q8_0, so the fused
    QKV of the last layer is a StackedWeight of two formats that both have CPU kernels."""
    spec = SyntheticSpec(qtype="Q4_K_M", n_vocab=320, dim=64, n_heads=2, n_kv_heads=1, ffn_dim=96, n_layers=3, seed=4)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    qkv = fast.weights.layers[2].wqkv
    assert isinstance(qkv, quants.StackedWeight) and [p.fmt.name for p in qkv.pieces] == ["Q5_0", "Q8_0"]
    assert all(cpu.kernel_for(p) is not None for p in qkv.pieces)
    assert_model_equals_the_reference(ref, fast)
    x = torch.randn(3, 64)
    assert torch.equal(cpu.linear_rows(x, qkv)[1], cpu.linear_rows(x[1:2], qkv)[0])


def quants_pieces(w):
    return w.pieces if isinstance(w, quants.StackedWeight) else (w,)


def test_q5_k_model_equals_the_reference(tmp_path):
    spec = SyntheticSpec(qtype="Q5_K_M", n_vocab=320, dim=256, n_heads=4, n_kv_heads=2, ffn_dim=512, n_layers=2, seed=6)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    assert {p.fmt.name for layer in fast.weights.layers for p in quants_pieces(layer.w_gate_up)} == {"Q5_K"}
    assert_model_equals_the_reference(ref, fast)


# ---------------------------------------------------------------------------- threads


def test_threads_default_and_checks():
    assert 1 <= physical_cores() <= (torch.get_num_threads() * 4 + 64)
    assert check_threads(None) == physical_cores() and check_threads(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(GGUFLMError, match="threads"):
            check_threads(bad)


def test_load_refuses_bad_threads_before_reading(tmp_path):
    with pytest.raises(GGUFLMError, match="threads"):
        gguflm.load(tmp_path / "absent.gguf", threads=0)


def test_cpu_backend_is_refused_off_the_cpu_and_without_numba(monkeypatch):
    from gguflm import backends

    assert backends.resolve_backend(None, torch.device("cpu")) == "cpu"
    with pytest.raises(GGUFLMError, match="runs on the CPU"):
        backends.resolve_backend("cpu", torch.device("cuda"))
    monkeypatch.setattr(backends, "has_numba", lambda: False)
    assert backends.resolve_backend(None, torch.device("cpu")) == "reference"  # the default falls back
    with pytest.raises(GGUFLMError, match="needs the numba package"):
        backends.resolve_backend("cpu", torch.device("cpu"))


# ---------------------------------------------------------------------------- SmolLM2 (real Q4_1 file)


@pytest.fixture(scope="module")
def smollm2(testdata):
    path = testdata / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ref = json.loads(path.with_name(path.name.removesuffix(".gguf") + ".ref.json").read_text())
    return gguflm.load(path, device="cpu"), ref


@pytest.mark.parametrize("path", ["prefill", "decode"])
def test_smollm2_logits_within_llama_cpp_rounding_of_exact_math(smollm2, path):
    """Activations rounded to 8 bits (a Q4_1 file): exact math's top-5 logits at every position of the
    teacher-forced sequence within ABS_LOGITS_INT8, and on average within MEAN_LOGITS_INT8, whether the
    sequence is one prefill (the GEMM path) or token by token (the matvec)."""
    model, ref = smollm2
    tf = ref["teacher_forced"]
    if path == "prefill":
        logits = model.logits(tf["sequence"])
    else:
        cache = model.backend.new_cache(len(tf["sequence"]) + 1)
        logits = torch.stack([model.backend.decode(token, cache) for token in tf["sequence"]])
    errs = [abs(logits[pos, tid].item() - value) for pos, top in enumerate(tf["top5"]) for tid, value in top]
    assert max(errs) <= ABS_LOGITS_INT8 and sum(errs) / len(errs) <= MEAN_LOGITS_INT8


def test_smollm2_greedy_reproduces_exact_math_ids(smollm2):
    """Equal to exact math's greedy ids; a departure only where exact math's top-2 margin is below what
    the decode path's rounding explains (2 MEAN_LOGITS_INT8: two logits moved by their mean error), and
    then the rest of that case is not compared."""
    model, ref = smollm2
    for case in ref["cases"]:
        got = model.generate(case["prompt_ids"], ref["n_predict"], stop_ids=ref["eog_ids"])
        want = case["exact_ids"]
        for i, (a, b) in enumerate(zip(got, want)):
            if a != b:
                assert case["exact_margins"][i] < 2 * MEAN_LOGITS_INT8, f"{case['id']}: step {i} flipped"
                break
        else:
            assert got[: len(want)] == want[: len(got)]


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """A read-only install with no writable cache directory: numba finds no cache locator, and the
    kernels are compiled in the process instead of failing at import."""
    import numba.core.caching

    from gguflm.cpu.jit import kernel

    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(lambda a: a.sum())

    def total(a):
        s = 0.0
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s

    assert kernel(total)(np.arange(5.0)) == 10.0

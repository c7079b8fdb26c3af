"""The CPU backend against the reference (the oracle): its kernels per format, whole models of every format
it runs, batched rows, threads, and SmolLM2's exact-math references.

Tolerance: activations stay fp32 (nothing is rounded to 8 bits as llama.cpp does), so the two paths
differ only in the order fp32 products are summed: a product within REL_PRODUCT of the float64 one
(relative to its largest value), logits within REL_LOGITS of the reference's, SmolLM2's logits
within ABS_LOGITS of exact math.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import cpu, ops, quants
from gguflm.errors import GGUFLMError
from gguflm.registry import Registry
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.threads import check_threads, physical_cores

REL_PRODUCT = 2e-6
REL_LOGITS = 1e-4
ABS_LOGITS = 1e-3  # SmolLM2: measured 9e-5 at most over the teacher-forced sequence
FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
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
    else:
        raw = gguf.quants.quantize(w, QT[qtype]).view(np.uint8)
    return quants.pack(torch.from_numpy(np.ascontiguousarray(raw).reshape(n, -1)), QT[qtype])


# ---------------------------------------------------------------------------- the kernels


@pytest.mark.parametrize("qtype", FORMATS)
@pytest.mark.parametrize("n,k", [(5, 32), (37, 96), (123, 160)])
@pytest.mark.parametrize("rows", [1, 3, 9])  # 9 >= GEMM_ROWS: the GEMM path
def test_product_equals_the_dequantized_one(qtype, n, k, rows):
    w = packed(qtype, n, k, seed=n + k)
    assert cpu.kernel_for(w) is not None
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
    bias = torch.randn(n)
    want = (x.double() @ w.dequantize().double().T).float() + bias
    got = cpu.linear(x, w, bias, n_threads=2)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    assert (got - want).abs().max() <= REL_PRODUCT * want.abs().max()


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
    """The GEMM path expands rows exactly as the format's dequantizer does, then multiplies with torch."""
    for qtype in ("Q8_0", "Q4_0", "F16"):
        w = packed(qtype, 300, 64)
        x = torch.randn(cpu.GEMM_ROWS + 3, 64)
        assert torch.equal(cpu.linear(x, w), x @ w.dequantize().T)


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


@pytest.mark.parametrize("n", [3, 20])  # matvec and GEMM paths
def test_logits_equal_the_reference(pair, n):
    ref, fast = pair
    ids = [(7 * i + 1) % 320 for i in range(n)]
    want, got = ref.logits(ids), fast.logits(ids)
    assert (got - want).abs().max() <= REL_LOGITS * want.abs().max()


def test_greedy_ids_equal_the_reference(pair):
    ref, fast = pair
    assert fast.generate([1, 5, 9], 12, stop_ids=()) == ref.generate([1, 5, 9], 12, stop_ids=())


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


KQUANTS = ["Q4_K", "Q5_K", "Q6_K"]


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
    want = (x.double() @ w.dequantize().double().T).float()
    assert (cpu.linear(x, w, n_threads=2) - want).abs().max() <= REL_PRODUCT * want.abs().max()
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
    for n in (3, 20):
        ids = [(7 * i + 1) % 320 for i in range(n)]
        want, got = ref.logits(ids), fast.logits(ids)
        assert (got - want).abs().max() <= REL_LOGITS * want.abs().max()
    assert fast.generate([1, 5, 9], 8, stop_ids=()) == ref.generate([1, 5, 9], 8, stop_ids=())


def test_mixed_format_fused_weights_run_piece_by_piece(tmp_path):
    """A Q4_K_M file with 64-wide rows: Q/K fall back to Q5_0, the more-bits layers' V to Q8_0, so the fused
    QKV of the last layer is a StackedWeight of two formats that both have CPU kernels."""
    spec = SyntheticSpec(qtype="Q4_K_M", n_vocab=320, dim=64, n_heads=2, n_kv_heads=1, ffn_dim=96, n_layers=3, seed=4)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    qkv = fast.weights.layers[2].wqkv
    assert isinstance(qkv, quants.StackedWeight) and [p.fmt.name for p in qkv.pieces] == ["Q5_0", "Q8_0"]
    assert all(cpu.kernel_for(p) is not None for p in qkv.pieces)
    for n in (3, 20):  # matvec and GEMM paths
        ids = [(7 * i + 1) % 320 for i in range(n)]
        want, got = ref.logits(ids), fast.logits(ids)
        assert (got - want).abs().max() <= REL_LOGITS * want.abs().max()
    assert fast.generate([1, 5, 9], 8, stop_ids=()) == ref.generate([1, 5, 9], 8, stop_ids=())
    x = torch.randn(3, 64)
    assert torch.equal(cpu.linear_rows(x, qkv)[1], cpu.linear_rows(x[1:2], qkv)[0])


def quants_pieces(w):
    return w.pieces if isinstance(w, quants.StackedWeight) else (w,)


def test_q5_k_model_equals_the_reference(tmp_path):
    spec = SyntheticSpec(qtype="Q5_K_M", n_vocab=320, dim=256, n_heads=4, n_kv_heads=2, ffn_dim=512, n_layers=2, seed=6)
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref, fast = gguflm.load(path, device="cpu", backend="reference"), gguflm.load(path, device="cpu", threads=2)
    assert {p.fmt.name for layer in fast.weights.layers for p in quants_pieces(layer.w_gate_up)} == {"Q5_K"}
    for n in (3, 20):
        ids = [(7 * i + 1) % 320 for i in range(n)]
        want, got = ref.logits(ids), fast.logits(ids)
        assert (got - want).abs().max() <= REL_LOGITS * want.abs().max()
    assert fast.generate([1, 5, 9], 8, stop_ids=()) == ref.generate([1, 5, 9], 8, stop_ids=())


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


def test_smollm2_logits_within_tolerance_of_exact_math(smollm2):
    model, ref = smollm2
    tf = ref["teacher_forced"]
    logits = model.logits(tf["sequence"])
    err = max(abs(logits[pos, tid].item() - value) for pos, top in enumerate(tf["top5"]) for tid, value in top)
    assert err <= ABS_LOGITS


def test_smollm2_greedy_reproduces_exact_math_ids(smollm2):
    """Equal to exact math's greedy ids; a departure only where exact math's top-2 margin is below what
    the tolerance allows (2 ABS_LOGITS), and then the rest of that case is not compared."""
    model, ref = smollm2
    for case in ref["cases"]:
        got = model.generate(case["prompt_ids"], ref["n_predict"], stop_ids=ref["eog_ids"])
        want = case["exact_ids"]
        for i, (a, b) in enumerate(zip(got, want)):
            if a != b:
                assert case["exact_margins"][i] < 2 * ABS_LOGITS, f"{case['id']}: step {i} flipped"
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

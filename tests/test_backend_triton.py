"""The Triton backend against the torch reference on tiny random models (interpreter on the CPU)."""

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import pytest
import torch

import gguflm
from gguflm.errors import GGUFLMError
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from reference_loop import greedy_ids

TINY = dict(qtype="Q8_0", dim=64, n_layers=2, n_vocab=128, ffn_dim=128)
VARIANTS = {
    "llama": SyntheticSpec(**TINY),
    "qwen3_qk_norm": SyntheticSpec(arch="qwen3", seed=1, **TINY),
    "qwen2_bias": SyntheticSpec(arch="qwen2", seed=2, **TINY),
    "llama_rope_freqs_tied": SyntheticSpec(rope_freqs=True, tied=True, seed=3, **TINY),
}
PROMPT = [1, 17, 42, 99, 7]
STEPS = 6
ATOL = 5e-3  # fp16 GEMM inputs in prefill and an fp16 cache, against fp32 everywhere


def _models(tmp_path, spec):
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    ref = gguflm.load(path, device="cpu", backend="reference")
    tri = gguflm.load(path, device=ku.DEVICE, backend="triton")
    return ref, tri


@pytest.mark.parametrize("name", list(VARIANTS))
def test_greedy_tokens_and_logits_match_reference(tmp_path, name):
    ref, tri = _models(tmp_path, VARIANTS[name])
    rb, tb = ref.backend, tri.backend
    rc, tc = rb.new_cache(32), tb.new_cache(32)
    assert tc.k.data.dtype == torch.float16
    expect = rb.prefill(PROMPT, rc)
    tb.prefill(PROMPT[:3], tc)  # two chunks: the second attends to the first through the cache
    got = tb.prefill(PROMPT[3:], tc)
    assert tc.length == rc.length == len(PROMPT)
    torch.testing.assert_close(got.cpu(), expect[3:], atol=ATOL, rtol=0)
    token = int(expect[-1].argmax())
    for step in range(STEPS):
        r = rb.decode(token, rc)
        if step % 2:  # the graph-safe entry point, position as a device tensor
            pos = torch.tensor([tc.length], device=ku.DEVICE)
            t = tb.decode_step(torch.tensor([token], device=ku.DEVICE), pos, tc).clone()
            tc.length += 1
        else:
            t = tb.decode(token, tc)
        torch.testing.assert_close(t.cpu(), r, atol=ATOL, rtol=0)
        assert int(t.argmax()) == int(r.argmax()), f"step {step}"
        token = int(r.argmax())
    n = rc.length
    torch.testing.assert_close(tc.k.data[:, :, :n].float().cpu(), rc.k.data[:, :, :n], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(tc.v.data[:, :, :n].float().cpu(), rc.v.data[:, :, :n], atol=2e-3, rtol=2e-3)


def test_full_context_is_a_clear_error(tmp_path):
    _, tri = _models(tmp_path, VARIANTS["llama"])
    cache = tri.backend.new_cache(4)
    with pytest.raises(GGUFLMError, match="context is full"):
        tri.backend.prefill([1, 2, 3, 4, 5], cache)
    assert cache.length == 0


def test_backend_choice(tmp_path, monkeypatch):
    path = write_synthetic_gguf(tmp_path / "m.gguf", VARIANTS["llama"])
    assert type(gguflm.load(path, device="cpu").backend).__name__ == "CpuBackend"  # numba is a dependency
    assert type(gguflm.load(path, device="cpu", backend="reference").backend).__name__ == "ReferenceBackend"
    with pytest.raises(GGUFLMError, match="unknown backend"):
        gguflm.load(path, device="cpu", backend="tensorrt")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not torch.cuda.is_available():
        with pytest.raises(GGUFLMError, match="needs a CUDA GPU"):
            gguflm.load(path, device="cpu", backend="triton")
    else:
        assert type(gguflm.load(path, device="cuda").backend).__name__ == "TritonBackend"


def test_engine_runs_on_the_triton_backend(tmp_path):
    """The engine's eager path (graphs need CUDA) over Triton kernels gives the reference's greedy tokens."""
    from gguflm.sampling import SamplingParams

    ref, tri = _models(tmp_path, VARIANTS["qwen2_bias"])
    engine = tri.new_engine(ctx=32, graphs=torch.cuda.is_available())
    got = list(engine.generate_ids(PROMPT, 5, SamplingParams.greedy_params(), stop_ids=()))
    assert got == greedy_ids(ref.backend, PROMPT, 5)
    assert engine.cache.length == len(engine.tokens) == len(PROMPT) + 4


def test_stories260k_greedy_prefix_matches_llama_cpp(stories260k):
    """A real model with 8-wide heads (decode attention pads them to tl.dot's 16 lanes)."""
    expected = [int(x) for x in (stories260k.parent / "stories260K.greedy200.ids").read_text().split()]
    model = gguflm.load(stories260k, device=ku.DEVICE, backend="triton")
    assert model.config.head_dim == 8
    assert model.generate([1], 6) == expected[:6]


def test_prefill_gemm_survives_activations_past_fp16_range(tmp_path):
    """A SwiGLU row beyond 65504 is scaled by a power of two for the fp16 GEMM, not turned into inf."""
    _, tri = _models(tmp_path, VARIANTS["llama"])
    w = tri.weights.layers[0].w_down  # (dim, ffn_dim) Q8_0
    x = torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(0)).to(ku.DEVICE)
    x[1] *= 1e6  # far past fp16's 65504
    expect = x.double() @ w.dequantize().double().T
    got = tri.backend._linear(x, w, wide=True)
    assert torch.isfinite(got).all()
    rel = (got.double() - expect).abs().amax(dim=1) / expect.abs().amax(dim=1)  # per row: fp16 inputs
    assert (rel < 2e-3).all(), rel
    assert torch.equal(got[0], tri.backend._linear(x[:1], w)[0])  # rows in range: bit-identical to no guard

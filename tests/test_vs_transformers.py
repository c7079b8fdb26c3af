"""The oracle: tiny random HF models converted to GGUF must reproduce transformers' logits and tokens."""

from __future__ import annotations

import pytest
import torch

import gguflm
from gguflm.backends.reference import ReferenceBackend
from gguflm.convert import convert_checkpoint
from gguflm.quants import PackedWeight, dense
from tiny_hf import load_hf_model, make_tiny_checkpoint

PROMPT_LEN, STEPS = 16, 16
# F16/BF16 weights round each weight (2^-11 and 2^-8 relative): logits move by a small fraction of their spread.
TOLERANCE = {"f16": 5e-3, "bf16": 4e-2, "q8_0": 1e-1}  # times the std of transformers' logits

VARIANTS = {
    "llama-gqa": ("llama", {}),
    "llama-mha": ("llama", {"gqa": False}),
    "llama-tied": ("llama", {"tie_embeddings": True}),
    "llama31-rope-scaling": ("llama", {"rope_scaling": {"rope_type": "llama3"}}),
    "mistral": ("mistral", {}),
    "qwen2-bias": ("qwen2", {}),
    "qwen2-tied": ("qwen2", {"tie_embeddings": True}),
    "qwen3-qk-norm": ("qwen3", {}),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def reference(request, tmp_path_factory):
    """(checkpoint dir, prompt, transformers' greedy continuation, its logits over prompt + continuation)."""
    arch, options = VARIANTS[request.param]
    hf_dir = make_tiny_checkpoint(tmp_path_factory.mktemp(request.param), arch, **options)
    hf = load_hf_model(hf_dir)
    prompt = torch.randint(0, hf.config.vocab_size, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        seq = hf.generate(prompt, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
        logits = hf(seq).logits[0]
    return hf_dir, prompt[0].tolist(), seq[0, PROMPT_LEN:].tolist(), logits


def convert(hf_dir, outtype, tmp_path):
    return gguflm.load(convert_checkpoint(hf_dir, tmp_path / f"model-{outtype}.gguf", outtype), device="cpu")


def incremental_logits(model, tokens: list[int]) -> torch.Tensor:
    """Prefill the prompt, then decode the rest one token at a time through the KV cache."""
    cache = model.backend.new_cache(len(tokens))
    rows = [model.backend.prefill(tokens[:PROMPT_LEN], cache)]
    rows += [model.backend.decode(t, cache)[None] for t in tokens[PROMPT_LEN:-1]]
    return torch.cat(rows)


def test_f32_matches_transformers(reference, tmp_path):
    hf_dir, prompt, continuation, ref = reference
    model = convert(hf_dir, "f32", tmp_path)
    got = incremental_logits(model, prompt + continuation)
    assert (got - ref[:-1]).abs().max().item() < 1e-4
    assert model.generate(prompt, STEPS) == continuation


@pytest.mark.parametrize("outtype", ["f16", "bf16"])
def test_half_precision_within_tolerance(reference, outtype, tmp_path):
    hf_dir, prompt, continuation, ref = reference
    got = incremental_logits(convert(hf_dir, outtype, tmp_path), prompt + continuation)
    assert (got - ref[:-1]).abs().max().item() < TOLERANCE[outtype] * ref.std().item()


def dequantized_copy(model) -> ReferenceBackend:
    """The same model with every Q8_0 weight expanded to fp32."""
    w = model.weights

    def expand(x):
        return PackedWeight(dense.F32, (x.dequantize(),), x.k) if isinstance(x, PackedWeight) else x

    layers = [type(layer)(**{k: expand(v) for k, v in vars(layer).items()}) for layer in w.layers]
    tok = expand(w.tok_embd)
    out = tok if w.tied else expand(w.output)
    return ReferenceBackend(model.config, type(w)(tok, w.output_norm, out, w.rope_freqs, layers))


def test_q8_0_matches_dequantized_forward_and_transformers_tokens(reference, tmp_path):
    hf_dir, prompt, continuation, ref = reference
    model = convert(hf_dir, "q8_0", tmp_path)  # the CPU backend: x rounded to 8 bits, as llama.cpp does
    assert model.weights.layers[0].wqkv.fmt.name == "Q8_0"
    tokens = prompt + continuation
    exact = gguflm.load(tmp_path / "model-q8_0.gguf", device="cpu", backend="reference")
    dense = dequantized_copy(exact)
    expected = dense.prefill(tokens[:-1], dense.new_cache(len(tokens)))
    assert (incremental_logits(exact, tokens) - expected).abs().max().item() < 1e-4
    got = incremental_logits(model, tokens)
    assert ((got - expected) ** 2).sum() / (expected ** 2).sum() <= 5e-4  # llama.cpp's bound (NMSE)

    error = (got - ref[:-1]).abs().max().item()
    assert error < TOLERANCE["q8_0"] * ref.std().item()
    # Greedy choices given the same prefix: wherever transformers' top-1 leads by more than twice the
    # quantization error, the Q8_0 model must pick the same token.
    steps = got[PROMPT_LEN - 1 :]
    top2 = ref[PROMPT_LEN - 1 : -1].topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 2 * error
    assert decisive.sum() >= STEPS // 2
    assert steps.argmax(-1)[decisive].tolist() == torch.tensor(continuation)[decisive].tolist()

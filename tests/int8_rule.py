"""The tolerance rules of the CPU kernels that round x to 8 bits per 32 values as llama.cpp does (see
test_backend_cpu's docstring): the rounded-x oracle, llama.cpp's NMSE bound, and the near-tie rule for
greedy ids. Shared by test_backend_cpu and test_cpu_kernels_more."""

from __future__ import annotations

import gguf
import numpy as np
import torch

from gguflm import quants

REL_PRODUCT = 2e-6
REL_LOGITS = 1e-4
NMSE = 5e-4  # llama.cpp's bound on a product with 8-bit activations: sum (got - want)^2 / sum want^2
QT = gguf.GGMLQuantizationType


def nmse(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(((got.double() - want.double()) ** 2).sum() / (want.double() ** 2).sum())


def rounded_x(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, K) as llama.cpp rounds it for a quantized product, made with gguf-py's Q8_0: (the rounded
    values (T, K) float64, s (T, K/32) float64: q8_1's fp16(d * sum(q)) with the unrounded d)."""
    blocks = gguf.quants.quantize(x.numpy(), QT.Q8_0).reshape(x.shape[0], -1, 34)
    d = blocks[..., :2].copy().view(np.float16).astype(np.float64)  # (T, nb, 1)
    q = blocks[..., 2:].view(np.int8).astype(np.float64)  # (T, nb, 32)
    amax = np.abs(x.numpy().reshape(q.shape)).max(-1, keepdims=True)
    s = (q.sum(-1, keepdims=True).astype(np.float32) * (amax / np.float32(127))).astype(np.float16)
    return torch.from_numpy((d * q).reshape(x.shape)), torch.from_numpy(s[..., 0].astype(np.float64))


def int8_oracle(x: torch.Tensor, w: quants.PackedWeight) -> torch.Tensor:
    """The product llama.cpp computes for a legacy format: dequantized weights times the rounded x, the
    minimum of Q4_1/Q5_1 blocks (w = d q + m) meeting s rather than the sum of the rounded block."""
    xr, s = rounded_x(x)
    want = xr @ w.dequantize().double().T
    if w.fmt.name in ("Q4_1", "Q5_1"):
        m = w.parts[2].view(torch.float16).double()  # (N, nb)
        want += (s - xr.reshape(s.shape[0], -1, 32).sum(-1)) @ m.T
    return want


def logits_close(got: torch.Tensor, want: torch.Tensor, int8: bool) -> bool:
    """The fast path's logits against the reference's: llama.cpp's rule where activations were rounded."""
    if int8:
        return nmse(got, want) <= NMSE
    return bool((got - want).abs().max() <= REL_LOGITS * want.abs().max())


def greedy_steps(model, prompt: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy ids and the logits each was chosen from, by the model's own prefill and decode steps."""
    b = model.backend
    cache = b.new_cache(len(prompt) + n + 1)
    logits, ids, steps = b.prefill_last(prompt, cache), [], []
    for _ in range(n):
        steps.append(logits)
        ids.append(int(logits.argmax()))
        logits = b.decode(ids[-1], cache)
    return ids, steps


def assert_greedy_ids_equal_the_reference(ref, fast, n: int, int8: bool):
    """Equal ids; where activations are rounded, a departure only at a near-tie: the reference's top-2
    margin there is below twice the fast path's largest logit error at that step, which itself is within
    llama.cpp's rule. The rest of the sequence is then not compared."""
    prompt = [1, 5, 9]
    got, steps = greedy_steps(fast, prompt, n)
    want = ref.generate(prompt, n, stop_ids=())
    if not int8:
        assert got == want
        return
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            exact = ref.logits(prompt + want[:i])[-1]
            top2 = exact.topk(2).values
            assert nmse(steps[i], exact) <= NMSE
            assert top2[0] - top2[1] < 2 * (steps[i] - exact).abs().max(), f"step {i} flipped"
            break

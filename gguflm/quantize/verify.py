"""`--verify`: how far a quantized model's next-token distributions are from its source's.

Both files run in gguflm on a few built-in prompts; per position the KL divergence
KL(source || quantized) of the softmax distributions, whether the top-1 tokens agree and the
largest |logit difference|, plus each re-encoded tensor's RMSE against the source weights (what
llama-perplexity --kl-divergence reports, without a second tool). A file holding a type this
build cannot run is run as its dequantized float32 copy (gguf-py's dequantizer), which computes
the same function the runtime's kernels compute for it.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

from gguflm.gguf_file import GGUFFile, open_gguf
from gguflm.quantize.mixes import MIXES

QT = gguf.GGMLQuantizationType
PROMPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The capital of France is Paris. The capital of Germany is",
)


@dataclass(frozen=True)
class TensorError:
    name: str
    qtype: str
    rmse: float
    rel: float  # rmse / rms of the source tensor


@dataclass(frozen=True)
class VerifyResult:
    kl_mean: float
    kl_max: float
    top1: float  # fraction of positions whose argmax agrees
    max_dlogit: float
    n_positions: int
    tensors: tuple[TensorError, ...]
    dequantized: bool  # the quantized file ran as its float32 copy

    def summary(self) -> list[str]:
        how = " (run as its dequantized float32 copy)" if self.dequantized else ""
        lines = [f"verify{how}: {self.n_positions} positions of {len(PROMPTS)} prompts: KL mean {self.kl_mean:.5f}, "
                 f"KL max {self.kl_max:.5f}, top-1 agreement {100 * self.top1:.1f}%, max |dlogit| {self.max_dlogit:.4g}"]
        if self.tensors:
            worst = sorted(self.tensors, key=lambda t: -t.rel)[:5]
            mean_rel = float(np.mean([t.rel for t in self.tensors]))
            lines.append(f"per-tensor RMSE of {len(self.tensors)} re-encoded tensors: mean {100 * mean_rel:.2f}% of "
                         f"the weights' RMS; worst: " + ", ".join(f"{t.name} {t.qtype} {100 * t.rel:.2f}%" for t in worst))
        return lines


def tensor_errors(src: GGUFFile, out: GGUFFile) -> tuple[TensorError, ...]:
    """RMSE of every tensor whose bytes changed, both sides expanded with gguf-py, a chunk at a time."""
    from gguflm.quantize.rewrite import CHUNK_BYTES, source_rows

    errors = []
    for name, a in src.tensors.items():
        b = out.tensors.get(name)
        if b is None or (b.tensor_type == a.tensor_type and b.shape == a.shape):
            continue
        rows = a.n_elements // a.shape[0]
        step = max(1, CHUNK_BYTES // (4 * a.shape[0]))
        se = ss = 0.0
        for r in range(0, rows, step):
            x = source_rows(a, r, min(rows, r + step)).astype(np.float64)
            y = source_rows(b, r, min(rows, r + step)).astype(np.float64)
            se += float(((x - y) ** 2).sum())
            ss += float((x * x).sum())
        rmse = (se / a.n_elements) ** 0.5
        errors.append(TensorError(name, b.tensor_type.name, rmse, rmse / max((ss / a.n_elements) ** 0.5, 1e-30)))
    return tuple(errors)


def runnable_types() -> set[QT]:
    from gguflm import quants

    return {QT(t) for t in QT if quants.lookup(QT(t)) is not None}


def write_float_copy(gf: GGUFFile, out: Path, keep: set[QT] = frozenset({QT.F32})) -> Path:
    """`gf` with every tensor not of a type in `keep` expanded to float32 (gguf-py's dequantizer)."""
    from gguflm.quantize.rewrite import TensorPlan, write_tensors

    plan = [TensorPlan(t.name, t.shape, t.tensor_type, t.tensor_type if t.tensor_type in keep else QT.F32)
            for t in gf.tensors.values()]
    write_tensors(out, gf, MIXES["F32"], plan)
    return out


@contextmanager
def runnable(path: Path) -> Iterator[tuple[Path, bool]]:
    """The file itself when gguflm runs every tensor type in it, else a float32 copy of the
    tensors it cannot run (in a temporary directory, removed afterwards); and whether a copy was made."""
    gf = open_gguf(path)
    ok = runnable_types()
    if all(t.tensor_type in ok for t in gf.tensors.values()):
        yield path, False
        return
    with tempfile.TemporaryDirectory(prefix="gguflm-verify-") as d:
        yield write_float_copy(gf, Path(d) / "dequantized.gguf", ok), True


def prompt_ids(model) -> list[list[int]]:
    """The prompts through the model's tokenizer, or fixed small ids when the file has none."""
    if model.has_tokenizer:
        return [model.tokenizer.encode(p, add_special=True) for p in PROMPTS]
    top = model.config.n_vocab
    return [[(7 * i + 3 * j + 1) % top for i in range(12)] for j in range(len(PROMPTS))]


def all_logits(path: Path, prompts: list[list[int]] | None = None, device: str = "cpu"):
    """(prompt ids, [logits (T, n_vocab) float64 per prompt]) of the model at `path`."""
    import gguflm

    with runnable(path) as (p, copied):
        model = gguflm.load(p, device=device)
        prompts = prompts if prompts is not None else prompt_ids(model)
        logits = [model.logits(ids).double().cpu() for ids in prompts]
        del model
    return prompts, logits, copied


def compare_logits(ref: list, test: list) -> tuple[float, float, float, float, int]:
    """(KL mean, KL max, top-1 agreement, max |dlogit|, positions) of test against ref."""
    import torch

    kls, agree, dmax, n = [], 0, 0.0, 0
    for a, b in zip(ref, test):
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        kls.append((la.exp() * (la - lb)).sum(-1))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        dmax = max(dmax, float((a - b).abs().max()))
        n += a.shape[0]
    kl = torch.cat(kls)
    return float(kl.mean()), float(kl.max()), agree / n, dmax, n


def verify_quantized(src_path: str | Path, out_path: str | Path, device: str = "cpu") -> VerifyResult:
    """Compare the quantized file at `out_path` with its source at `src_path` (see the module doc)."""
    prompts, ref, _ = all_logits(Path(src_path), device=device)
    _, test, copied = all_logits(Path(out_path), prompts, device=device)
    kl_mean, kl_max, top1, dmax, n = compare_logits(ref, test)
    errors = tensor_errors(open_gguf(src_path), open_gguf(out_path))
    return VerifyResult(kl_mean, kl_max, top1, dmax, n, errors, copied)

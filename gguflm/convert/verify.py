"""`convert --verify`: run the new GGUF with gguflm and the checkpoint with transformers, compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gguflm.errors import GGUFLMError

PROMPT = "The quick brown fox jumps over the lazy dog."
# The largest max |logit diff| a conversion passes with, in units of the std of transformers' logits
# (so the bound does not depend on the model's logit scale); the rounding of each type sets it.
THRESHOLDS = {"f32": 1e-4, "f16": 5e-3, "bf16": 4e-2, "q8_0": 1e-1}


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of one verification run; `max_abs_diff`/`greedy_match` are None without transformers."""

    prompt_ids: list[int]
    gguf_tokens: list[int]
    hf_tokens: list[int] | None
    max_abs_diff: float | None
    logit_std: float | None = None  # of transformers' logits: the scale the thresholds are in
    kl_mean: float | None = None  # KL(transformers || gguflm) of the next-token distributions, per position
    top1: float | None = None  # fraction of prompt positions whose argmax agrees
    tensor_rmse: dict[str, float] | None = None  # re-encoded tensors: RMSE / RMS of the checkpoint's weights
    dequantized: bool = False  # the file ran as its float32 copy (a type the runtime does not have yet)

    @property
    def greedy_match(self) -> bool | None:
        return None if self.hf_tokens is None else self.hf_tokens == self.gguf_tokens

    def summary(self) -> str:
        if self.max_abs_diff is None:
            return f"gguflm ran the file: {len(self.gguf_tokens)} greedy tokens {self.gguf_tokens} (transformers absent)"
        agree = "agree" if self.greedy_match else "DIFFER"
        text = (f"max |logit diff| vs transformers = {self.max_abs_diff:.4g}; greedy tokens {agree} "
                f"(gguflm {self.gguf_tokens}, transformers {self.hf_tokens})")
        if self.kl_mean is not None:
            text += f"; KL mean {self.kl_mean:.5f}, top-1 agreement {100 * self.top1:.1f}%"
        if self.tensor_rmse:
            worst = max(self.tensor_rmse, key=self.tensor_rmse.get)
            text += (f"; per-tensor RMSE mean {100 * sum(self.tensor_rmse.values()) / len(self.tensor_rmse):.2f}% "
                     f"of the weights' RMS (worst {worst} {100 * self.tensor_rmse[worst]:.2f}%)")
        if self.dequantized:
            text += " (run as its dequantized float32 copy)"
        return text

    def verdict(self, outtype: str) -> tuple[str, bool]:
        """One line stating the threshold for `outtype` and whether the conversion met it."""
        if self.max_abs_diff is None or not self.logit_std:
            return "verify: no verdict (transformers is not installed; the file ran in gguflm)", True
        limit = THRESHOLDS.get(outtype)
        rel = self.max_abs_diff / self.logit_std
        if limit is None:
            return f"verify: no threshold for {outtype}: max |logit diff| = {rel:.3g} x std of the logits", True
        passed = rel <= limit and bool(self.greedy_match)
        return (f"verify: {'PASS' if passed else 'FAIL'}: max |logit diff| = {rel:.3g} x std of the logits "
                f"({'within' if rel <= limit else 'over'} the {limit:g} allowed for {outtype}), greedy tokens "
                f"{'agree' if self.greedy_match else 'differ'}"), passed


def verify_conversion(gguf_path: Path, hf_dir: Path, *, n_new: int = 8, device: str = "cpu",
                      outtype: str | None = None) -> VerifyReport:
    """Compare prompt logits and `n_new` greedy tokens of gguflm (on `gguf_path`) and transformers (on `hf_dir`);
    with `outtype`, also each re-encoded tensor's RMSE against the checkpoint."""
    import gguflm
    from gguflm.quantize.verify import compare_logits, runnable

    with runnable(Path(gguf_path)) as (path, copied):
        model = gguflm.load(path, device=device)
        ids = _prompt_ids(Path(hf_dir), model.config.n_vocab)
        logits = model.logits(ids).float().cpu()
        tokens = model.generate(ids, n_new, stop_ids=())  # as many as transformers gives: no end-of-generation stop
        del model
    rmse = _tensor_rmse(Path(gguf_path), Path(hf_dir), outtype) if outtype else None
    hf = _load_transformers(Path(hf_dir))
    if hf is None:
        return VerifyReport(ids, tokens, None, None, tensor_rmse=rmse, dequantized=copied)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
        hf_tokens, seq = [], list(ids)
        for _ in range(n_new):  # full recompute each step: tiny prompts, and no cache semantics to trust
            nxt = int(hf(torch.tensor([seq])).logits[0, -1].argmax())
            hf_tokens.append(nxt)
            seq.append(nxt)
    kl, _, top1, _, _ = compare_logits([ref.double()], [logits.double()])
    return VerifyReport(ids, tokens, hf_tokens, float((logits - ref).abs().max()), float(ref.std()), kl, top1,
                        rmse, copied)


def _tensor_rmse(gguf_path: Path, hf_dir: Path, outtype: str) -> dict[str, float]:
    """RMSE / RMS of each tensor stored in a block type, against the checkpoint's rows (Q/K permuted as written)."""
    import numpy as np

    from gguflm.convert.encode import row_chunks
    from gguflm.convert.plan import make_plan
    from gguflm.gguf_file import open_gguf
    from gguflm.quantize.rewrite import source_rows

    gf = open_gguf(gguf_path)
    out = {}
    for t in make_plan(hf_dir, outtype).tensors:
        info = gf.tensors.get(t.name)
        if info is None or t.source is None or info.tensor_type.name in ("F32", "F16", "BF16"):
            continue
        se = ss = 0.0
        row = 0
        for chunk in row_chunks(t):
            x = chunk.to(torch.float64).numpy()
            y = source_rows(info, row, row + x.shape[0]).astype(np.float64)
            se += float(((x - y) ** 2).sum())
            ss += float((x * x).sum())
            row += x.shape[0]
        out[t.name] = (se / max(ss, 1e-300)) ** 0.5
    return out


def _prompt_ids(hf_dir: Path, n_vocab: int | None) -> list[int]:
    """The prompt through the checkpoint's own tokenizer, or fixed small ids when there is none."""
    if (hf_dir / "tokenizer.json").is_file() or (hf_dir / "tokenizer.model").is_file():
        try:
            from transformers import AutoTokenizer
        except ImportError:
            AutoTokenizer = None
        if AutoTokenizer is not None:
            return list(AutoTokenizer.from_pretrained(hf_dir).encode(PROMPT))
    top = n_vocab or 32
    return [(7 * i + 3) % top for i in range(8)]


def _load_transformers(hf_dir: Path):
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    try:
        return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    except (OSError, ValueError) as e:
        raise GGUFLMError(f"transformers cannot load {hf_dir} for verification: {e}") from None

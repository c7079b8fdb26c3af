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

    @property
    def greedy_match(self) -> bool | None:
        return None if self.hf_tokens is None else self.hf_tokens == self.gguf_tokens

    def summary(self) -> str:
        if self.max_abs_diff is None:
            return f"gguflm ran the file: {len(self.gguf_tokens)} greedy tokens {self.gguf_tokens} (transformers absent)"
        agree = "agree" if self.greedy_match else "DIFFER"
        return (f"max |logit diff| vs transformers = {self.max_abs_diff:.4g}; greedy tokens {agree} "
                f"(gguflm {self.gguf_tokens}, transformers {self.hf_tokens})")

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


def verify_conversion(gguf_path: Path, hf_dir: Path, *, n_new: int = 8, device: str = "cpu") -> VerifyReport:
    """Compare prompt logits and `n_new` greedy tokens of gguflm (on `gguf_path`) and transformers (on `hf_dir`)."""
    import gguflm

    model = gguflm.load(gguf_path, device=device)
    ids = _prompt_ids(Path(hf_dir), model.config.n_vocab)
    logits = model.logits(ids).float().cpu()
    tokens = model.generate(ids, n_new, stop_ids=())  # as many as transformers gives: no end-of-generation stop
    hf = _load_transformers(Path(hf_dir))
    if hf is None:
        return VerifyReport(ids, tokens, None, None)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
        hf_tokens, seq = [], list(ids)
        for _ in range(n_new):  # full recompute each step: tiny prompts, and no cache semantics to trust
            nxt = int(hf(torch.tensor([seq])).logits[0, -1].argmax())
            hf_tokens.append(nxt)
            seq.append(nxt)
    return VerifyReport(ids, tokens, hf_tokens, float((logits - ref).abs().max()), float(ref.std()))


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

"""A seeded mutation fuzzer over tiny checkpoint folders: every mutant converts to a file gguflm loads,
runs and tokenizes, or fails with one clear GGUFLMError line and leaves no file behind."""

from __future__ import annotations

import os
import random
import time

import pytest

from gguflm.synthetic.checkpoint_mutants import mutate_checkpoint, probe_checkpoint
from tiny_hf import make_tiny_checkpoint

MUTANTS = int(os.environ.get("GGUFLM_FUZZ_CONVERT_MUTANTS", "40"))
SECONDS = 90  # a loaded CI machine stops early, after at least a third of the mutants
SEED = int(os.environ.get("GGUFLM_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
OUTTYPES = ("f32", "f16", "q8_0")


def base_checkpoints(tmp_path):
    """Small valid folders: a llama with a SentencePiece tokenizer, a qwen2 with byte-level BPE."""
    return [
        make_tiny_checkpoint(tmp_path / "llama-spm", "llama", tokenizer="spm"),
        make_tiny_checkpoint(tmp_path / "qwen2-bpe", "qwen2", tokenizer="bpe-qwen2"),
    ]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return base_checkpoints(tmp_path_factory.mktemp("bases"))


def test_checkpoint_mutants_convert_or_fail_cleanly(bases, tmp_path):
    print(f"converter fuzz seed {SEED} (GGUFLM_FUZZ_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    work, out = tmp_path / "mutant", tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    started, outcomes = time.monotonic(), {}
    for i in range(MUTANTS):
        if i >= MUTANTS // 3 and time.monotonic() - started > SECONDS:
            break
        what = mutate_checkpoint(bases[i % len(bases)], work, rng)
        outcome = probe_checkpoint(work, out, rng.choice(OUTTYPES))
        assert outcome.clean, f"seed {SEED}, mutant {i} ({what}) at {outcome.stage}:\n{outcome.error[-3000:]}"
        outcomes[outcome.stage] = outcomes.get(outcome.stage, 0) + 1
    assert outcomes.get("convert", 0) > 0  # the fuzzer does break checkpoints
    assert outcomes.get("ok", 0) > 0  # and some mutants are harmless (a key the converter ignores)


@pytest.mark.parametrize("outtype", OUTTYPES)
def test_the_bases_convert_cleanly(bases, tmp_path, outtype):
    for base in bases:
        out = tmp_path / f"{base.name}.gguf"
        assert probe_checkpoint(base, out, outtype).stage == "ok"

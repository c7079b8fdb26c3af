"""A seeded mutation fuzzer over small GGUF files: every mutant either works or fails with one clear
GGUFLMError line, through info, load + generate, the tokenizer and the chat template."""

from __future__ import annotations

import os
import random
import time

import pytest

from gguflm.chat.template import load_builtin
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.mutants import mutate, probe, sites
from gguflm.synthetic.vocab import spm_tokenizer

MUTANTS = int(os.environ.get("GGUFLM_FUZZ_MUTANTS", "300"))
SECONDS = 120  # a loaded CI machine stops early, after at least a third of the mutants
SEED = int(os.environ.get("GGUFLM_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))


def base_files(tmp_path):
    import gguf

    tokenizer = spm_tokenizer(300) | {gguf.Keys.Tokenizer.CHAT_TEMPLATE: (load_builtin("chatml"),
                                                                          gguf.GGUFValueType.STRING)}
    return [
        write_synthetic_gguf(tmp_path / "q8.gguf", SyntheticSpec(n_vocab=300, n_layers=1, qtype="Q8_0"),
                             tokenizer=tokenizer),
        write_synthetic_gguf(tmp_path / "qwen2.gguf", SyntheticSpec(arch="qwen2", n_vocab=300, n_layers=1,
                                                                    qtype="F16", rope_freqs=True), tokenizer=tokenizer),
    ]


def test_mutants_fail_cleanly_or_work(tmp_path):
    print(f"fuzz seed {SEED} (GGUFLM_FUZZ_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    bases = [(p.read_bytes(), min(t.data_offset for t in __import__("gguf").GGUFReader(p).tensors), sites(p), p)
             for p in base_files(tmp_path)]
    target = tmp_path / "mutant.gguf"
    started, outcomes = time.monotonic(), {}
    for i in range(MUTANTS):
        if i >= MUTANTS // 3 and time.monotonic() - started > SECONDS:
            break
        data, header_end, all_sites, path = bases[i % len(bases)]
        mutant, what = mutate(data, header_end, all_sites, rng, path)
        target.write_bytes(mutant)
        outcome = probe(target)
        assert outcome.clean, f"seed {SEED}, mutant {i} ({what}) at {outcome.stage}:\n{outcome.error[-3000:]}"
        outcomes[outcome.stage] = outcomes.get(outcome.stage, 0) + 1
    assert outcomes.get("info", 0) + outcomes.get("run", 0) > 0  # the fuzzer does break files
    assert outcomes.get("ok", 0) > 0  # and some mutants are harmless (an hparam the model ignores)


def test_an_unknown_tokenizer_model_is_named_escaped_on_one_line(tmp_path):
    """Found by the long fuzz run (seed 20261202): the name was quoted raw, so a newline split the message."""
    import gguf

    from gguflm.errors import GGUFLMError
    from gguflm.tokenizer import Tokenizer

    tokenizer = spm_tokenizer(300) | {gguf.Keys.Tokenizer.MODEL: ("\n\x1b[31m", gguf.GGUFValueType.STRING)}
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(n_vocab=300, n_layers=1), tokenizer=tokenizer)
    with pytest.raises(GGUFLMError, match="unsupported tokenizer model") as e:
        Tokenizer.from_file(path)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)

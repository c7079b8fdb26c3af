"""Bad files give one clear GGUFLMError (exit code 1 and one line from the CLI), never a traceback."""

import struct
import subprocess
import sys

import gguf
import numpy as np
import pytest

import gguflm
from gguflm.arch import QKV_BIAS
from gguflm.config import ModelConfig
from gguflm.errors import GGUFLMError
from gguflm.gguf_file import open_gguf
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.weights import check_weights

QT = gguf.GGMLQuantizationType


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguflm.cli.main", *args], capture_output=True, text=True)


def broken_files(tmp_path):
    """(file, words the error must contain) for each kind of bad input."""
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just some text, not a model\n")
    valid = write_synthetic_gguf(tmp_path / "valid.gguf", SyntheticSpec(qtype="Q8_0"))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    q4 = gguf.quants.quantize(np.ones((64, 64), np.float32), QT.Q4_0)
    cases = {
        "unknown_arch": (SyntheticSpec(arch="mamba"), "architecture 'mamba' is not supported"),
        "llama3_rope_without_factors": (
            SyntheticSpec(extra_metadata={"llama.rope.scaling.type": "llama3"}),
            "rope scaling 'llama3' needs the rope_freqs tensor",
        ),
        "q4_0": (SyntheticSpec(replace_tensors={"blk.0.attn_q.weight": (q4, QT.Q4_0)}), "Q4_0, which is not supported"),
        "missing": (SyntheticSpec(drop_tensors=("blk.1.ffn_up.weight",)), "'blk.1.ffn_up.weight' is missing"),
        "shape": (
            SyntheticSpec(replace_tensors={"blk.0.attn_k.weight": (np.ones((48, 64), np.float32), None)}),
            "'blk.0.attn_k.weight' has shape [48, 64] but the metadata implies [32, 64]",
        ),
    }
    files = [(not_gguf, "not a GGUF file"), (truncated, "truncated"), (nested_arrays(tmp_path), "nested more than")]
    for name, (spec, words) in cases.items():
        files.append((write_synthetic_gguf(tmp_path / f"{name}.gguf", spec), words))
    few_tokens = {"tokenizer.ggml.model": ("llama", gguf.GGUFValueType.STRING),
                  "tokenizer.ggml.tokens": ([f"t{i}" for i in range(10)], gguf.GGUFValueType.ARRAY)}
    mismatch = write_synthetic_gguf(tmp_path / "vocab_mismatch.gguf", SyntheticSpec(), tokenizer=few_tokens)
    files.append((mismatch, "the tokenizer has 10 tokens but token_embd has 256 rows"))
    return files


def nested_arrays(tmp_path, depth: int = 5000):
    """A header whose one metadata value is an array of an array of ... (a recursion bomb)."""
    key = b"x"
    body = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    body += struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + body)
    return path


def test_each_bad_file_raises_clear_error(tmp_path):
    for path, words in broken_files(tmp_path):
        with pytest.raises(GGUFLMError, match=None) as err:
            gguflm.load(path, device="cpu")
        assert words in str(err.value), (path.name, str(err.value))
        assert "\n" not in str(err.value)


def test_cli_reports_bad_files_in_one_line(tmp_path):
    for path, words in broken_files(tmp_path):
        result = run_cli("run", "-m", str(path), "-p", "hi", "-n", "1")
        assert result.returncode == 1, (path.name, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0 and words in result.stderr
        assert result.stderr.startswith("error: ")


def test_cli_missing_file(tmp_path):
    result = run_cli("info", str(tmp_path / "nope.gguf"))
    assert result.returncode == 1 and "no such file" in result.stderr


def validate(path) -> None:
    gf = open_gguf(path)
    check_weights(gf, ModelConfig.from_gguf(gf))


def test_mutation_fuzz_only_clear_errors(tmp_path):
    """Flipped bytes in the header and metadata, and truncation anywhere: only GGUFLMError escapes."""
    valid = write_synthetic_gguf(tmp_path / "valid.gguf",
                                 SyntheticSpec(n_layers=1, qtype="Q8_0", extras=frozenset({QKV_BIAS})))
    data = valid.read_bytes()
    header_end = min(t.data_offset for t in gguf.GGUFReader(valid).tensors)
    rng = np.random.default_rng(0)
    target = tmp_path / "mutant.gguf"
    outcomes = {"ok": 0, "error": 0}
    for trial in range(400):
        mutant = bytearray(data)
        if trial % 4 == 3:
            mutant = mutant[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, header_end))
                mutant[pos] ^= 1 << int(rng.integers(0, 8))
        target.write_bytes(bytes(mutant))
        try:
            validate(target)
            outcomes["ok"] += 1
        except GGUFLMError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100  # most mutations of the header must be caught

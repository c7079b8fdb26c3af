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
    iq2 = np.random.default_rng(0).integers(0, 256, size=(256, 66), dtype=np.uint8)  # a format this build lacks
    cases = {
        "unknown_arch": (SyntheticSpec(arch="mamba"), "architecture 'mamba' is not supported"),
        "llama3_rope_without_factors": (
            SyntheticSpec(extra_metadata={"llama.rope.scaling.type": "llama3"}),
            "rope scaling 'llama3' needs the rope_freqs tensor",
        ),
        "iq2_xxs": (SyntheticSpec(dim=256, n_heads=4, n_kv_heads=2,
                                  replace_tensors={"blk.0.attn_q.weight": (iq2, QT.IQ2_XXS)}),
                    "tensor 'blk.0.attn_q.weight' has type IQ2_XXS, which is not supported"),
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


def patched(path, tmp_path, name, site_of, value: int):
    """A copy of a valid file with one header field (found by gguflm.synthetic.mutants.sites) set to value."""
    from gguflm.synthetic.mutants import sites

    site = next(s for s in sites(path) if site_of(s))
    data = bytearray(path.read_bytes())
    data[site.pos : site.pos + site.size] = value.to_bytes(site.size, "little")
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def test_parser_refuses_what_llama_cpp_refuses(tmp_path):
    valid = write_synthetic_gguf(tmp_path / "v.gguf", SyntheticSpec(n_layers=1, extra_metadata={"general.namf": "x"}))
    offsets = {s.what: s for s in __import__("gguflm.synthetic.mutants", fromlist=["sites"]).sites(valid)
               if s.kind == "offset"}
    first, second = list(offsets)[:2]
    second_offset = int.from_bytes(valid.read_bytes()[offsets[second].pos:offsets[second].pos + 8], "little")
    cases = {
        "misaligned": (patched(valid, tmp_path, "a.gguf", lambda s: s.kind == "offset" and s.what == second,
                               second_offset + 4), "not a multiple of the alignment 32"),
        "overlap": (patched(valid, tmp_path, "b.gguf", lambda s: s.kind == "offset" and s.what == second, 0),
                    f"the data of tensors '{second}' and '{first}' overlap"),  # both at offset 0 now
    }
    dup = bytearray(valid.read_bytes())
    at = dup.find(b"general.namf")
    dup[at : at + 12] = b"general.name"
    (tmp_path / "dup.gguf").write_bytes(bytes(dup))
    cases["duplicate key"] = (tmp_path / "dup.gguf", "metadata key 'general.name' appears twice")
    for name, (path, words) in cases.items():
        with pytest.raises(GGUFLMError) as err:
            open_gguf(path)
        assert words in str(err.value), name


@pytest.mark.parametrize("key,value,words", [
    ("llama.rope.dimension_count", (-4, gguf.GGUFValueType.INT32), "rope dimension -4 must be even, positive"),
    ("llama.context_length", (-5, gguf.GGUFValueType.INT32), "n_ctx_train = -5, which must be positive"),
    ("llama.attention.layer_norm_rms_epsilon", (float("nan"), gguf.GGUFValueType.FLOAT32),
     "norm_eps = nan, which must be a positive finite number"),
    ("llama.rope.freq_base", (float("inf"), gguf.GGUFValueType.FLOAT32), "rope_base = inf"),
    ("llama.rope.freq_base", (-1.0, gguf.GGUFValueType.FLOAT32), "rope_base = -1.0"),
    ("llama.block_count", 100000, "block_count is 100000 but the file has tensors for 2 blocks"),
    ("llama.block_count", 1, "the file has tensors of block 1 but block_count is 1"),
    ("llama.embedding_length", 1 << 40, "dim = 1099511627776, which must be positive (at most 16777216)"),
])
def test_hparams_out_of_range_are_refused_when_read(tmp_path, key, value, words):
    if isinstance(value, int) and value >= 1 << 32:
        value = (value, gguf.GGUFValueType.UINT64)
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(extra_metadata={key: value}))
    with pytest.raises(GGUFLMError) as err:
        ModelConfig.from_gguf(open_gguf(path))
    assert words in str(err.value)


def test_file_controlled_text_cannot_forge_output_lines(tmp_path):
    """A newline or an escape sequence in general.architecture reaches neither stderr nor info raw."""
    path = write_synthetic_gguf(tmp_path / "m.gguf", SyntheticSpec(
        arch="llama\nerror: forged\x1b[31m", extra_metadata={"general.name": "x\ny\x1b[0m"}))
    result = run_cli("run", "-m", str(path), "-p", "hi")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "\x1b" not in result.stderr
    assert "architecture 'llama\\nerror: forged\\x1b[31m' is not supported" in result.stderr
    result = run_cli("info", str(path))
    assert result.returncode == 0 and "\x1b" not in result.stdout and "forged" in result.stdout
    assert all(not line.startswith("error") for line in result.stdout.splitlines())
    assert "x\\ny\\x1b[0m" in result.stdout


def _vocab_metadata(n=300):
    from gguflm.synthetic.vocab import spm_tokenizer

    return {key: value for key, (value, _) in spm_tokenizer(n).items()}


@pytest.mark.parametrize("key,value,words", [
    ("tokenizer.ggml.tokens", [[1, 2]] * 300, "'tokenizer.ggml.tokens' must be an array of strings"),
    ("tokenizer.ggml.tokens", list(range(300)), "'tokenizer.ggml.tokens' must be an array of strings"),
    ("tokenizer.ggml.token_type", [[1]] * 300, "'tokenizer.ggml.token_type' must be an array of integers"),
    ("tokenizer.ggml.token_type", [1] * 301, "one entry per token (300 tokens, 301 entries)"),
    ("tokenizer.ggml.scores", ["1.0"] * 300, "'tokenizer.ggml.scores' must be an array of numbers"),
    ("tokenizer.ggml.merges", "a b", "'tokenizer.ggml.merges' must be an array of strings, not str"),
    ("tokenizer.ggml.merges", [1, 2], "'tokenizer.ggml.merges' must be an array of strings"),
    ("tokenizer.ggml.pre", ["llama-bpe"], "'tokenizer.ggml.pre' must be a string, not list"),
    ("tokenizer.ggml.add_bos_token", "false", "'tokenizer.ggml.add_bos_token' must be a boolean, not str"),
    ("tokenizer.ggml.bos_token_id", 1.5, "'tokenizer.ggml.bos_token_id' must be an integer, not float"),
])
def test_tokenizer_keys_of_the_wrong_type_are_named(key, value, words):
    from gguflm.tokenizer import Tokenizer

    md = _vocab_metadata()
    md[key] = value
    if key in ("tokenizer.ggml.merges", "tokenizer.ggml.pre"):
        md["tokenizer.ggml.model"] = "gpt2"
    with pytest.raises(GGUFLMError) as err:
        Tokenizer._from_metadata(md, "m.gguf")
    assert words in str(err.value) and str(err.value).startswith("m.gguf: ")


def test_what_is_not_a_regular_file_is_named_for_what_it_is(tmp_path):
    import os

    fifo, loop = tmp_path / "fifo", tmp_path / "loop"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    cases = {tmp_path: "is a directory", fifo: "is not a regular file", loop: "cannot read the file",
             tmp_path / "nope.gguf": "no such file"}
    if os.path.exists("/dev/zero"):
        cases[__import__("pathlib").Path("/dev/zero")] = "is not a regular file"
    for path, words in cases.items():
        with pytest.raises(GGUFLMError, match=words):
            open_gguf(path)


def test_cli_bad_arguments_and_outputs_get_one_clear_line(stories260k, tmp_path):
    import os

    def one_line(result, words):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and words in result.stderr, result.stderr

    model = str(stories260k)
    bad = b"\xff\xfe once".decode("utf-8", "surrogateescape")  # argv bytes that are not UTF-8
    one_line(run_cli("run", model, "-p", bad, "-n", "2"), "the text is not valid UTF-8")
    one_line(subprocess.run([sys.executable, "-m", "gguflm.cli.main", "tokenize", model, "--jsonl"],
                            input='"\\ud800"\n', capture_output=True, text=True), "the text is not valid UTF-8")
    one_line(run_cli("run", model, "-p", "x", "--top-k", str(2**70)), "--top-k must be 0 (off) or more")
    one_line(run_cli("run", model, "-p", "x", "--temp", "nan"), "--temp must be a finite number")
    if os.path.exists("/dev/full"):  # stdout on a full disk
        for args in (("info", model), ("run", model, "-p", "hi", "-n", "2", "-q"), ("tokenize", model, "hello")):
            with open("/dev/full", "w") as full:
                result = subprocess.run([sys.executable, "-m", "gguflm.cli.main", *args], stdout=full,
                                        stderr=subprocess.PIPE, text=True)
            one_line(result, "cannot write the output: No space left on device")

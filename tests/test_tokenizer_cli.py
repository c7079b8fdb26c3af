"""`gguflm tokenize`: llama-tokenize's output format, --ids, --jsonl, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import pytest
import typer
from typer.testing import CliRunner

from gguflm.cli import tokenize as tokenize_cmd

WORDS = {"▁": -1.0, "H": -2.0, "i": -2.0, "Hi": -3.0, "▁Hi": -4.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A vocab-only SentencePiece GGUF with byte fallback and one control token."""
    path = tmp_path_factory.mktemp("cli") / "vocab.gguf"
    tokens = ["<unk>", "<s>", "</s>", "<|im_end|>"] + [f"<0x{b:02X}>" for b in range(256)] + list(WORDS)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.BYTE] * 256
    types += [gguf.TokenType.NORMAL] * len(WORDS)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_scores([0.0] * (260) + list(WORDS.values()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def run():
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Group mode, so the command is invoked by name as in the real app."""

    tokenize_cmd.register(app)
    runner = CliRunner()
    return lambda *args, stdin=None: runner.invoke(app, ["tokenize", *map(str, args)], input=stdin)


def test_llama_tokenize_format(run, model):
    result = run("-m", model, "Hi é")
    assert result.exit_code == 0, result.output
    hi, space = 4 + 256 + 4, 4 + 256
    expected = (f"{1:6d} -> '<s>'\n{hi:6d} -> ' Hi'\n{space:6d} -> ' '\n".encode()
                + f"{4 + 0xC3:6d} -> '".encode() + b"\xc3'\n" + f"{4 + 0xA9:6d} -> '".encode() + b"\xa9'\n")
    assert result.stdout_bytes == expected


def test_ids_no_bos_parse_special(run, model):
    hi = 4 + 256 + 4
    assert run("-m", model, "--ids", "Hi").stdout == f"[1, {hi}]\n"
    assert run("-m", model, "--ids", "--no-bos", "Hi").stdout == f"[{hi}]\n"
    parsed = run("-m", model, "--ids", "--no-bos", "--parse-special", "Hi<|im_end|>").stdout
    assert json.loads(parsed) == [hi, 3]
    assert 3 not in json.loads(run("-m", model, "--ids", "--no-bos", "Hi<|im_end|>").stdout)


def test_jsonl_many_texts_one_process(run, model):
    lines = [json.dumps(t) for t in ("Hi", "", "Hi Hi", "é\n")]
    result = run("-m", model, "--jsonl", "--no-bos", stdin="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    hi = 4 + 256 + 4
    assert out == [[hi], [], [hi, hi], [4 + 256, 4 + 0xC3, 4 + 0xA9, 4 + 0x0A]]


def test_jsonl_rejects_non_strings(run, model):
    result = run("-m", model, "--jsonl", stdin='"ok"\n[1, 2]\n')
    assert result.exit_code != 0
    assert "line 2" in str(result.exception)


@pytest.mark.parametrize("content", [b"not a gguf file at all", b"GGUF\x03\x00\x00\x00\x01"])
def test_bad_file_is_one_line_and_exit_1(tmp_path, content):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "gguflm.cli.main", "tokenize", "-m", str(bad), "hello"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_console_entry_point_has_the_command(model):
    proc = subprocess.run(
        [sys.executable, "-m", "gguflm.cli.main", "tokenize", "-m", str(model), "--ids", "--no-bos", "Hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"[{4 + 256 + 4}]\n"


def test_model_as_first_argument_and_text_from_stdin(run, model):
    by_option = run("-m", model, "--ids", "Hi Hi")
    assert by_option.exit_code == 0, by_option.output
    assert run(model, "Hi Hi", "--ids").output == by_option.output
    assert run(model, "--ids", stdin="Hi Hi\n").output == by_option.output  # echo's newline dropped
    assert run("-m", model, "--ids", stdin="Hi Hi").output == by_option.output
    assert "with -m, give just TEXT" in str(run("-m", model, "Hi", "Hi").exception)

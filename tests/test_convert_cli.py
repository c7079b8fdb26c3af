"""`gguflm convert`: dry run, default name, verify, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import gguf
import pytest
import typer
from typer.testing import CliRunner

from gguflm.cli import convert as convert_cli
from tiny_hf import make_tiny_checkpoint


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test app."""

    convert_cli.register(app)
    return app


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cli") / "tiny-qwen", "qwen2", tokenizer="bpe-qwen2")


def test_dry_run_prints_plan_and_writes_nothing(app, ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["convert", str(ckpt), "--outtype", "q8_0", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "tiny-qwen-Q8_0.gguf" in res.output and "qwen2.block_count = 2" in res.output
    assert "blk.0.attn_q.weight" in res.output and "Q8_0" in res.output and "64x64" in res.output
    assert list(tmp_path.iterdir()) == []


def test_default_name_and_verify(app, ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["convert", str(ckpt), "--outtype", "auto", "--verify"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "tiny-qwen-F16.gguf"  # float32 checkpoint: auto means f16, as in llama.cpp
    assert out.is_file() and gguf.GGUFReader(out).fields["general.file_type"].contents() == 1
    assert "max |logit diff|" in res.output and "greedy tokens agree" in res.output


def test_user_error_is_one_line_and_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gguflm.cli.main", "convert", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")

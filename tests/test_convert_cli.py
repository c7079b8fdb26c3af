"""`gguflm convert`: dry run, default name, verify, and one-line errors."""

from __future__ import annotations

import re
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


def test_dry_run_values_read_as_values_and_small_sizes_in_kib(app, ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["convert", str(ckpt), "--outtype", "f16", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "general.file_type = MOSTLY_F16 (1)" in res.output
    assert "<" not in "".join(line for line in res.output.splitlines() if "chat_template" not in line)  # no enum reprs
    assert re.search(r"characters\)$", res.output, re.M)  # the long template, cut short with its length
    assert re.search(r"\d+\.\d\d KiB of tensor data", res.output)


def test_an_existing_output_needs_force_and_verify_states_its_verdict(app, ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    res = CliRunner().invoke(app, ["convert", str(ckpt), "-o", str(out)])
    assert res.exit_code != 0 and "already exists (use --force" in str(res.exception)
    assert out.read_bytes() == b"keep me"
    res = CliRunner().invoke(app, ["convert", str(ckpt), "-o", str(out), "--dry-run"])
    assert "would need --force" in res.output
    res = CliRunner().invoke(app, ["convert", str(ckpt), "-o", str(out), "--force", "--outtype", "q8_0", "--verify"])
    assert res.exit_code == 0, res.output
    assert re.search(r"wrote .*m\.gguf \(\d+\.\d\d KiB, q8_0\)", res.output)
    verdict = re.search(r"^verify: PASS: max \|logit diff\| = ([0-9.e-]+) x std of the logits \(within the 0\.1 "
                        r"allowed for q8_0\), greedy tokens agree$", res.output, re.M)
    assert verdict and float(verdict.group(1)) <= 0.1, res.output
    assert "Loading weights" not in res.output  # transformers' progress bar is hidden


def test_a_verdict_fails_over_its_threshold():
    from gguflm.convert.verify import THRESHOLDS, VerifyReport

    ok = VerifyReport([1], [2, 3], [2, 3], max_abs_diff=0.004, logit_std=1.0)
    assert ok.verdict("f16") == (ok.verdict("f16")[0], True) and "PASS" in ok.verdict("f16")[0]
    over = VerifyReport([1], [2, 3], [2, 3], max_abs_diff=2 * THRESHOLDS["f16"], logit_std=1.0)
    assert over.verdict("f16")[1] is False and "FAIL" in over.verdict("f16")[0] and "over the 0.005" in over.verdict("f16")[0]
    differ = VerifyReport([1], [2, 3], [2, 4], max_abs_diff=0.0, logit_std=1.0)
    assert differ.verdict("f32")[1] is False and "differ" in differ.verdict("f32")[0]


def test_ctrl_c_while_converting_is_one_line_and_leaves_no_file(ckpt, tmp_path, monkeypatch, capsys):
    from gguflm.cli import main as cli_main
    from gguflm.convert import writer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "encode_chunks", interrupted)  # as if Ctrl-C came in the middle of the data
    monkeypatch.setattr(sys, "argv", ["gguflm", "convert", str(ckpt), "-o", str(tmp_path / "x.gguf")])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted" and err.count("interrupted") == 1
    assert list(tmp_path.iterdir()) == []  # the half-written file is gone

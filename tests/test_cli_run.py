"""`gguflm run` as a user runs it: a subprocess, stdout for text, stderr for everything else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from test_chat_models import make_chat_models

# One thread: a tiny model on a shared machine only loses time to thread contention.
ENV = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
CLI = [sys.executable, "-m", "gguflm.cli.main"]


@pytest.fixture(scope="module")
def chat_models(testdata, tmp_path_factory):
    return make_chat_models(tmp_path_factory.mktemp("chat_models"), testdata)


def gguflm(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], input=stdin if stdin is not None else "", capture_output=True, text=True,
        env=ENV, timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_greedy_200_tokens_print_llama_cpp_text_and_timings_go_to_stderr(stories260k):
    expected = (stories260k.parent / "stories260K.greedy200.txt").read_text(encoding="utf-8")
    result = gguflm("run", "-m", str(stories260k), "-p", "", "-n", "200", "--temp", "0")
    assert result.returncode == 0, result.stderr
    # llama2.c printed the text without the first token's leading space; llama.cpp prints every piece as
    # it is (llama-completion -p "" writes " Once upon a time..."), and so does gguflm.
    assert result.stdout == " " + expected.rstrip("\n") + "\n"
    assert "tok/s" in result.stderr and "generated 200 tok" in result.stderr
    assert "tok/s" not in result.stdout and "load" not in result.stdout


def test_prompt_from_stdin_continues_it_greedily(stories260k):
    import gguflm as lib
    from gguflm.sampling import SamplingParams

    model = lib.load(stories260k, device="cpu")
    expected = "".join(model.new_engine().generate("Once upon a time", 16, SamplingParams.greedy_params()))
    result = gguflm("run", "-m", str(stories260k), "-n", "16", "--temp", "0", "-q", stdin="Once upon a time\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n" and expected.strip()
    assert result.stderr == ""  # -q: no timings


def test_seeded_sampling_is_reproducible(stories260k):
    args = ("run", "-m", str(stories260k), "-p", "-", "-n", "24", "--seed", "7", "--temp", "1.0")
    first, second = gguflm(*args, stdin="Lily"), gguflm(*args, stdin="Lily")
    assert first.returncode == 0 and first.stdout.strip()
    assert first.stdout == second.stdout


def test_chat_mode_renders_a_real_llama3_template(chat_models):
    result = gguflm("run", "-m", str(chat_models["llama3"]), "--chat", "--system", "Be brief.", "-p", "Hello",
                    "-n", "8", "--seed", "1", "--verbose-prompt", "--no-graph", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("'<|begin_of_text|>'") == 1  # the template's BOS only
    assert "'<|start_header_id|>'" in result.stderr and "'<|eot_id|>'" in result.stderr
    assert "generated" in result.stderr and "<|" not in result.stdout


def test_errors_are_one_line(stories260k, tmp_path):
    assert "no such file" in one_error_line(gguflm("run", "-m", str(tmp_path / "nope.gguf"), "-p", "x"))
    long = gguflm("run", "-m", str(stories260k), "-c", "32", "-p", "once upon a time " * 20)
    assert "context holds 32" in one_error_line(long)
    # checked before the (missing) model is even opened
    assert "--n-predict must be positive" in one_error_line(gguflm("run", "-m", str(tmp_path / "x"), "-p", "x", "-n", "0"))


def test_ctrl_c_stops_cleanly_with_exit_130(stories260k):
    proc = subprocess.Popen([*CLI, "run", "-m", str(stories260k), "-p", "Once", "--temp", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        first = proc.stdout.read(20)  # generation has started
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert len(first) == 20 and b"Traceback" not in err
    assert b"interrupted" in err and b"tok/s" in err


@pytest.mark.parametrize("option", ["--system", "--chat-template"])
def test_chat_only_options_need_chat(option):
    from gguflm.cli.run import run
    from gguflm.errors import GGUFLMError

    with pytest.raises(GGUFLMError, match="only apply with --chat"):
        kwargs = {"system": "x"} if option == "--system" else {"chat_template": "chatml"}
        run(model="m.gguf", prompt="p", **kwargs)

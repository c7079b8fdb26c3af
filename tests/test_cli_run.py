"""`gguflm run` as a user runs it: a subprocess, stdout for text, stderr for everything else."""

from __future__ import annotations

import os
import re
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
    assert err.count(b"interrupted") == 1 and b"tok/s" in err


@pytest.mark.parametrize("option", ["--system", "--chat-template"])
def test_chat_only_options_need_chat(option):
    from gguflm.cli.run import run
    from gguflm.errors import GGUFLMError

    with pytest.raises(GGUFLMError, match="only apply with --chat"):
        kwargs = {"system": "x"} if option == "--system" else {"chat_template": "chatml"}
        run(model_file="m.gguf", prompt="p", **kwargs)


# ---------------------------------------------------------------- the model out of the box, options


def test_no_model_runs_the_bundled_demo_model_and_says_so(stories260k):
    bundled = gguflm("run", "-p", "Once upon a time", "-n", "12", "--temp", "0")
    given = gguflm("run", str(stories260k), "-p", "Once upon a time", "-n", "12", "--temp", "0")
    assert bundled.returncode == 0 and given.returncode == 0, bundled.stderr + given.stderr
    assert bundled.stdout == given.stdout and bundled.stdout.strip()  # the same model, the same story
    notes = [line for line in bundled.stderr.splitlines() if "demo model" in line]
    assert len(notes) == 1 and "demo model" not in given.stderr


def test_run_stops_by_default_at_256_tokens(tmp_path):
    import numpy as np

    from gguflm.cli.options import RUN_N_PREDICT
    from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
    from gguflm.synthetic.vocab import spm_tokenizer

    # a random model that never picks </s>: its head row for id 2 scores 0, below the best of the rest
    head = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32) / 8
    head[2] = 0
    spec = SyntheticSpec(n_vocab=300, n_ctx=2048, replace_tensors={"output.weight": (head, None)})
    path = write_synthetic_gguf(tmp_path / "chatty.gguf", spec, tokenizer=spm_tokenizer(300))
    result = gguflm("run", str(path), "-p", "hello", "--temp", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert RUN_N_PREDICT == 256 and f"generated {RUN_N_PREDICT} tok" in result.stderr
    assert "stopped by length" in result.stderr


def test_prompt_file_stop_strings_and_timings(stories260k, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Once upon a time\n", encoding="utf-8")
    full = gguflm("run", str(stories260k), "-f", str(prompt), "-n", "60", "--temp", "0")
    assert full.returncode == 0, full.stderr
    text = full.stdout
    found = {text.find(w): w for w in ("Lily", "Timmy", "park", "day", "was") if text.find(w) > 0}
    assert found, text
    at = min(found)
    cut = gguflm("run", "-m", str(stories260k), "-f", str(prompt), "-n", "60", "--temp", "0",
                 "--stop", "zzz", "--stop", found[at])
    before = text[:at]
    assert cut.stdout == before + ("" if before.endswith("\n") else "\n")  # the text before the stop string
    assert "stopped by stop" in cut.stderr
    ttft = float(re.search(r"first token ([0-9.]+) s after start", full.stderr).group(1))
    load = float(re.search(r"load ([0-9.]+) s", full.stderr).group(1))
    assert ttft > load  # counted from the process start: the imports and the load are in it
    assert "give the prompt once" in one_error_line(gguflm("run", "-f", str(prompt), "-p", "x"))
    assert "cannot read the prompt file" in one_error_line(gguflm("run", "-f", str(tmp_path / "none.txt")))


def test_a_context_beyond_training_is_warned_about(stories260k):
    result = gguflm("run", str(stories260k), "-p", "Once", "-n", "2", "-c", "4096", "--temp", "0")
    assert result.returncode == 0, result.stderr
    assert "warning: --ctx 4096 is more than the 2048 tokens the model was trained for" in result.stderr
    assert "warning" not in gguflm("run", str(stories260k), "-p", "Once", "-n", "2", "-c", "2048").stderr


@pytest.mark.parametrize("flag, value", [
    ("--temp", "nan"), ("--temp", "inf"), ("--temp", "-inf"), ("--top-k", "-1"), ("--top-p", "0"),
    ("--top-p", "1.5"), ("--top-p", "nan"), ("--min-p", "-0.1"), ("--min-p", "nan"), ("--repeat-penalty", "0"),
    ("--repeat-penalty", "inf"), ("--repeat-penalty", "nan"), ("--repeat-last-n", "-1"), ("--seed", "-1"),
])
def test_every_bad_sampling_value_names_its_flag(tmp_path, flag, value):
    line = one_error_line(gguflm("run", str(tmp_path / "never-opened.gguf"), "-p", "x", flag, value))
    assert line.startswith(f"error: {flag} must be ") and ", not " in line  # before the model is opened


def test_positional_and_option_model_agree_and_conflict(stories260k, tmp_path):
    by_option = gguflm("run", "-m", str(stories260k), "-p", "Once", "-n", "6", "--temp", "0", "-q")
    by_position = gguflm("run", str(stories260k), "-p", "Once", "-n", "6", "--temp", "0", "-q")
    assert by_option.returncode == 0 and by_option.stdout == by_position.stdout and by_option.stdout.strip()
    assert "give the model once" in one_error_line(gguflm("run", "a.gguf", "-m", "b.gguf", "-p", "x"))


def test_a_vocabulary_only_file_is_named_as_such(testdata):
    vocab = testdata / "vocab" / "ggml-vocab-llama-spm.gguf"
    assert "holds a vocabulary only" in one_error_line(gguflm("run", str(vocab), "-p", "x"))

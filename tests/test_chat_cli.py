"""`gguflm chat` in a pseudo-terminal (pexpect) and from a pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from test_chat_models import make_chat_models

CLI = [sys.executable, "-m", "gguflm.cli.main", "chat"]


@pytest.fixture(scope="module")
def chat_models(testdata, tmp_path_factory):
    return make_chat_models(tmp_path_factory.mktemp("chat_models"), testdata)


def env_for(tmp_path, term: str = "dumb") -> dict:
    # TERM=dumb: prompt_toolkit prints the prompt as plain text, so "> " can be matched.
    return dict(os.environ, OMP_NUM_THREADS="1", PROMPT_TOOLKIT_NO_CPR="1", TERM=term,
                XDG_DATA_HOME=str(tmp_path / "data"))


def spawn(tmp_path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(CLI[0], [*CLI[1:], *args], env=env_for(tmp_path), encoding="utf-8",
                          timeout=60, dimensions=(50, 200))
    child.expect("/help for commands")
    child.expect_exact("> ")
    return child


def turn(child: pexpect.spawn, line: str, until: str = r"context \d+/\d+") -> None:
    child.sendline(line)
    child.expect(until)
    child.expect_exact("> ")


def saved(child: pexpect.spawn, path) -> list[dict]:
    turn(child, f"/save {path}", "saved")
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_terminal_session_with_every_command(stories260k, tmp_path):
    child = spawn(tmp_path, "-m", str(stories260k), "--chat-template", "chatml", "-n", "8", "--temp", "0.8",
                  "--seed", "1", "--system", "Tell a story.")
    turn(child, "Hello")
    turn(child, "/system Be kind.", "system prompt: 'Be kind.'")
    child.sendline('"""first line')  # a multi-line block: no reply until the closing fence
    child.expect_exact("... ")
    child.sendline('second line"""')
    child.expect(r"context \d+/2048")
    child.expect_exact("> ")
    before = saved(child, tmp_path / "a.json")
    assert [m["role"] for m in before] == ["system", "user", "assistant", "user", "assistant"]
    assert before[0]["content"] == "Be kind." and before[3]["content"] == "first line\nsecond line"

    turn(child, "/regen")
    after = saved(child, tmp_path / "b.json")
    assert after[:4] == before[:4] and after[4]["content"] != before[4]["content"]

    turn(child, "/clear", "new conversation")
    assert saved(child, tmp_path / "c.json") == [{"role": "system", "content": "Be kind."}]
    turn(child, f"/load {tmp_path / 'b.json'}", "loaded 5 messages")
    assert saved(child, tmp_path / "d.json") == after
    turn(child, "/set temp 0", "temperature = 0")
    turn(child, "/stats", "prefilled")
    turn(child, "/nonsense", "unknown command")

    # Ctrl-C in the middle of a long reply: the reply stops, the session goes on.
    turn(child, "/set max_tokens 3000", "max_tokens = 3000")
    child.sendline("Go on")
    time.sleep(1.5)  # the reply is streaming (greedy stories260K runs on to the end of the context)
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("> ")
    stopped = saved(child, tmp_path / "e.json")
    assert stopped[:5] == after and stopped[5] == {"role": "user", "content": "Go on"}
    assert 0 < len(stopped[6]["content"])
    turn(child, "/set max_tokens 4", "max_tokens = 4")
    turn(child, "And then?")
    assert len(saved(child, tmp_path / "f.json")) == 9

    # Ctrl-C at an empty prompt asks first (even one sent while the prompt is still being set up);
    # Ctrl-D leaves.
    child.sendintr()
    child.expect("Ctrl-C again")
    child.expect_exact("> ")
    time.sleep(0.3)  # let the prompt take the terminal before the next key
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "data" / "gguflm" / "history").read_text(encoding="utf-8")
    assert "Hello" in history and "/regen" in history


def test_a_real_llama3_template_with_alt_enter_and_exit(chat_models, tmp_path):
    child = spawn(tmp_path, "-m", str(chat_models["llama3"]), "-n", "6", "--seed", "3")
    child.send("Hi\x1b\rthere\r")  # Alt-Enter (Esc Enter) puts a newline in the message
    child.expect(r"context \d+/1024")
    child.expect_exact("> ")
    messages = saved(child, tmp_path / "l.json")
    assert messages[0] == {"role": "user", "content": "Hi\nthere"} and messages[1]["role"] == "assistant"
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_piped_messages_get_one_reply_each_on_stdout(stories260k, tmp_path):
    import gguflm
    from gguflm.chat.session import ChatSession
    from gguflm.chat.template import ChatTemplate
    from gguflm.sampling import SamplingParams

    model = gguflm.load(stories260k, device="cpu")
    session = ChatSession(model.new_engine(), ChatTemplate.resolve("chatml", None), sampling=SamplingParams(temperature=0),
                          max_tokens=6)
    expected = "".join("".join(session.send(m)) + "\n" for m in ("Hello", "Tell me more"))
    result = subprocess.run(
        [*CLI, "-m", str(stories260k), "--chat-template", "chatml", "-n", "6", "--temp", "0"],
        input="Hello\n\n/set top_k 1\nTell me more\n", capture_output=True, text=True,
        env=env_for(tmp_path), timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert "top_k = 1" in result.stderr  # command output stays off stdout


@pytest.mark.parametrize("args, message", [
    (["--chat-template", "nope"], "unknown chat template"),
    (["--temp", "0", "--top-p", "0"], "--top-p must be above 0"),
])
def test_bad_options_are_one_line(stories260k, tmp_path, args, message):
    result = subprocess.run([*CLI, "-m", str(stories260k), *args], input="", capture_output=True, text=True,
                            env=env_for(tmp_path), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


# ---------------------------------------------------------------- replies that are empty, history, commands

QWEN25 = "Qwen-Qwen2.5-7B-Instruct.jinja"  # a template that writes a system prompt of its own


@pytest.fixture(scope="module")
def eog_model(tmp_path_factory):
    """A tiny model whose first greedy token is always end-of-generation (</s>, id 2): every token
    embeds to the same vector, the layers add nothing to it, and the head scores only </s>."""
    import numpy as np

    from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
    from gguflm.synthetic.vocab import spm_tokenizer

    n_vocab, dim, ffn = 300, 64, 128
    head = np.zeros((n_vocab, dim), np.float32)
    head[2] = 1.0
    zeros = {name: (np.zeros(shape, np.float32), None)
             for name, shape in (("blk.0.attn_output.weight", (dim, dim)), ("blk.0.ffn_down.weight", (dim, ffn)))}
    spec = SyntheticSpec(n_vocab=n_vocab, dim=dim, ffn_dim=ffn, n_layers=1, replace_tensors={
        "token_embd.weight": (np.ones((n_vocab, dim), np.float32), None), "output.weight": (head, None), **zeros})
    return write_synthetic_gguf(tmp_path_factory.mktemp("eog") / "eog.gguf", spec, tokenizer=spm_tokenizer(n_vocab))


def test_piped_empty_replies_still_get_one_line_each(eog_model, tmp_path):
    result = subprocess.run([*CLI, str(eog_model), "--chat-template", "chatml", "--temp", "0"],
                            input="Hello\nAnd again\n/stats\nLast\n", capture_output=True, text=True,
                            env=env_for(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n\n\n"  # three messages, three (empty) reply lines; /stats goes to stderr
    assert "eog" in result.stderr


def test_an_empty_reply_is_shown_in_the_terminal(eog_model, tmp_path):
    child = spawn(tmp_path, str(eog_model), "--chat-template", "chatml", "--temp", "0")
    turn(child, "Hello", r"\[empty reply")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def history_entries(tmp_path) -> list[str]:
    from prompt_toolkit.history import FileHistory

    path = tmp_path / "data" / "gguflm" / "history"
    return list(reversed(list(FileHistory(str(path)).load_history_strings()))) if path.exists() else []


def test_a_triple_quoted_block_is_one_history_entry(stories260k, tmp_path):
    child = spawn(tmp_path, str(stories260k), "--chat-template", "chatml", "-n", "4", "--temp", "0")
    turn(child, "Hello")
    child.sendline('"""first line')
    child.expect_exact("... ")
    child.sendline('second line"""')
    child.expect(r"context \d+/\d+")
    child.expect_exact("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert history_entries(tmp_path) == ["Hello", '"""first line\nsecond line"""', "/exit"]


@pytest.mark.parametrize("how", ["--no-history", "GGUFLM_NOHISTORY=1"])
def test_history_can_be_turned_off(stories260k, tmp_path, how):
    env = env_for(tmp_path)
    args = [*CLI[1:], str(stories260k), "--chat-template", "chatml", "-n", "4"]
    if how.startswith("--"):
        args.append(how)
    else:
        env["GGUFLM_NOHISTORY"] = "1"
    child = pexpect.spawn(CLI[0], args, env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect_exact("> ")
    turn(child, "Hello")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert not (tmp_path / "data" / "gguflm" / "history").exists()


def test_show_read_completion_and_stats_after_clear(stories260k, tmp_path):
    template = str(Path(stories260k).parents[1] / "chat_templates" / QWEN25)
    child = spawn(tmp_path, str(stories260k), "--chat-template", template, "-n", "4", "--temp", "0")
    turn(child, "/show system", "the template's own, none was set\\): 'You are Qwen, created by Alibaba Cloud")
    child.send("/sho\t")  # Tab completes the command name; the rest is typed after it
    child.send(" template\r")
    child.expect_exact("<|im_start|>assistant")
    child.expect_exact("> ")
    message = tmp_path / "message.txt"
    message.write_text("Once upon a time\nthere was a cat.\n", encoding="utf-8")
    turn(child, f"/read {message}")
    messages = saved(child, tmp_path / "s.json")
    assert messages[0] == {"role": "user", "content": "Once upon a time\nthere was a cat."}
    turn(child, "/clear", "new conversation")
    turn(child, "/stats", r"no reply yet in this conversation · context 0/\d+")
    turn(child, "/read", "needs a file name")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_the_dropped_turns_notice_comes_before_the_reply(stories260k, tmp_path):
    child = spawn(tmp_path, str(stories260k), "--chat-template", "chatml", "-c", "96", "-n", "16", "--temp", "0")
    dropped, stats = r"dropped the \d+ oldest turn", r"reply \d+ tok"
    for n in range(8):
        child.sendline(f"Tell me story number {n} please")
        if child.expect([dropped, stats]) == 0:
            child.expect(stats)  # the reply it made room for comes after it
            break
        assert child.expect([dropped, r"\n> "]) == 1, "the notice came after the reply"
    else:
        pytest.fail("no turn was dropped")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_a_redirected_stdout_gets_no_prompt_redraws(stories260k, tmp_path):
    out = tmp_path / "log.txt"
    command = " ".join([*CLI, str(stories260k), "--chat-template", "chatml", "-n", "4", "--temp", "0"])
    child = pexpect.spawn("bash", ["-c", f"exec {command} > {out}"], env=env_for(tmp_path),
                          encoding="utf-8", timeout=60, dimensions=(50, 200))
    child.expect_exact("> ")  # the terminal (stderr) still shows the prompt and the typing
    child.sendline("zebra quilt")
    child.expect_exact("zebra quilt")
    child.expect_exact("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    log = out.read_text(encoding="utf-8")
    assert "\x1b" not in log and "zebra" not in log and "> " not in log  # replies and notes only
    assert re.search(r"context \d+/2048", log) and "/help for commands" in log


def test_ctrl_c_waiting_at_the_prompt_is_a_key_not_a_signal(tmp_path):
    """Between replies Ctrl-C must reach the prompt as a key (it is read once the prompt runs), not as a
    SIGINT that could land while the prompt is being set up; outside that, it is a signal again."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import signal, sys\n"
        "from gguflm.cli.repl import ctrl_c_is_a_key\n"
        "signal.signal(signal.SIGINT, lambda *a: print('SIGINT', flush=True))\n"
        "with ctrl_c_is_a_key():\n"
        "    print('READY', flush=True)\n"
        "    print('READ', repr(sys.stdin.readline()), flush=True)\n"
        "print('AFTER', flush=True)\n"
        "sys.stdin.readline()\n", encoding="utf-8")
    child = pexpect.spawn(sys.executable, [str(script)], env=env_for(tmp_path), encoding="utf-8", timeout=60)
    child.expect_exact("READY")
    child.sendintr()
    child.sendline("")
    child.expect(r"READ '(.*)'\r")
    assert child.match.group(1) == "\\x03\\n"  # the Ctrl-C arrived as the character it is
    child.expect_exact("AFTER")
    child.sendintr()
    child.expect_exact("SIGINT")  # the terminal's own Ctrl-C handling is back
    child.sendline("")
    child.expect(pexpect.EOF)

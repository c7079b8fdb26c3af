"""`gguflm chat` in a pseudo-terminal (pexpect) and from a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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

    # Ctrl-C at an empty prompt asks first; Ctrl-D leaves.
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
    (["--temp", "0", "--top-p", "0"], "top_p"),
])
def test_bad_options_are_one_line(stories260k, tmp_path, args, message):
    result = subprocess.run([*CLI, "-m", str(stories260k), *args], input="", capture_output=True, text=True,
                            env=env_for(tmp_path), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr

"""The chat front end's pieces that need no model: thinking display, multi-line blocks, output routing."""

from __future__ import annotations

import io

import pytest

from gguflm.chat.thinking import ThinkingSplitter
from gguflm.cli.repl import DIM, RESET, ReplyPrinter, history_path, read_block

REPLY = "<think>\nLet me see.\n</think>\n\nThe answer is 4."


def split(pieces: list[str], thinking: bool = False) -> list[tuple[bool, str]]:
    s = ThinkingSplitter(thinking)
    runs = [run for p in pieces for run in s.feed(p)] + s.flush()
    merged: list[tuple[bool, str]] = []
    for kind, text in runs:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_thinking_is_split_out_even_when_tags_arrive_in_pieces(size):
    pieces = [REPLY[i : i + size] for i in range(0, len(REPLY), size)]
    assert split(pieces) == [(True, "\nLet me see.\n"), (False, "The answer is 4.")]


def test_a_prompt_that_opened_the_block_starts_inside_it():
    assert split(["plan</think>", "\n\nDone"], thinking=True) == [(True, "plan"), (False, "Done")]


def test_think_tags_inside_an_answer_are_just_text():
    text = "Use <think> tags, like <b>."
    assert split([text]) == [(False, text)]
    assert split(["a <thi", "nk"]) == [(False, "a <think")]


@pytest.mark.parametrize("hide, color, expected", [
    (False, False, "\nLet me see.\nThe answer is 4.\n"),
    (True, False, "The answer is 4.\n"),
    (False, True, f"{DIM}\nLet me see.\n{RESET}The answer is 4.\n"),
])
def test_printer_dims_or_hides_thinking(hide, color, expected):
    out = io.StringIO()
    printer = ReplyPrinter(out, color=color, hide_thinking=hide, thinking=lambda: False)
    for ch in REPLY:
        printer.feed(ch)
    printer.finish()
    assert out.getvalue() == expected


def test_an_empty_reply_still_ends_a_line_when_asked():
    out = io.StringIO()
    ReplyPrinter(out, False, False, lambda: False).finish(newline=True)
    assert out.getvalue() == "\n"


def test_multi_line_blocks():
    lines = iter(['second line', '  third"""'])
    assert read_block('"""first', lambda: next(lines)) == "first\nsecond line\n  third"
    assert read_block('"""one line"""', lambda: "") == "one line"
    unterminated = iter(["a"])
    assert read_block('"""', lambda: next(unterminated)) == "a"


def test_history_lives_under_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert history_path() == tmp_path / "gguflm" / "history"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert history_path().parts[-4:] == (".local", "share", "gguflm", "history")


def test_the_history_file_keeps_only_the_newest_entries(monkeypatch, tmp_path):
    from prompt_toolkit.history import FileHistory

    from gguflm.cli.repl import HISTORY_ENTRIES, make_history, trim_history

    path = tmp_path / "history"
    old = FileHistory(str(path))
    for n in range(30):
        old.store_string(f"message {n}\nwith a second line" if n % 7 == 0 else f"message {n}")
    trim_history(path, 25)
    kept = list(reversed(list(FileHistory(str(path)).load_history_strings())))
    assert kept[0] == "message 5" and kept[-1] == "message 29" and len(kept) == 25
    assert "message 28\nwith a second line" in kept  # multi-line entries survive whole
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the chat's own file is trimmed when it starts
    own = history_path()
    own.parent.mkdir(parents=True)
    big = FileHistory(str(own))
    for n in range(HISTORY_ENTRIES + 3):
        big.store_string(f"m{n}")
    make_history(True)
    assert len(list(FileHistory(str(own)).load_history_strings())) == HISTORY_ENTRIES

"""The command line's start-up: help, --version, option errors and `info` without torch or triton,
help that shows flags as flags, and the pieces a CPU-only install does without."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import gguflm

ENV = dict(os.environ, COLUMNS="120", NO_COLOR="1")
HEAVY = ("torch", "triton")
# Run the console entry point, then report which heavy packages it imported.
PROBE = """
import json, sys
sys.argv = ["gguflm", *json.loads(sys.argv[1])]
from gguflm.cli.main import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "triton"})
print("PROBE " + json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""
COMMANDS = ("info", "convert", "tokenize", "run", "chat", "bench")


def probe(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                            env=ENV, timeout=120)
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE "):]), result


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("--version",), *((c, "--help") for c in COMMANDS),
                                  ("run", "--temp", "nan"), ("run", "--bogus"), ("chat", "-n", "0"),
                                  ("run", "a.gguf", "-m", "b.gguf", "-p", "x")])
def test_help_version_and_option_errors_import_neither_torch_nor_triton(args):
    found, result = probe(*args)
    assert found["loaded"] == [], (args, found)
    assert "Traceback" not in result.stderr


def test_info_reads_a_model_without_torch(stories260k):
    found, result = probe("info", str(stories260k))
    assert found == {"code": 0, "loaded": []}, result.stderr
    assert "layers" in result.stdout and "5" in result.stdout


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "gguflm.cli.main", "--version"], capture_output=True, text=True,
                            env=ENV, timeout=60)
    assert result.returncode == 0 and result.stdout == f"gguflm {version('gguflm')}\n"
    assert gguflm.__version__ == version("gguflm")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_shows_flags_as_flags(command):
    from gguflm.cli.main import _register, app

    result = subprocess.run([sys.executable, "-m", "gguflm.cli.main", command, "--help"], capture_output=True,
                            text=True, env=ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "<bool>" not in text and "\\[" not in text and "\x1b[" not in text
    if not app.registered_commands:
        _register()
    assert bool_flags(command) or command == "bench"  # bench has no boolean option; the others do
    for flag in bool_flags(command):  # a flag's help line names it alone: no value after it
        assert re.search(rf"^\s+(-\w, )?{re.escape(flag)}\s{{2,}}\S", text, re.M), (flag, text)


def bool_flags(command: str) -> list[str]:
    """The --names of a command's boolean options, from its signature."""
    import inspect
    import typing

    from gguflm.cli.main import _register, app

    if not app.registered_commands:
        _register()
    callback = next(c.callback for c in app.registered_commands if c.name == command)
    flags = []
    for p in inspect.signature(callback, eval_str=True).parameters.values():
        hint, info = p.annotation, p.default
        if typing.get_origin(hint) is typing.Annotated:
            hint, info = typing.get_args(hint)[0], typing.get_args(hint)[1]
        if hint is bool and hasattr(info, "param_decls"):  # in Annotated, typer.Option("--x") holds it as default
            decls = [info.default, *info.param_decls] if isinstance(info.default, str) else info.param_decls
            flags += [d for d in decls if d.startswith("--")]
    return flags


def test_dir_lists_the_lazily_loaded_names():
    names = dir(gguflm)
    assert {"load", "Model", "SamplingParams", "GGUFLMError"} <= set(names)
    assert set(gguflm.__all__) <= set(names)


def test_the_triton_backend_without_triton_is_one_clear_error(monkeypatch):
    import torch

    from gguflm import backends
    from gguflm.errors import GGUFLMError

    monkeypatch.setattr(backends, "has_triton", lambda: False)
    with pytest.raises(GGUFLMError, match="needs the triton package"):
        backends.resolve_backend("triton", torch.device("cpu"))
    assert backends.resolve_backend(None, torch.device("cuda")) == "reference"  # the default falls back


def test_the_demo_model_ships_in_the_package_with_its_licences(stories260k):
    from gguflm.data import DEMO_MODEL

    assert DEMO_MODEL.read_bytes() == stories260k.read_bytes()
    licences = sorted(p.name for p in DEMO_MODEL.parent.glob("LICENSE.*"))
    assert licences == ["LICENSE.llama2.c.txt", "LICENSE.stories260K-gguf.txt"]
    assert all("MIT" in (DEMO_MODEL.parent / n).read_text() or "Permission is hereby granted" in
               (DEMO_MODEL.parent / n).read_text() for n in licences)

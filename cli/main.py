"""The `gguflm` typer app: each command module registers one thin command.

Start-up stays light: this module and the command modules import neither torch nor triton (nor
gguf's numpy-backed reader); each command imports what it needs when it runs, so `--help`, an
option error and `--version` answer at once.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Annotated, Optional

import typer

from gguflm.cli.options import PROCESS_START  # noqa: F401  (read now: the timings count from here)
from gguflm.errors import GGUFLMError, printable
from gguflm.threads import prefer_passive_openmp

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: instant, and flags read as flags with every typer
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run GGUF language models on NVIDIA GPUs (and, slowly, on the CPU).",
)


def _version(value: bool) -> None:
    if value:
        from gguflm import __version__

        typer.echo(f"gguflm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Run GGUF language models on NVIDIA GPUs (and, slowly, on the CPU).

    With no model, `run` and `chat` use a tiny bundled demo model (stories260K).
    """


def _register() -> None:
    # Each command module registers its own command; they import their heavy parts only when run.
    from gguflm.cli import bench, chat, convert, info, quantize, run, serve, tokenize

    for module in (info, convert, quantize, tokenize, run, chat, bench, serve):
        module.register(app)
    for command in app.registered_commands:
        command.callback = _interruptible(command.callback)


def _interruptible(command):
    """Ctrl-C inside a command: one "interrupted" line and exit code 130, whatever typer's version does."""

    @functools.wraps(command)  # typer reads the options from the wrapped signature
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


_WRITE_FAILURES = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)


def _out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")  # torch is loaded by then if the error came from it
    return isinstance(e, MemoryError) or (torch is not None and isinstance(e, torch.OutOfMemoryError))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1; Ctrl-C one
    "interrupted" line and exit code 130."""
    prefer_passive_openmp()  # read by OpenMP when torch loads, later
    _register()
    try:
        app()
    except GGUFLMError as e:
        print(f"error: {printable(str(e), 1000)}", file=sys.stderr)  # one line, whatever a file put in it
        sys.exit(1)
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print("error: out of memory: the model or its context does not fit (try a smaller --ctx)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before or after a command runs
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in _WRITE_FAILURES:
            raise
        # stdout is full or broken (a full disk, a lost terminal): say so once, and drop what is still buffered
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

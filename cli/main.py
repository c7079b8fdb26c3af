"""The `gguflm` typer app: each command module registers one thin command."""

from __future__ import annotations

import sys

import typer

from gguflm.errors import GGUFLMError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run GGUF language models on NVIDIA GPUs (and, slowly, on the CPU).",
)


@app.callback()
def _root() -> None:
    """Run GGUF language models on NVIDIA GPUs (and, slowly, on the CPU)."""


def _register() -> None:
    # Each command module registers its own command; importing them here keeps `import gguflm.cli.main` light.
    from gguflm.cli import bench, chat, info, convert, run, serve, tokenize

    for module in (info, convert, tokenize, run, chat, bench, serve):
        module.register(app)


def _out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")  # torch is loaded by then if the error came from it
    return isinstance(e, MemoryError) or (torch is not None and isinstance(e, torch.OutOfMemoryError))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    _register()
    try:
        app()
    except GGUFLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print("error: out of memory: the model or its context does not fit (try a smaller --ctx)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

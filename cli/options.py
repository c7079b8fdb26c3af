"""Typed options shared by `gguflm run` and `gguflm chat`, and the few helpers both call."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import gguf
import typer

from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams

# ---------------------------------------------------------------- options

DEFAULTS = SamplingParams()  # llama.cpp's sampling defaults, the commands' option defaults

ModelPath = Annotated[Path, typer.Option("--model", "-m", help="A GGUF model file.", show_default=False)]
Ctx = Annotated[
    Optional[int],
    typer.Option(
        "--ctx", "-c", help="Context size in tokens (default: the model's, capped on the CPU).", show_default=False
    ),
]
def _n_predict(value: int) -> int:
    if value == 0:  # checked while parsing, before any model is loaded
        raise GGUFLMError("--n-predict must be positive, or -1 for no limit")
    return value


NPredict = Annotated[
    int,
    typer.Option("--n-predict", "-n", callback=_n_predict,
                 help="Most tokens to generate; -1: until end of generation or context full."),
]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (default: random).", show_default=False)]
Temp = Annotated[float, typer.Option("--temp", help="Temperature; 0 is greedy.")]
TopK = Annotated[int, typer.Option("--top-k", help="Keep the k likeliest tokens; 0: off.")]
TopP = Annotated[float, typer.Option("--top-p", help="Keep the smallest set with this much probability; 1: off.")]
MinP = Annotated[float, typer.Option("--min-p", help="Drop tokens below min-p times the top probability; 0: off.")]
RepeatPenalty = Annotated[float, typer.Option("--repeat-penalty", help="Penalty on recently seen tokens; 1: off.")]
RepeatLastN = Annotated[int, typer.Option("--repeat-last-n", help="How many recent tokens the penalty looks at.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
ChatTemplateOpt = Annotated[
    Optional[str],
    typer.Option(
        "--chat-template",
        help="A built-in template name (chatml, llama3, qwen, ...) or a .jinja file (default: the model's).",
        show_default=False,
    ),
]
System = Annotated[Optional[str], typer.Option("--system", help="The system prompt.", show_default=False)]
NoGraph = Annotated[bool, typer.Option("--no-graph", help="Decode eagerly, without CUDA graphs.")]


def sampling_params(
    temp: float, top_k: int, top_p: float, min_p: float, repeat_penalty: float, repeat_last_n: int, seed: int | None
) -> SamplingParams:
    """The command line's sampling options as SamplingParams (invalid values raise GGUFLMError)."""
    return SamplingParams(
        temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
        repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed,
    )


def max_tokens(n_predict: int, ctx: int) -> int:
    """-1 (or any negative) means: until end of generation or the context is full."""
    return ctx if n_predict < 0 else n_predict


# ---------------------------------------------------------------- loading


def status(message: str):
    """A rich spinner on stderr while something slow runs, only when stderr is a terminal."""
    from contextlib import nullcontext

    if not sys.stderr.isatty():
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message, spinner="dots")


def load_model(path: Path, device: str):
    """Load a model under a spinner; returns (model, seconds taken)."""
    import gguflm

    started = time.perf_counter()
    with status(f"loading {path.name}"):
        model = gguflm.load(path, device=device)
        model.tokenizer  # built here, under the spinner, not at the first prompt
    return model, time.perf_counter() - started


def make_engine(model, ctx: int | None, no_graph: bool):
    """An Engine over `model`: CUDA graphs on a GPU unless --no-graph."""
    from gguflm.engine import Engine

    return Engine(model, ctx, graphs=False if no_graph else None)


def chat_template(model, option: str | None):
    """The template named by --chat-template, else the model's own, with the vocab's BOS/EOS texts."""
    from gguflm.chat_template import ChatTemplate

    tok = model.tokenizer
    bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
    eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
    return ChatTemplate.resolve(option, model.file.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE, None, str), bos, eos)

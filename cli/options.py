"""Typed options shared by `gguflm run` and `gguflm chat`, and the few helpers both call."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

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
CACHE_TYPE_NAMES = ("f32", "f16", "bf16", "q8_0", "q4_0")  # gguflm.kv_cache.CACHE_TYPES, named without torch


def _cache_type(value: str | None) -> str | None:
    if value is not None and value not in CACHE_TYPE_NAMES:  # checked while parsing, before any model is loaded
        raise GGUFLMError(f"unknown cache type '{value}' (choose from {', '.join(CACHE_TYPE_NAMES)})")
    return value


CacheTypeK = Annotated[Optional[str], typer.Option(
    "--cache-type-k", "-ctk", callback=_cache_type, show_default=False,
    help="KV cache type for K: f32, f16, bf16, q8_0 or q4_0 (default: f32 on the CPU, f16/bf16 on a GPU).")]
CacheTypeV = Annotated[Optional[str], typer.Option(
    "--cache-type-v", "-ctv", callback=_cache_type, show_default=False,
    help="KV cache type for V, as for K.")]


@dataclass
class ModelOptions:
    """The options `run` and `chat` share: which model, where, and how much to generate."""

    model: ModelPath
    ctx: Ctx = None
    n_predict: NPredict = -1
    system: System = None
    chat_template: ChatTemplateOpt = None
    device: Device = "auto"
    no_graph: NoGraph = False
    cache_type_k: CacheTypeK = None
    cache_type_v: CacheTypeV = None


# parameter -> (its option, the SamplingParams field it sets); the defaults are llama.cpp's
SAMPLING_OPTIONS = {
    "temp": (Temp, "temperature"), "top_k": (TopK, "top_k"), "top_p": (TopP, "top_p"), "min_p": (MinP, "min_p"),
    "repeat_penalty": (RepeatPenalty, "repeat_penalty"), "repeat_last_n": (RepeatLastN, "repeat_last_n"),
    "seed": (Seed, "seed"),
}


def option_groups(command: Callable) -> Callable:
    """Expand a command's grouped parameters into their options, declared once for every command.

    A parameter `opts: ModelOptions` becomes that dataclass's options; a parameter `sampling`
    becomes the sampling options (--temp ... --seed). The command receives each group as one
    object (invalid sampling values raise GGUFLMError before anything is loaded).
    """
    kind = inspect.Parameter.KEYWORD_ONLY
    groups: dict[str, Callable[[dict], object]] = {}  # parameter -> builds it from the parsed options
    params = []
    for p in inspect.signature(command, eval_str=True).parameters.values():
        if p.name == "sampling":
            params += [inspect.Parameter(name, kind, annotation=option, default=getattr(DEFAULTS, field))
                       for name, (option, field) in SAMPLING_OPTIONS.items()]
            groups[p.name] = lambda kw: SamplingParams(**{f: kw.pop(n) for n, (_, f) in SAMPLING_OPTIONS.items()})
        elif dataclasses.is_dataclass(p.annotation):
            cls, hints = p.annotation, typing.get_type_hints(p.annotation, include_extras=True)
            fields = dataclasses.fields(cls)
            params += [inspect.Parameter(f.name, kind, annotation=hints[f.name],
                                         default=inspect.Parameter.empty if f.default is dataclasses.MISSING
                                         else f.default) for f in fields]
            groups[p.name] = lambda kw, cls=cls, fields=fields: cls(**{f.name: kw.pop(f.name) for f in fields})
        else:
            params.append(p.replace(kind=kind))
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    @functools.wraps(command)
    def wrapper(**kwargs):
        kwargs = {**defaults, **kwargs}
        built = {name: build(kwargs) for name, build in groups.items()}
        return command(**kwargs, **built)

    wrapper.__signature__ = inspect.Signature(params)
    return wrapper


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


def make_engine(model, opts: ModelOptions):
    """The model's engine: CUDA graphs on a GPU unless --no-graph, the KV cache types asked for."""
    return model.new_engine(opts.ctx, graphs=False if opts.no_graph else None, cache_type_k=opts.cache_type_k,
                            cache_type_v=opts.cache_type_v)


def chat_template(model, option: str | None):
    """The template named by --chat-template, else the model's own."""
    from gguflm.chat.template import ChatTemplate

    return ChatTemplate.for_model(model, option)

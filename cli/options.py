"""Typed options shared by `gguflm run` and `gguflm chat`, and the few helpers both call.

Nothing here imports torch: `--help` and every option error are answered before it loads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from gguflm.errors import GGUFLMError
from gguflm.sampling_params import SamplingParams, problem

# ---------------------------------------------------------------- options

DEFAULTS = SamplingParams()  # llama.cpp's sampling defaults, the commands' option defaults
RUN_N_PREDICT = 256  # `run`'s default -n: a model that never ends its text still stops

ModelArg = Annotated[
    Optional[Path],
    typer.Argument(help="A GGUF model file (default: the bundled demo model, stories260K).", show_default=False,
                   metavar="MODEL"),
]
ModelPath = Annotated[
    Optional[Path], typer.Option("--model", "-m", help="The model file, as an option.", show_default=False)
]
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


def n_predict_option(default_help: str) -> typer.models.OptionInfo:
    return typer.Option("--n-predict", "-n", callback=_n_predict, help=f"Most tokens to generate; {default_help}")


NPredictRun = Annotated[int, n_predict_option("-1: until end of generation or the context is full.")]
NPredictChat = Annotated[int, n_predict_option("-1: until the model ends its turn or the context is full.")]


def _checked(field: str, flag: str) -> Callable:
    """A parse-time check of one sampling option, naming the flag in its error."""

    def check(value):
        found = problem(field, value, flag)
        if found:
            raise GGUFLMError(found)
        return value

    return check


def _sampling_option(flag: str, field: str, help: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(flag, help=help, callback=_checked(field, flag), **kw)


Seed = Annotated[Optional[int], _sampling_option("--seed", "seed", "Sampling seed (default: random).",
                                                  show_default=False)]
Temp = Annotated[float, _sampling_option("--temp", "temperature", "Temperature; 0 is greedy.")]
TopK = Annotated[int, _sampling_option("--top-k", "top_k", "Keep the k likeliest tokens; 0: off.")]
TopP = Annotated[float, _sampling_option("--top-p", "top_p", "Keep the smallest set with this much probability; 1: off.")]
MinP = Annotated[float, _sampling_option("--min-p", "min_p",
                                         "Drop tokens below min-p times the top probability; 0: off.")]
RepeatPenalty = Annotated[float, _sampling_option("--repeat-penalty", "repeat_penalty",
                                                  "Penalty on recently seen tokens; 1: off.")]
RepeatLastN = Annotated[int, _sampling_option("--repeat-last-n", "repeat_last_n",
                                              "How many recent tokens the penalty looks at.")]
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


def _threads(value: int | None) -> int | None:
    if value is not None and value < 1:  # checked while parsing, before any model is loaded
        raise GGUFLMError(f"--threads must be at least 1, not {value}")
    return value


Threads = Annotated[Optional[int], typer.Option(
    "--threads", "-t", callback=_threads, show_default=False,
    help="CPU threads that compute (default: one per physical core; the GPU path ignores it).")]
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
    """The options `run` and `chat` share: which model, where, and with what context."""

    model_file: ModelArg = None
    model: ModelPath = None
    ctx: Ctx = None
    system: System = None
    chat_template: ChatTemplateOpt = None
    device: Device = "auto"
    no_graph: NoGraph = False
    cache_type_k: CacheTypeK = None
    cache_type_v: CacheTypeV = None
    threads: Threads = None

    def path(self) -> tuple[Path, bool]:
        """The model file and whether it is the bundled demo model (when neither MODEL nor -m is given)."""
        if self.model is not None and self.model_file is not None:
            raise GGUFLMError("give the model once: as MODEL or with -m, not both")
        chosen = self.model if self.model is not None else self.model_file
        if chosen is not None:
            return chosen, False
        from gguflm.data import DEMO_MODEL

        return DEMO_MODEL, True


DEMO_NOTICE = ("no model given: using the bundled demo model stories260K (it only writes tiny stories; "
               "give a GGUF file as MODEL to run a real one)")

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
    object (invalid sampling values raise GGUFLMError while parsing, before anything is loaded).
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


def read_text_file(path: str | Path, what: str = "the file") -> str:
    """A UTF-8 text file's contents, or one GGUFLMError naming `what` and the path."""
    path = Path(path).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise GGUFLMError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise GGUFLMError(f"{what} {str(path)!r} is not UTF-8 text") from None


# ---------------------------------------------------------------- loading


def status(message: str):
    """A rich spinner on stderr while something slow runs, only when stderr is a terminal."""
    from contextlib import nullcontext

    if not sys.stderr.isatty():
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message, spinner="dots")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_model(opts: ModelOptions, quiet: bool = False):
    """Load the chosen model (saying so when it is the demo one) under a spinner; returns (model, seconds)."""
    path, demo = opts.path()
    if demo and not quiet:
        print(DEMO_NOTICE, file=sys.stderr)
    started = time.perf_counter()
    with status(f"loading {path.name}"):
        import gguflm

        model = gguflm.load(path, device=opts.device, threads=opts.threads)
        model.tokenizer  # built here, under the spinner, not at the first prompt
    return model, time.perf_counter() - started


def make_engine(model, opts: ModelOptions, quiet: bool = False):
    """The model's engine (CUDA graphs on a GPU unless --no-graph, the KV cache types asked for), with a warning for a context
    longer than the model was trained for (llama.cpp warns too: quality falls apart past it)."""
    trained = model.config.n_ctx_train
    if opts.ctx is not None and opts.ctx > trained and not quiet:
        warn(f"--ctx {opts.ctx} is more than the {trained} tokens the model was trained for: "
             "text past that point is likely to degrade")
    engine = model.new_engine(opts.ctx, graphs=False if opts.no_graph else None, cache_type_k=opts.cache_type_k,
                              cache_type_v=opts.cache_type_v)
    if engine.context_message and not quiet:
        print(engine.context_message, file=sys.stderr)
    return engine


def chat_template(model, opts: ModelOptions):
    """The template named by --chat-template, else the model's own (ChatML for the demo model, which has none)."""
    from gguflm.chat.template import ChatTemplate

    option = opts.chat_template
    if option is None and opts.path()[1]:
        option = "chatml"
    return ChatTemplate.for_model(model, option)


# ---------------------------------------------------------------- time since the process started


def _process_start() -> float:
    """When this process started, on the CLOCK_BOOTTIME clock (Linux, 10 ms ticks); else now."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22, starttime, after "pid (comm) "
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return _now()


def _now() -> float:
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


PROCESS_START = _process_start()  # read once at import, which the console script does first


def since_start() -> float:
    """Seconds since the process started (interpreter start-up and every import included)."""
    return _now() - PROCESS_START

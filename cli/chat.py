"""`gguflm chat`: a multi-turn conversation in the terminal, the KV cache kept between turns."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gguflm.cli import options as o
from gguflm.sampling_params import SamplingParams


@o.option_groups
def chat(
    *,
    opts: o.ModelOptions,
    n_predict: o.NPredictChat = -1,
    hide_thinking: Annotated[
        bool, typer.Option("--hide-thinking", help="Do not show a reasoning model's <think> part.")
    ] = False,
    no_history: Annotated[
        bool,
        typer.Option("--no-history", envvar="GGUFLM_NOHISTORY",
                     help="Keep no input history on disk (default: ~/.local/share/gguflm/history)."),
    ] = False,
    sampling: SamplingParams,
) -> None:
    """Chat with a model (default: the bundled demo model); /help lists the commands.

    From a pipe, each stdin line is a message (or a /command) and stdout gets one reply line per message, without thinking.
    """
    from gguflm.chat.session import ChatSession
    from gguflm.cli.repl import Repl

    loaded, seconds = o.load_model(opts)
    template = o.chat_template(loaded, opts)
    engine = o.make_engine(loaded, opts)
    session = ChatSession(engine, template, system=opts.system, sampling=sampling, max_tokens=n_predict)
    interactive = sys.stdin.isatty()
    repl = Repl(session, hide_thinking=hide_thinking, interactive=interactive, history=not no_history)
    if not interactive:
        repl.run_lines(sys.stdin)
        return
    repl.info(f"{opts.path()[0].name} on {loaded.device} · loaded in {seconds:.1f} s · {engine.cache_summary}")
    repl.run_terminal()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)

"""`gguflm chat`: a multi-turn conversation in the terminal, the KV cache kept between turns."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gguflm.cli import options as o
from gguflm.sampling import SamplingParams


@o.option_groups
def chat(
    *,
    opts: o.ModelOptions,
    hide_thinking: Annotated[
        bool, typer.Option("--hide-thinking", help="Do not show a reasoning model's <think> part.")
    ] = False,
    sampling: SamplingParams,
) -> None:
    """Chat with a model; /help lists the commands.

    From a pipe, each stdin line is a message (or a /command) and stdout gets one reply per message, without thinking.
    """
    from gguflm.chat.session import ChatSession
    from gguflm.cli.repl import Repl

    loaded, seconds = o.load_model(opts.model, opts.device)
    template = o.chat_template(loaded, opts.chat_template)
    engine = o.make_engine(loaded, opts)
    session = ChatSession(engine, template, system=opts.system, sampling=sampling, max_tokens=opts.n_predict)
    interactive = sys.stdin.isatty()
    repl = Repl(session, hide_thinking=hide_thinking, interactive=interactive)
    if engine.context_message:
        print(engine.context_message, file=sys.stderr)
    if not interactive:
        repl.run_lines(sys.stdin)
        return
    repl.info(f"{opts.model.name} on {loaded.device} · loaded in {seconds:.1f} s · {engine.cache_summary}")
    repl.run_terminal()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)

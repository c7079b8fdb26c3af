"""`gguflm chat`: a multi-turn conversation in the terminal, the KV cache kept between turns."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gguflm.cli import options as o


def chat(
    model: o.ModelPath,
    system: o.System = None,
    ctx: o.Ctx = None,
    n_predict: o.NPredict = -1,
    temp: o.Temp = o.DEFAULTS.temperature,
    top_k: o.TopK = o.DEFAULTS.top_k,
    top_p: o.TopP = o.DEFAULTS.top_p,
    min_p: o.MinP = o.DEFAULTS.min_p,
    repeat_penalty: o.RepeatPenalty = o.DEFAULTS.repeat_penalty,
    repeat_last_n: o.RepeatLastN = o.DEFAULTS.repeat_last_n,
    seed: o.Seed = None,
    chat_template: o.ChatTemplateOpt = None,
    device: o.Device = "auto",
    no_graph: o.NoGraph = False,
    hide_thinking: Annotated[
        bool, typer.Option("--hide-thinking", help="Do not show a reasoning model's <think> part.")
    ] = False,
) -> None:
    """Chat with a model; /help lists the commands.

    From a pipe, each stdin line is a message (or a /command) and stdout gets one reply per message, without thinking.
    """
    from gguflm.chat_session import ChatSession
    from gguflm.cli.repl import Repl

    sampling = o.sampling_params(temp, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
    loaded, seconds = o.load_model(model, device)
    template = o.chat_template(loaded, chat_template)
    engine = o.make_engine(loaded, ctx, no_graph)
    session = ChatSession(engine, template, system=system, sampling=sampling, max_tokens=n_predict)
    interactive = sys.stdin.isatty()
    repl = Repl(session, hide_thinking=hide_thinking, interactive=interactive)
    if engine.context_message:
        print(engine.context_message, file=sys.stderr)
    if not interactive:
        repl.run_lines(sys.stdin)
        return
    repl.info(f"{model.name} on {loaded.device} · loaded in {seconds:.1f} s · context {engine.ctx} tokens")
    repl.run_terminal()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)

"""`gguflm run`: one prompt in, the continuation streamed to stdout; timings go to stderr."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from gguflm.cli import options as o
from gguflm.errors import GGUFLMError
from gguflm.sampling_params import SamplingParams


def read_prompt(prompt: str | None, file: Path | None) -> str:
    """-p TEXT, -f FILE, or stdin for `-p -` or when stdin is a pipe (one trailing newline dropped)."""
    if prompt is not None and file is not None:
        raise GGUFLMError("give the prompt once: with -p or with -f, not both")
    if file is not None:
        text = o.read_text_file(file, "the prompt file")
    elif prompt is not None and prompt != "-":
        return prompt
    elif prompt is None and sys.stdin.isatty():
        raise GGUFLMError("give a prompt with -p TEXT or -f FILE, or pipe it in (-p - reads stdin)")
    else:
        text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


@o.option_groups
def run(
    *,
    opts: o.ModelOptions,
    prompt: Annotated[
        Optional[str],
        typer.Option(
            "--prompt", "-p", help="The prompt; '-' reads stdin (default: stdin when it is a pipe).", show_default=False
        ),
    ] = None,
    file: Annotated[
        Optional[Path], typer.Option("--file", "-f", help="Read the prompt from this file.", show_default=False)
    ] = None,
    n_predict: o.NPredictRun = o.RUN_N_PREDICT,
    stop: Annotated[
        Optional[List[str]],
        typer.Option("--stop", metavar="TEXT", help="Stop before this text (repeat the option for several).",
                     show_default=False),
    ] = None,
    chat: Annotated[
        bool, typer.Option("--chat", help="Wrap the prompt in the chat template as one user message.")
    ] = False,
    verbose_prompt: Annotated[
        bool, typer.Option("--verbose-prompt", help="Print the prompt's tokens to stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Nothing but the text: no timings, no notices.")] = False,
    sampling: SamplingParams,
) -> None:
    """Complete a prompt (raw text, BOS added as the vocab asks) or answer it as a chat message (--chat).

    With no MODEL it runs the bundled demo model; -n defaults to 256 tokens (-1: no limit).
    """
    if not chat and (opts.system is not None or opts.chat_template is not None):
        raise GGUFLMError("--system and --chat-template only apply with --chat")
    text = read_prompt(prompt, file)
    loaded, load_seconds = o.load_model(opts, quiet)
    tok = loaded.tokenizer
    engine = o.make_engine(loaded, opts, quiet)
    if chat:
        from gguflm.chat.session import encode_rendered

        system = [{"role": "system", "content": opts.system}] if opts.system else []
        text = o.chat_template(loaded, opts).render(system + [{"role": "user", "content": text}])
    engine.check_text(text)  # before the tokenizer spends time on a text that cannot fit
    ids = encode_rendered(tok, text) if chat else tok.encode(text, add_special=True, parse_special=True)
    engine.check_prompt(ids)
    if not quiet:
        print(engine.cache_summary, file=sys.stderr)
    if verbose_prompt:
        for t in ids:
            print(f"{t:>8} -> {tok.token_to_piece(t)!r}", file=sys.stderr)
    budget = o.max_tokens(n_predict, engine.ctx)

    out, last, interrupted, first_token = sys.stdout, "\n", False, None
    try:
        for piece in engine.generate(ids, budget, sampling, stop_strings=stop or ()):
            if first_token is None:
                first_token = o.since_start()
            if piece:
                out.write(piece)
                out.flush()
                last = piece
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly, as a pipeline expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()
    if not quiet:
        print(timings(load_seconds, first_token, engine.stats.last), file=sys.stderr)
    if interrupted:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130)


def timings(load_seconds: float, first_token: float | None, t) -> str:
    """One line: load time, time to first token since the process started, prompt and generation
    speed, and why generation stopped."""
    ttft = f"first token {first_token:.2f} s after start" if first_token is not None else "no token"
    reason = "Ctrl-C" if t.finish_reason in ("", "interrupted") else t.finish_reason  # "interrupted" follows alone
    return (
        f"load {load_seconds:.2f} s · {ttft} · prompt {t.prompt_tokens} tok ({t.prefilled_tokens} prefilled), "
        f"{t.prefill_tok_s:.1f} tok/s · generated {t.generated_tokens} tok, {t.decode_tok_s:.1f} tok/s · "
        f"stopped by {reason}"
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run)

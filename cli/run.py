"""`gguflm run`: one prompt in, the continuation streamed to stdout; timings go to stderr."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from gguflm.cli import options as o
from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams


def read_prompt(prompt: str | None) -> str:
    """-p TEXT, or stdin for `-p -` or when stdin is a pipe (one trailing newline dropped)."""
    if prompt is not None and prompt != "-":
        return prompt
    if prompt is None and sys.stdin.isatty():
        raise GGUFLMError("give a prompt with -p TEXT, or pipe it in (-p - reads stdin)")
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
    chat: Annotated[
        bool, typer.Option("--chat", help="Wrap the prompt in the chat template as one user message.")
    ] = False,
    verbose_prompt: Annotated[
        bool, typer.Option("--verbose-prompt", help="Print the prompt's tokens to stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No timings on stderr.")] = False,
    sampling: SamplingParams,
) -> None:
    """Complete a prompt (raw text, BOS added as the vocab asks) or answer it as a chat message (--chat)."""
    from gguflm.chat.session import encode_rendered

    if not chat and (opts.system is not None or opts.chat_template is not None):
        raise GGUFLMError("--system and --chat-template only apply with --chat")
    text = read_prompt(prompt)
    loaded, load_seconds = o.load_model(opts.model, opts.device)
    tok = loaded.tokenizer
    engine = o.make_engine(loaded, opts)
    if chat:
        system = [{"role": "system", "content": opts.system}] if opts.system else []
        text = o.chat_template(loaded, opts.chat_template).render(system + [{"role": "user", "content": text}])
    engine.check_text(text)  # before the tokenizer spends time on a text that cannot fit
    ids = encode_rendered(tok, text) if chat else tok.encode(text, add_special=True, parse_special=True)
    engine.check_prompt(ids)
    if not quiet:
        for line in (engine.context_message, engine.cache_summary):
            if line:
                print(line, file=sys.stderr)
    if verbose_prompt:
        for t in ids:
            print(f"{t:>8} -> {tok.token_to_piece(t)!r}", file=sys.stderr)
    budget = o.max_tokens(opts.n_predict, engine.ctx)

    out, last, interrupted = sys.stdout, "\n", False
    try:
        for piece in engine.generate(ids, budget, sampling):
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
        print(timings(load_seconds, engine.stats.last), file=sys.stderr)
    if interrupted:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130)


def timings(load_seconds: float, t) -> str:
    """One line: load time, prompt speed, generation speed and why generation stopped."""
    return (
        f"load {load_seconds:.2f} s · prompt {t.prompt_tokens} tok ({t.prefilled_tokens} prefilled), "
        f"{t.prefill_tok_s:.1f} tok/s · generated {t.generated_tokens} tok, {t.decode_tok_s:.1f} tok/s · "
        f"stopped by {t.finish_reason or 'interrupt'}"
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run)

"""`gguflm serve`: an OpenAI-compatible HTTP server with continuous batching."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gguflm.cli import options as o
from gguflm.sampling_params import SamplingParams


@o.option_groups
def serve(
    *,
    model: o.ModelPath,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    parallel: Annotated[int, typer.Option("--parallel", "-np", help="Sequences decoded together (cache slots).")] = 4,
    ctx: o.Ctx = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="GGUFLM_API_KEY", show_default=False,
        help="Require 'Authorization: Bearer KEY' on every route but /health.")] = None,
    chat_template: o.ChatTemplateOpt = None,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests that may wait for a slot; more get 503.")] = 64,
    alias: Annotated[Optional[str], typer.Option(
        "--alias", show_default=False, help="The model name clients use (default: the file name, less .gguf).")] = None,
    device: o.Device = "auto",
    no_graph: o.NoGraph = False,
    cache_type_k: o.CacheTypeK = None,
    cache_type_v: o.CacheTypeV = None,
    threads: o.Threads = None,
    sampling: SamplingParams,
) -> None:
    """Serve a model over OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics).

    -c/--ctx is each sequence's context; the sampling options are the defaults for fields a request leaves out.
    """
    from gguflm.server.serve import serve as run_server

    run_server(Path(model), host=host, port=port, parallel=parallel, ctx=ctx, api_key=api_key,
               chat_template=chat_template, max_queue=max_queue, sampling=sampling, device=device,
               graphs=False if no_graph else None, cache_type_k=cache_type_k, cache_type_v=cache_type_v, alias=alias,
               threads=threads)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

"""`serve`: load a model, give its engine one cache slot per parallel sequence, run the app under uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

from gguflm.errors import GGUFLMError
from gguflm.sampling import SamplingParams


def serve(model_path: Path, host: str = "127.0.0.1", port: int = 8080, parallel: int = 4, ctx: int | None = None,
          api_key: str | None = None, chat_template: str | None = None, max_queue: int = 64,
          sampling: SamplingParams | None = None, device: str = "auto", graphs: bool | None = None,
          cache_type_k: str | None = None, cache_type_v: str | None = None, alias: str | None = None,
          threads: int | None = None) -> None:
    """Serve until interrupted; `ctx` is each sequence's context (default: the model's, capped to fit);
    `threads`: CPU threads that compute (default: the physical cores)."""
    import uvicorn

    import gguflm
    from gguflm.chat.template import ChatTemplate
    from gguflm.server.app import Server, ServerConfig, build_app

    if parallel < 1:
        raise GGUFLMError(f"--parallel must be at least 1, not {parallel}")
    if max_queue < 0:
        raise GGUFLMError(f"--max-queue must be 0 or more, not {max_queue}")
    if not 0 <= port < 65536:
        raise GGUFLMError(f"--port must be between 0 and 65535, not {port}")
    model = gguflm.load(model_path, device=device, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                        threads=threads)
    if not model.has_tokenizer:
        raise GGUFLMError("the model file has no tokenizer, so it cannot serve text")
    model.tokenizer.encode("warm up")  # build the encoder now, not on the first request
    try:
        template = ChatTemplate.for_model(model, chat_template)
    except GGUFLMError:
        if chat_template is not None:
            raise
        template = None  # no template in the file: /v1/completions only, chat requests get a clear 400
        print("the model has no chat template: /v1/chat/completions is off (use --chat-template)", file=sys.stderr)
    engine = model.new_engine(ctx, graphs=graphs, slots=parallel)
    name = alias or Path(model_path).name.removesuffix(".gguf")
    config = ServerConfig(name, api_key, max_queue, sampling or SamplingParams())
    app = build_app(Server(model, engine, template, config))
    for line in (engine.context_message, engine.cache_summary):
        if line:
            print(line, file=sys.stderr)
    print(f"serving {name} on http://{host}:{port} ({parallel} parallel sequences)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

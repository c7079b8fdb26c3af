"""The ASGI app (starlette): OpenAI's routes translated into `Sequence`s, their events into responses.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics.
With an API key every route but /health needs `Authorization: Bearer KEY`. Bodies are read up to
MAX_BODY bytes; anything malformed is answered with OpenAI's error object and the server goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gguflm import __version__
from gguflm.chat.session import encode_rendered
from gguflm.chat.template import ChatTemplate
from gguflm.errors import GGUFLMError, shown
from gguflm.sampling import Sampler, SamplingParams
from gguflm.server import protocol as p
from gguflm.server.errors import APIError, error_response, invalid_request
from gguflm.server.metrics import CONTENT_TYPE, Metrics
from gguflm.server.scheduler import QueueFull, Scheduler
from gguflm.server.sequence import Event, Sequence
from gguflm.server.slots import SlotManager
from gguflm.server.worker import Worker

MAX_BODY = 16 << 20  # bytes of a request body; a larger one is refused (413)
DRAIN_MAX = 4 * MAX_BODY  # a larger body is read (and dropped) up to here, so the client gets to read the 413
FINGERPRINT = f"gguflm-{__version__}"


@dataclass(frozen=True)
class ServerConfig:
    """What `gguflm serve` was told, beyond the model."""

    model_name: str
    api_key: str | None = None
    max_queue: int = 64
    sampling: SamplingParams = SamplingParams()  # for fields a request leaves out


class Server:
    """One model served: its engine and worker, the chat template, the metrics."""

    def __init__(self, model, engine, template: ChatTemplate | None, config: ServerConfig):
        self.model, self.engine, self.template, self.config = model, engine, template, config
        self.tokenizer = model.tokenizer
        self.scheduler = Scheduler(SlotManager(engine), config.max_queue)
        self.metrics = Metrics(self.scheduler, engine.n_slots)
        self.worker = Worker(engine, self.scheduler, self.metrics)
        self.created = int(time.time())

    # ------------------------------------------------------------------ requests -> sequences

    def sampling(self, req: p.Sampling) -> SamplingParams:
        """The request's sampling fields over the server's defaults (`gguflm serve --temp ...`, llama.cpp's)."""
        given = {"temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "min_p": req.min_p,
                 "repeat_penalty": req.repeat_penalty, "repeat_last_n": req.repeat_last_n,
                 "frequency_penalty": req.frequency_penalty, "presence_penalty": req.presence_penalty,
                 "seed": None if req.seed is None else req.seed % 2**63}
        try:
            return self.config.sampling.with_(**{k: v for k, v in given.items() if v is not None})
        except GGUFLMError as e:
            raise APIError(400, str(e), code="invalid_value") from None

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name:
            raise APIError(400, f"unknown model {shown(name)}: this server serves '{self.config.model_name}'", "model",
                           "model_not_found")

    def chat_prompt(self, req: p.ChatCompletionRequest) -> list[int]:
        if self.template is None:
            raise APIError(400, "this model has no chat template (start the server with --chat-template)",
                           "messages", "no_chat_template")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        try:
            return encode_rendered(self.tokenizer, self.template.render(messages))
        except GGUFLMError as e:
            raise APIError(400, str(e), "messages", "invalid_messages") from None

    def completion_prompt(self, req: p.CompletionRequest) -> list[int]:
        prompt = req.prompt[0] if isinstance(req.prompt, list) and isinstance(req.prompt[0], str) else req.prompt
        if isinstance(prompt, str):
            try:
                return self.tokenizer.encode(prompt, add_special=True, parse_special=True)
            except GGUFLMError as e:  # text the tokenizer cannot take (a lone surrogate from a JSON escape)
                raise APIError(400, str(e), "prompt", "invalid_value") from None
        bad = next((t for t in prompt if not 0 <= t < self.tokenizer.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is out of range (vocabulary of {self.tokenizer.vocab_size})",
                           "prompt", "invalid_value")
        return list(prompt)

    def sequence(self, req: p.Sampling, prompt: list[int], deliver: Callable[[Event], None]) -> Sequence:
        ctx = self.engine.ctx
        if not prompt:
            raise APIError(400, "the prompt is empty: at least one token is needed", "prompt", "invalid_value")
        if len(prompt) >= ctx:
            param = "messages" if isinstance(req, p.ChatCompletionRequest) else "prompt"
            raise APIError(400, f"the prompt has {len(prompt)} tokens but the context holds {ctx}", param,
                           "context_length_exceeded")
        budget = req.token_budget or ctx  # no limit: until end of generation or the context is full
        stop_ids = frozenset() if req.ignore_eos else self.tokenizer.eog_ids
        sampler = Sampler.new(self.sampling(req), self.engine.device)
        return Sequence(prompt, budget, sampler, self.tokenizer, stop_ids, req.stop_list(), req.n_logprobs, deliver)

    # ------------------------------------------------------------------ running one

    async def run(self, seq_for: Callable[[Callable[[Event], None]], Sequence]):
        """Queue a sequence; returns it and an async iterator of its events (cancelled if abandoned)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        seq = seq_for(lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        try:
            self.worker.submit(seq)
        except QueueFull as e:
            raise APIError(503, f"the server is busy: {e}; try again later", None, "queue_full") from None
        return seq, events(queue, seq, self.worker)


async def events(queue: asyncio.Queue, seq: Sequence, worker: Worker) -> AsyncIterator[Event]:
    """A sequence's events until its last; leaving early (a client gone) cancels it."""
    try:
        while True:
            event = await queue.get()
            yield event
            if event.finish is not None:
                return
    finally:
        if seq.finish_reason is None:
            worker.cancel(seq)


async def read_json(request: Request) -> dict:
    """The body as a JSON object, refusing bodies over MAX_BODY (413) and anything that is not JSON (400)."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > MAX_BODY
    body, seen = bytearray(), 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            too_large = too_large or seen > MAX_BODY
            if not too_large:
                body += chunk
            elif seen > DRAIN_MAX:
                break
    except ClientDisconnect:
        raise APIError(400, "the client went away before the request body was complete") from None
    if too_large:
        raise _too_large()
    try:
        data = json.loads(body)
    except RecursionError:
        raise APIError(400, "the request body is not valid JSON: it is nested too deeply", None,
                       "invalid_json") from None
    except ValueError as e:  # bad syntax or encoding, or an integer of more digits than Python converts
        raise APIError(400, f"the request body is not valid JSON: {e}", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
    return data


def _too_large() -> APIError:
    return APIError(413, f"the request body is larger than {MAX_BODY >> 20} MiB", None, "body_too_large")


def parse(model: type[p.Strict], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid_request(e) from None


# ---------------------------------------------------------------------------- responses


def sse(payload) -> str:
    body = payload if isinstance(payload, str) else payload.model_dump_json(exclude_none=False)
    return f"data: {body}\n\n"


def chat_logprobs(events: list) -> p.ChoiceLogprobs:
    return p.ChoiceLogprobs(content=[
        p.TokenLogprob(token=e.token, logprob=e.logprob, bytes=e.bytes,
                       top_logprobs=[p.TopLogprob(token=t, logprob=lp, bytes=b) for t, lp, b in e.top])
        for e in events])


class CompletionLogprobBuilder:
    """The legacy completions logprobs object, with text offsets counted from the completion's start."""

    def __init__(self):
        self.offset = 0

    def build(self, events: list) -> p.CompletionLogprobs:
        tokens, lps, tops, offsets = [], [], [], []
        for e in events:
            tokens.append(e.token)
            lps.append(e.logprob)
            tops.append({t: lp for t, lp, _ in e.top})
            offsets.append(self.offset)
            self.offset += len(e.token)
        return p.CompletionLogprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops, text_offset=offsets)


def finish_reason(event: Event) -> str:
    if event.error is not None:
        raise event.error
    return event.finish


# ---------------------------------------------------------------------------- the app


def build_app(server: Server) -> Starlette:
    name = server.config.model_name

    def authorized(request: Request) -> None:
        key = server.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')", None,
                           "invalid_api_key")

    def endpoint(label: str, handler):
        async def route(request: Request) -> Response:
            server.metrics.requests.labels(label).inc()
            try:
                authorized(request)
                return await handler(request)
            except APIError as e:
                server.metrics.rejected.labels(str(e.status)).inc()
                return error_response(e)
        return route

    async def complete(request: Request, kind: type[p.Sampling], prompt_of, streamed, reply, prefix: str) -> Response:
        """One completion request of either endpoint: parsed, queued, then streamed or answered whole."""
        req = parse(kind, await read_json(request))
        server.check_model(req.model)
        prompt = prompt_of(req)
        seq, stream = await server.run(lambda deliver: server.sequence(req, prompt, deliver))
        rid, created = f"{prefix}-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(streamed(rid, created, seq, stream, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        text, lps, reason = await collect(request, seq, stream, server.worker)
        ids = dict(id=rid, created=created, model=name, system_fingerprint=FINGERPRINT)
        return JSONResponse(reply(req, ids, seq, text, lps, reason).model_dump())

    def chat_reply(req, ids, seq, text, lps, reason) -> p.ChatCompletion:
        choice = p.ChatChoice(message=p.AssistantMessage(content=text), finish_reason=reason,
                              logprobs=chat_logprobs(lps) if req.logprobs else None)
        return p.ChatCompletion(**ids, choices=[choice], usage=p.Usage(**seq.usage))

    def completion_reply(req, ids, seq, text, lps, reason) -> p.Completion:
        logprobs = CompletionLogprobBuilder().build(lps) if req.logprobs is not None else None
        choice = p.CompletionChoice(text=text, logprobs=logprobs, finish_reason=reason)
        return p.Completion(**ids, choices=[choice], usage=p.Usage(**seq.usage))

    async def chat_stream(rid: str, created: int, seq: Sequence, stream, include_usage: bool):
        def chunk(delta: p.Delta, reason=None, lps=None, usage=None, choices=True) -> str:
            choice = [p.ChunkChoice(delta=delta, finish_reason=reason, logprobs=lps)] if choices else []
            return sse(p.ChatCompletionChunk(id=rid, created=created, model=name, choices=choice, usage=usage,
                                             system_fingerprint=FINGERPRINT))

        yield chunk(p.Delta(role="assistant", content=""))
        async for event in stream:
            if event.error is not None:
                yield sse(json.dumps(event.error.body()))
                break
            lps = chat_logprobs(event.logprobs) if seq.n_logprobs is not None else None
            if event.text or (lps is not None and event.logprobs):
                yield chunk(p.Delta(content=event.text), lps=lps)
            if event.finish is not None:
                yield chunk(p.Delta(), reason=event.finish)
                if include_usage:
                    yield chunk(p.Delta(), usage=p.Usage(**seq.usage), choices=False)
        yield sse("[DONE]")

    async def completion_stream(rid: str, created: int, seq: Sequence, stream, include_usage: bool):
        offsets = CompletionLogprobBuilder()

        def chunk(text: str, reason=None, lps=None, usage=None, choices=True) -> str:
            choice = [p.CompletionChoice(text=text, finish_reason=reason, logprobs=lps)] if choices else []
            return sse(p.Completion(id=rid, created=created, model=name, choices=choice, usage=usage,
                                    system_fingerprint=FINGERPRINT))

        async for event in stream:
            if event.error is not None:
                yield sse(json.dumps(event.error.body()))
                break
            lps = offsets.build(event.logprobs) if seq.n_logprobs is not None and event.logprobs else None
            if event.text or lps is not None or event.finish is not None:
                yield chunk(event.text, reason=event.finish, lps=lps)
            if event.finish is not None and include_usage:
                yield chunk("", usage=p.Usage(**seq.usage), choices=False)
        yield sse("[DONE]")

    async def chat(request: Request) -> Response:
        return await complete(request, p.ChatCompletionRequest, server.chat_prompt, chat_stream, chat_reply,
                              "chatcmpl")

    async def completions(request: Request) -> Response:
        return await complete(request, p.CompletionRequest, server.completion_prompt, completion_stream,
                              completion_reply, "cmpl")

    async def models(request: Request) -> Response:
        return JSONResponse(p.ModelList(data=[p.ModelCard(id=name, created=server.created)]).model_dump())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(app):
        server.worker.start()
        try:
            yield
        finally:
            server.worker.stop()

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        message = "method not allowed" if status == 405 else f"no route {request.url.path}"
        return error_response(APIError(status, message, None, "not_found" if status == 404 else "method_not_allowed"))

    async def internal(request: Request, exc) -> Response:
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", None, "internal"))

    routes = [
        Route("/v1/chat/completions", endpoint("chat", chat), methods=["POST"]),
        Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", endpoint("metrics", metrics), methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found, 500: internal})


async def collect(request: Request, seq: Sequence, stream, worker: Worker) -> tuple[str, list, str]:
    """A whole (non-streamed) completion; a client that disconnects meanwhile cancels it."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        worker.cancel(seq)

    watch = asyncio.create_task(gone())
    parts, lps, reason = [], [], None
    try:
        async for event in stream:
            parts.append(event.text)
            lps += event.logprobs
            if event.finish is not None:
                reason = finish_reason(event)
    finally:
        watch.cancel()
    return "".join(parts), lps, reason

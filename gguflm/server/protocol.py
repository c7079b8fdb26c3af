"""Request and response bodies of the OpenAI API, field by field (and llama.cpp's sampling extras).

Requests are validated strictly: a wrong type is an error naming the field, never a silent
coercion; unknown fields are ignored, as OpenAI's own server ignores them. Fields this server
cannot honour (n > 1, logit_bias, tools, JSON response formats) are refused by name.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

# floats that must be finite: JSON's NaN and Infinity (which Python's json accepts) are refused
Finite = Annotated[float, Field(allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]
Seed = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
MAX_STOPS = 16


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# ---------------------------------------------------------------------------- requests


class TextPart(Strict):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, list[TextPart], None] = None
    name: StrictStr | None = None

    def text(self) -> str:
        """The content as one string (text parts joined, as OpenAI concatenates them)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: StrictBool = False


class ResponseFormat(Strict):
    type: StrictStr = "text"


class Sampling(Strict):
    """Fields both endpoints share: OpenAI's, then llama.cpp's extras (top_k, min_p, repeat_penalty ...)."""

    model: StrictStr | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Finite, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Finite, Field(gt=0.0, le=1.0)] | None = None
    seed: Seed | None = None
    stop: Union[StrictStr, Annotated[list[StrictStr], Field(max_length=MAX_STOPS)], None] = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    n: Annotated[StrictInt, Field(ge=1)] = 1
    logit_bias: dict[StrictStr, Finite] | None = None
    user: StrictStr | None = None
    # llama.cpp's extras
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    min_p: Annotated[Finite, Field(ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[Finite, Field(gt=0.0, le=10.0)] | None = None
    repeat_last_n: Annotated[StrictInt, Field(ge=0, le=1 << 20)] | None = None
    ignore_eos: StrictBool = False

    @model_validator(mode="after")
    def _supported(self):
        if self.n != 1:
            raise ValueError("n: only n = 1 is supported")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported by this server")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list | None = None

    @model_validator(mode="after")
    def _chat_supported(self):
        if self.tools:
            raise ValueError("tools: tool calls are not supported by this server")
        if self.response_format is not None and self.response_format.type != "text":
            raise ValueError(f"response_format: type {self.response_format.type!r} is not supported (only 'text')")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def n_logprobs(self) -> int | None:
        """None: no logprobs; k: the chosen token's and the k likeliest."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1, max_length=1)],
                  Annotated[list[StrictInt], Field(min_length=1)]]
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None
    echo: StrictBool = False
    suffix: StrictStr | None = None

    @model_validator(mode="after")
    def _completion_supported(self):
        if self.echo:
            raise ValueError("echo: not supported by this server")
        if self.suffix:
            raise ValueError("suffix: not supported by this server")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions

    @property
    def n_logprobs(self) -> int | None:
        return self.logprobs


# ---------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class Response(BaseModel):
    """The fields every completion object and chunk carries (usage: on a stream's last chunk only)."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    usage: Usage | None = None


class ChatCompletion(Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class StreamedChoice(BaseModel):
    """A choice as streamed chunks carry it: the finish reason only on the last."""

    index: int = 0
    finish_reason: str | None = None


class ChunkChoice(StreamedChoice):
    delta: Delta
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(Response):
    """One event of a streamed chat completion: the first carries the role, a later one the finish reason,
    and with stream_options.include_usage a last one (no choices) the usage."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(StreamedChoice):
    text: str
    logprobs: CompletionLogprobs | None = None


class Completion(Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gguflm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

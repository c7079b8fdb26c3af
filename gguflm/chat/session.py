"""A conversation over one Engine: messages in, a streamed reply out, the KV cache kept between turns.

Each turn re-renders the whole message list with the chat template and hands the token ids to
the engine, which prefills only what differs from what its cache already holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from gguflm.chat.template import ChatTemplate
from gguflm.chat.thinking import thinking_open
from gguflm.engine import Engine
from gguflm.errors import GGUFLMError
from gguflm.files import write_text_atomic
from gguflm.sampling import GREEDY, SamplingParams

ROLES = ("system", "user", "assistant", "tool")
WARN_FRACTION = 0.9  # warn when a reply leaves the context fuller than this

# /set names -> (SamplingParams field or "max_tokens", parser)
_SETTINGS = {
    "temp": ("temperature", float), "temperature": ("temperature", float),
    "top_k": ("top_k", int), "top_p": ("top_p", float), "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float), "repeat_last_n": ("repeat_last_n", int),
    "seed": ("seed", int), "max_tokens": ("max_tokens", int),
}


def encode_rendered(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered template; no second BOS when the template wrote one (as llama.cpp does)."""
    bos = tokenizer.bos_id
    has_bos = bos is not None and text.startswith(tokenizer.token_text(bos))
    return tokenizer.encode(text, add_special=not has_bos, parse_special=True)


class ChatSession:
    """The message list, the sampling settings and the engine whose cache mirrors the conversation."""

    def __init__(
        self,
        engine: Engine,
        template: ChatTemplate,
        system: str | None = None,
        sampling: SamplingParams | None = None,
        max_tokens: int = -1,
    ):
        self.engine = engine
        self.template = template
        self.sampling = sampling or GREEDY
        self.max_tokens = max_tokens  # -1: until end of turn or the context is full
        self.messages: list[dict] = []
        self.notices: list[str] = []  # for the user, drained by the front end after each call
        self.last_prompt = ""  # the rendered text of the last prompt
        self._replies = 0  # with a fixed seed, reply k samples with seed + k (so /regen differs)
        self.replied = False  # a reply since the conversation began (or was cleared or loaded)
        if system:
            self.set_system(system)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def system(self) -> str | None:
        first = self.messages[0] if self.messages else None
        return first["content"] if first and first["role"] == "system" else None

    # ---------------------------------------------------------------- the prompt

    def render(self, messages: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        return self.template.render(self.messages if messages is None else messages, add_generation_prompt)

    def prompt_ids(self, messages: list[dict] | None = None) -> list[int]:
        """The token ids of the whole conversation, ending with the assistant's generation prompt."""
        self.last_prompt = self.render(messages)
        self.engine.check_text(self.last_prompt)  # a template can render megabytes: refuse before tokenizing
        return encode_rendered(self.tokenizer, self.last_prompt)

    @property
    def thinking_open(self) -> bool:
        """True when the last prompt left a <think> block open (the reply starts inside it)."""
        return thinking_open(self.last_prompt)

    # ---------------------------------------------------------------- turns

    def send(self, text: str) -> Iterator[str]:
        """Add a user message and stream the reply; the reply (even a partial one) joins the messages."""
        self.messages.append({"role": "user", "content": text})
        try:
            ids = self._fit()
        except BaseException:  # an error or Ctrl-C: no user message left without its reply
            self.messages.pop()
            raise
        yield from self._stream(ids)

    def regen(self) -> Iterator[str]:
        """Drop the last reply and sample a new one."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise GGUFLMError("there is no reply to regenerate")
        last = self.messages.pop()
        try:
            ids = self._fit()
        except BaseException:  # an error or Ctrl-C: the old reply stays
            self.messages.append(last)
            raise
        yield from self._stream(ids)

    def _stream(self, ids: list[int]) -> Iterator[str]:
        sampling = self.sampling
        if sampling.seed is not None:
            sampling = sampling.with_(seed=sampling.seed + self._replies)
        self._replies += 1
        budget = self.engine.ctx if self.max_tokens < 0 else self.max_tokens
        parts: list[str] = []
        try:
            for piece in self.engine.generate(ids, budget, sampling):
                parts.append(piece)
                yield piece
        finally:  # interrupted or not, what was said stays in the conversation
            self.messages.append({"role": "assistant", "content": "".join(parts)})
            self.replied = True
            self._after_reply()

    def _after_reply(self) -> None:
        ctx, used = self.engine.ctx, len(self.engine.tokens)
        if self.engine.stats.last.finish_reason == "context":
            self.notices.append(f"the context is full ({used}/{ctx} tokens): the reply was cut short")
        elif used > WARN_FRACTION * ctx:
            self.notices.append(
                f"the context is {100 * used // ctx}% full ({used}/{ctx} tokens): "
                "the oldest turns will be dropped to make room"
            )

    # ---------------------------------------------------------------- context

    def _reserve(self) -> int:
        """Room kept free for the reply when deciding whether the conversation still fits."""
        ctx = self.engine.ctx
        return ctx // 4 if self.max_tokens < 0 else min(self.max_tokens, ctx // 4)

    def _fit(self) -> list[int]:
        """The prompt ids, after dropping the oldest turns (never the system prompt) until they fit.

        Nothing is dropped when even the last message alone would not fit.
        """
        ctx = self.engine.ctx
        messages = self.messages
        ids = self.prompt_ids(messages)
        dropped = 0
        while len(ids) + self._reserve() > ctx:
            shorter = self._without_oldest_turn(messages)
            if shorter is None:
                break
            messages, dropped = shorter, dropped + 1
            ids = self.prompt_ids(messages)
        if len(ids) >= ctx:
            raise GGUFLMError(f"the message does not fit: the prompt has {len(ids)} tokens, the context {ctx}")
        if dropped:
            self.messages = messages
            self.notices.append(
                f"the context was nearly full: dropped the {dropped} oldest turn{'s' * (dropped > 1)} "
                f"(now {len(ids)}/{ctx} tokens)"
            )
        return ids

    def _without_oldest_turn(self, messages: list[dict]) -> list[dict] | None:
        """The messages less the first user message and its replies; None when only the last one is left."""
        start = 1 if messages and messages[0]["role"] == "system" else 0
        users = [i for i, m in enumerate(messages) if i >= start and m["role"] == "user"]
        if len(users) < 2:
            return None
        return messages[:start] + messages[users[1] :]

    # ---------------------------------------------------------------- state

    def clear(self) -> None:
        """A new conversation with the same system prompt (the cached system prefix stays useful)."""
        self.messages = self.messages[:1] if self.system is not None else []
        self.replied = False

    def set_system(self, text: str) -> None:
        """Replace the system prompt (an empty text removes it); the rest of the conversation stays."""
        if self.system is not None:
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text})

    def set(self, name: str, value: str) -> str:
        """Change a setting by its /set name; returns how it now reads."""
        key = name.lower().replace("-", "_")
        if key not in _SETTINGS:
            raise GGUFLMError(f"unknown setting {name!r}; settable: {', '.join(sorted(_SETTINGS))}")
        field, parse = _SETTINGS[key]
        if field == "seed" and value.lower() in ("none", "random", "-1"):
            parsed = None
        else:
            try:
                parsed = parse(value)
            except ValueError:
                kind = "an integer" if parse is int else "a number"
                raise GGUFLMError(f"{name} needs {kind}, not {value!r}") from None
        if field == "max_tokens":
            if parsed == 0:
                raise GGUFLMError("max_tokens must be positive, or -1 for no limit")
            self.max_tokens = parsed
        else:
            self.sampling = self.sampling.with_(**{field: parsed})
            self._replies = 0
        return f"{field} = {parsed}"

    def settings(self) -> dict:
        s = self.sampling
        return {
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
            "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n, "seed": s.seed,
            "max_tokens": self.max_tokens,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the messages as a JSON list of {role, content} (to a temporary name, then renamed)."""
        return write_text_atomic(path, json.dumps(self.messages, indent=2, ensure_ascii=False) + "\n",
                                 "the conversation")

    def load(self, path: str | os.PathLike) -> int:
        """Replace the conversation with the one saved in `path`; returns the number of messages."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise GGUFLMError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GGUFLMError(f"{str(path)!r} is not a JSON conversation: {e}") from None
        self.messages = check_messages(data, str(path))
        self.replied = False
        return len(self.messages)

    # ---------------------------------------------------------------- numbers

    def context_used(self) -> int:
        """Tokens the conversation takes: the cache after a reply, else its messages rendered."""
        if self.replied:
            return len(self.engine.tokens)
        if not self.messages:
            return 0
        return len(encode_rendered(self.tokenizer, self.render(add_generation_prompt=False)))

    def stats_line(self) -> str:
        """One line about the last reply: prompt and reply speed, and how full the context is."""
        if not self.replied:
            return f"no reply yet in this conversation · context {self.context_used()}/{self.engine.ctx}"
        t = self.engine.stats.last
        return (
            f"prompt {t.prompt_tokens} tok ({t.prefilled_tokens} new, {t.prefill_tok_s:.0f} tok/s) · "
            f"reply {t.generated_tokens} tok, {t.decode_tok_s:.1f} tok/s · "
            f"context {len(self.engine.tokens)}/{self.engine.ctx}"
        )


def check_messages(data, source: str) -> list[dict]:
    """Validate a loaded conversation: a list of {role, content} with known roles and text content."""
    if not isinstance(data, list):
        raise GGUFLMError(f"{source!r} does not hold a list of messages")
    out = []
    for n, m in enumerate(data, start=1):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise GGUFLMError(f"{source!r}: message {n} is not a {{role, content}} object with role in {ROLES}")
        out.append({"role": m["role"], "content": m["content"]})
    return out

"""Chat templates: turn a list of messages into the prompt text a model was trained on.

Templates are jinja2, rendered exactly as transformers renders them, but inside a guarded
sandbox (`gguflm.chat.sandbox`): they come from untrusted files.
`ChatTemplate.for_model` picks the template a model chats with; `gguflm chat`, `gguflm run --chat`
and the Python API all go through it.
"""

import dataclasses
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import gguf
import jinja2

from gguflm.chat.limits import MAX_TEMPLATE_CHARS, RenderLimitError
from gguflm.chat.sandbox import GuardedEnvironment, RaisedByTemplate
from gguflm.errors import GGUFLMError

BUILTIN_TEMPLATES: tuple[str, ...] = ("chatml", "llama2", "llama3", "mistral", "qwen", "phi3", "gemma")

# Names a message's reasoning may come under; templates read `reasoning_content` (gpt-oss: `thinking`).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

# What evaluating an untrusted template can raise; all of it is the template's fault, not ours.
_TEMPLATE_FAILURES = (
    jinja2.TemplateError,
    SyntaxError,  # jinja2's generated Python can be too deeply nested for Python to compile
    ArithmeticError,
    AttributeError,
    LookupError,
    MemoryError,
    RecursionError,
    TypeError,
    ValueError,
)


class ChatTemplate:
    """A compiled chat template; `render` turns messages into a prompt string."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", name: str = "") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        self._label = f"chat template {name!r}" if name else "the model's chat template"
        if len(source) > MAX_TEMPLATE_CHARS:
            raise GGUFLMError(f"{self._label} has {len(source)} characters, more than the {MAX_TEMPLATE_CHARS} "
                              "a chat template may have")
        self._env = GuardedEnvironment()
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise GGUFLMError(f"{self._label} has a syntax error on line {e.lineno}: {e.message}") from None
        except _TEMPLATE_FAILURES as e:
            raise GGUFLMError(f"{self._label} could not be compiled: {_describe(e)}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """Render `messages`; `extra` (e.g. `enable_thinking`, `tools`) is passed to the template."""
        variables = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            "documents": None,
            **_plain(extra),
            "messages": _alias_reasoning(_plain(list(messages))),
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._env.render(self._template, variables)
        except RaisedByTemplate as e:
            raise GGUFLMError(f"{self._label} rejected the conversation: {e.message}") from None
        except RenderLimitError as e:
            raise GGUFLMError(f"{self._label} was stopped: {e.message}") from None
        except GGUFLMError:
            raise
        except _TEMPLATE_FAILURES as e:
            raise GGUFLMError(f"{self._label} failed: {_describe(e)}") from None

    def default_system(self) -> str:
        """The system prompt the template writes when the conversation has none ("" when none), e.g.
        Qwen2.5's "You are Qwen...": found by rendering a user message with and without a system one."""
        user, system = "GGUFLMUSERMARK", "GGUFLMSYSTEMMARK"
        try:
            alone = self.render([{"role": "user", "content": user}], add_generation_prompt=False)
            both = self.render([{"role": "system", "content": system}, {"role": "user", "content": user}],
                               add_generation_prompt=False)
        except GGUFLMError:  # a template that refuses one of the two layouts injects nothing we can find
            return ""
        if system not in both or user not in alone or user not in both:
            return ""
        before, after = both.split(system, 1)
        between = after[: after.index(user)]  # from the end of the system text to the user's text
        head = alone[: alone.index(user)]
        if not head.startswith(before) or not head.endswith(between) or len(head) < len(before) + len(between):
            return ""
        return head[len(before) : len(head) - len(between)]

    @classmethod
    def for_model(cls, model, option: str | None = None) -> "ChatTemplate":
        """The template a loaded model chats with: `option` (a built-in name or a .jinja file, as
        --chat-template gives it), else the file's own; BOS/EOS texts from the model's vocabulary."""
        tok = model.tokenizer
        bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
        eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
        return cls.resolve(option, model.file.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE, None, str), bos, eos)

    @classmethod
    def resolve(
        cls, option: str | None, gguf_template: str | None, bos_token: str = "", eos_token: str = ""
    ) -> "ChatTemplate":
        """Pick the template: `option` (a built-in name or a file path) first, else the model's own."""
        if option is None:
            if not gguf_template:
                raise GGUFLMError(
                    "this model has no chat template; pass --chat-template with a .jinja file or one of: "
                    + ", ".join(BUILTIN_TEMPLATES)
                )
            return cls(gguf_template, bos_token, eos_token)
        if option in BUILTIN_TEMPLATES:
            return cls(load_builtin(option), bos_token, eos_token, name=option)
        path = Path(option).expanduser()
        if not path.is_file():
            raise GGUFLMError(
                f"unknown chat template {option!r}: it is neither a file nor a built-in "
                f"({', '.join(BUILTIN_TEMPLATES)})"
            )
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GGUFLMError(f"cannot read chat template {str(path)!r}: {e}") from None
        return cls(source, bos_token, eos_token, name=str(path))


def load_builtin(name: str) -> str:
    """The source of a built-in template, shipped as gguflm/chat/templates/<name>.jinja."""
    if name not in BUILTIN_TEMPLATES:
        raise GGUFLMError(f"unknown built-in chat template {name!r}; choose one of: {', '.join(BUILTIN_TEMPLATES)}")
    return resources.files("gguflm.chat").joinpath("templates", f"{name}.jinja").read_text(encoding="utf-8")


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message.rstrip(".")


def _plain(value):
    """Rebuild caller data from plain JSON-like types, so a template never sees an object's methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return f"<{type(value).__name__}>"


def _alias_reasoning(messages: list) -> list:
    """Copy a message's reasoning under every name templates read it by, as transformers does."""
    out = []
    for message in messages:
        if isinstance(message, dict):
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out

"""A jinja2 sandbox for untrusted chat templates, set up the way transformers renders them.

On top of jinja2's immutable sandbox: unsafe attribute access fails at once, nothing can be
loaded from disk, and every loop, call, operator, filter and output counts against a
`limits.Budget`, so a template that never ends or builds gigabytes is stopped.
"""

import functools
import inspect
import json
import threading
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from gguflm.chat import limits


class RaisedByTemplate(TemplateError):
    """The template itself called `raise_exception(message)`."""


# ───── globals and filters transformers gives every chat template ─────


def raise_exception(message: str) -> None:
    raise RaisedByTemplate(message)


def strftime_now(fmt: str) -> str:
    limits.check_strftime(fmt)
    return datetime.now().strftime(fmt)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """json.dumps without HTML escaping, as transformers overrides jinja's `tojson`."""
    pads = [indent] if isinstance(indent, str) else list(separators or [])
    if (isinstance(indent, int) and indent > limits.MAX_JSON_INDENT) or any(
        isinstance(p, str) and len(p) > limits.MAX_JSON_INDENT for p in pads
    ):
        raise limits.RenderLimitError(f"tojson padding is limited to {limits.MAX_JSON_INDENT} characters")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class TemplateDict:
    """`dict(...)` for templates, without exposing the dict type itself."""

    def __call__(self, *args, **kwargs) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs) -> dict:
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(jinja2.utils.Namespace):
    """jinja's `namespace`, refusing underscore names that could shadow Python internals."""

    def __init__(*args, **kwargs):  # noqa: N805 -- jinja's signature trick so `namespace(self=...)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace attribute may not start with an underscore ({name!r})")


class GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training; here it just renders."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller) -> str:
        return caller()


class _NoLoader(jinja2.BaseLoader):
    """Refuses every `include`, `import` and `extends`: a template may not read other files."""

    def get_source(self, environment, template):
        raise SecurityError(f"a chat template may not include or import other files ({template!r})")


# ───── budgeted compilation: loops and `~` go through the environment ─────


class _Instrument(NodeTransformer):
    """Rewrites `for x in it` to iterate `guarded_iter(it)`, `a ~ b` to `guarded_concat(a, b)`, and
    every list, tuple and dict literal to `guarded_size(...)` (a literal can hold its own parts twice)."""

    def visit_For(self, node):
        self.generic_visit(node)
        node.iter = _env_call("guarded_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node):
        self.generic_visit(node)
        return _env_call("guarded_concat", node.nodes, node.lineno)

    def _sized(self, node):
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":  # an assignment target such as `a, b` in a for
            return node
        return _env_call("guarded_size", [node], node.lineno)

    visit_List = visit_Tuple = visit_Dict = _sized


def _env_call(method: str, args: list, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method), args, [], None, None).set_lineno(lineno)


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node, frame=None):
        node = _Instrument().visit(node)
        node.set_environment(self.environment)
        super().visit_Template(node, frame)


# ───── filter pre-checks, on the filter's bound arguments ─────


def _lines(text) -> int:
    return str(text).count("\n") + 1


def _pad(width) -> int:
    return width if isinstance(width, int) else len(str(width))


_FILTER_CHECKS = {
    "center": lambda a: limits.check_count(a["width"], "a width"),
    **{name: (lambda a, name=name: limits.check_text_input(a.get("s", a.get("value")), f"the {name} filter"))
       for name in ("striptags", "title", "urlize")},
    "indent": lambda a: limits.check_count(_lines(a["s"]) * _pad(a["width"]), "an indentation"),
    "wordwrap": lambda a: (limits.check_text_input(a["s"], "the wordwrap filter"), limits.check_count(
        len(str(a["wrapstring"] or "")) * (len(str(a["s"])) // max(a["width"], 1) + 1), "a wrapped length"
    )),
    "batch": lambda a: limits.check_count(a["linecount"], "a batch size"),
    "slice": lambda a: limits.check_count(a["slices"], "a slice count"),
    "join": lambda a: limits.check_join(a["d"], a["value"]),
    "replace": lambda a: limits.check_replace(a["s"], a["old"], a["new"]),
    "format": lambda a: limits.check_format(a["value"], a["args"], a["kwargs"]),
}


def _guard_filter(name: str, func):
    """Wrap a filter with its pre-check (if any) and a size check on its result."""
    check = _FILTER_CHECKS.get(name)
    signature = inspect.signature(func) if check else None

    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment marker
    def guarded(*args, **kwargs):
        if check is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if name == "join" and not isinstance(bound.arguments["value"], (list, tuple)):
                # An iterator would escape the pre-check; materialise it (it is bounded by its source).
                bound.arguments["value"] = list(bound.arguments["value"])
            check(bound.arguments)
            args, kwargs = bound.args, bound.kwargs
        return limits.check_size(func(*args, **kwargs))

    return guarded


def _check_str_method(obj, args, kwargs) -> None:
    """Pre-check the str methods that can make a string much longer than their inputs."""
    text, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if not isinstance(text, str):
        return
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        limits.check_count(first, "a width")
    elif name == "expandtabs":
        limits.check_count(text.count("\t") * (first if isinstance(first, int) else 8), "an expanded length")
    elif name == "join":
        limits.check_join(text, first)
    elif name == "replace" and len(args) >= 2:
        limits.check_replace(text, args[0], args[1])


# ───── the environment ─────


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """transformers' chat-template environment, with every way to run long or build large budgeted."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[GenerationTag, loopcontrols],
            loader=_NoLoader(),
            finalize=self._count_output,
        )
        self.budget = limits.Budget()
        self._lock = threading.Lock()
        self.filters["tojson"] = tojson
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}
        del self.globals["lipsum"]  # no chat template needs lorem ipsum, and it takes sizes
        self.globals["raise_exception"] = raise_exception
        self.globals["strftime_now"] = strftime_now
        self.globals["dict"] = TemplateDict()
        self.globals["namespace"] = TemplateNamespace

    def render(self, template: jinja2.Template, variables: dict) -> str:
        """Render under a fresh budget; renders of one environment take turns."""
        with self._lock:
            self.budget = limits.Budget()
            out, size = [], 0
            for chunk in template.generate(variables):
                size += len(chunk)
                if size > limits.MAX_CHARS:
                    raise limits.RenderLimitError(f"its output grew past {limits.MAX_CHARS} characters")
                out.append(chunk)
            return "".join(out)

    # Hooks the compiled template calls.

    def _count_output(self, value):
        self.budget.emit(len(value) if isinstance(value, str) else limits.weight(value) + 1)
        return value

    def guarded_iter(self, iterable):
        for item in iterable:
            self.budget.tick()
            yield item

    def guarded_concat(self, *parts) -> str:
        return limits.check_size("".join(map(str, parts)))

    def guarded_size(self, value):
        self.budget.tick()
        return limits.check_size(value)

    # Sandbox overrides.

    def unsafe_undefined(self, obj, attribute):
        # jinja returns an Undefined that fails only when used; fail now, so probing is never silent.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed")

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def checked(*args, **kwargs):
            limits.check_format(value.__self__, args, kwargs)
            return limits.check_size(wrapped(*args, **kwargs))

        return checked

    def call_binop(self, context, operator, left, right):
        limits.check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return limits.check_size(result)

    def call(self, context, obj, /, *args, **kwargs):
        self.budget.tick()
        if isinstance(obj, LoopContext) and args:
            # `loop(children)` in a recursive for: its items count as iterations too.
            args = (self.guarded_iter(args[0]), *args[1:])
        if getattr(obj, "__name__", "") == "join" and isinstance(getattr(obj, "__self__", None), str) and args:
            args = (list(args[0]), *args[1:])
        _check_str_method(obj, args, kwargs)
        return limits.check_size(super().call(context, obj, *args, **kwargs))

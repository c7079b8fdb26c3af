"""Budgets that stop a hostile chat template before it exhausts time or memory.

Pre-checks refuse an operation whose result would be too large before Python allocates it;
post-checks bound everything a template builds, so nothing can grow by repeated doubling.
"""

import re
import time

from jinja2.exceptions import TemplateError

MAX_STEPS = 1_000_000  # loop iterations plus calls in one render
MAX_SECONDS = 1.0  # wall time of one render
MAX_CHARS = 8_000_000  # largest string or sequence a template may build, and its output
MAX_EMITTED = 4 * MAX_CHARS  # all `{{ }}` output of one render, buffers included
MAX_INT_BITS = 65_536  # integers beyond this make arithmetic slow enough to hang
MAX_JSON_INDENT = 64
MAX_TEMPLATE_CHARS = 256 * 1024  # real templates are a few KiB; compiling costs seconds per MiB
MAX_FILTER_INPUT = 256 * 1024  # wordwrap, striptags, title, urlize run in seconds on megabytes, unbudgeted
MAX_STRFTIME = 256  # the longest strftime format a template may pass, and no field width past 2 digits

# A run of 7+ digits in a format string is a width or precision no template needs.
_HUGE_FIELD = re.compile(r"\d{7,}")
# Widths taken from the arguments: printf's `*`, or a `{...{w}}` field nested in str.format.
_ARG_WIDTH = re.compile(r"\*|\{[^{}]*\{")


class RenderLimitError(TemplateError):
    """A template went past one of the render budgets."""


class Budget:
    """Steps, deadline and emitted characters of one render."""

    def __init__(self) -> None:
        self.steps = 0
        self.emitted = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise RenderLimitError(f"it ran more than {MAX_STEPS} loop iterations and calls")
        if time.monotonic() > self.deadline:
            raise RenderLimitError(f"it ran for more than {MAX_SECONDS:g} s")

    def emit(self, n_chars: int) -> None:
        self.emitted += n_chars
        if self.emitted > MAX_EMITTED:
            raise RenderLimitError(f"it produced more than {MAX_EMITTED} characters of output")


def weight(value: object, limit: int = MAX_CHARS) -> int:
    """Characters plus items in `value`, counting a shared part each time it appears (saturating just
    past `limit`). Each distinct container is visited once, so a structure that shares itself by
    doubling (`[x, x]`, sixty times over) is weighed in time linear in its distinct parts."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple, dict)):
        return 0
    memo: dict[int, int] = {}
    open_: set[int] = set()  # containers whose parts are being weighed (a cycle weighs "too much")
    stack = [value]
    while stack:
        item = stack[-1]
        if id(item) in memo:
            stack.pop()
            continue
        parts = [*item.keys(), *item.values()] if isinstance(item, dict) else list(item)
        pending = [p for p in parts if isinstance(p, (list, tuple, dict)) and id(p) not in memo]
        if pending and id(item) not in open_:
            open_.add(id(item))
            stack.extend(p for p in pending if id(p) not in open_)
            continue
        total = len(parts) if not isinstance(item, dict) else len(item)
        for p in parts:
            total += len(p) if isinstance(p, str) else memo.get(id(p), limit + 1) if isinstance(p, (list, tuple, dict)) else 0
            if total > limit:
                break
        memo[id(item)] = min(total, limit + 1)
        open_.discard(id(item))
        stack.pop()
    return memo[id(value)]


def check_size(value: object) -> object:
    """Return `value`, or raise if it holds more than MAX_CHARS characters and items."""
    if isinstance(value, (str, list, tuple, dict)) and weight(value) > MAX_CHARS:
        raise RenderLimitError(f"it built a value larger than {MAX_CHARS} characters")
    return value


def check_count(n: object, what: str) -> None:
    """Refuse an integer that would size a string or list past MAX_CHARS."""
    if isinstance(n, int) and abs(n) > MAX_CHARS:
        raise RenderLimitError(f"it asked for {what} of {n}, above the limit of {MAX_CHARS}")


def check_format(fmt: object, args: tuple = (), kwargs: dict | None = None) -> None:
    """Refuse format strings with huge literal widths, and huge widths given as `*` or `{w}`."""
    if not isinstance(fmt, str):
        return
    if _HUGE_FIELD.search(fmt):
        raise RenderLimitError("it used a format string with a width or precision of a million or more")
    if not _ARG_WIDTH.search(fmt):
        return
    for value in (*args, *(kwargs or {}).values()):
        if isinstance(value, (tuple, list)):
            for item in value:
                check_count(item, "a format width")
        elif isinstance(value, dict):
            for item in value.values():
                check_count(item, "a format width")
        else:
            check_count(value, "a format width")


def check_text_input(text: object, what: str) -> None:
    """Refuse a string too long for a filter whose running time the budget cannot see."""
    if isinstance(text, str) and len(text) > MAX_FILTER_INPUT:
        raise RenderLimitError(f"it passed {len(text)} characters to {what}, above the limit of {MAX_FILTER_INPUT}")


def check_strftime(fmt: object) -> None:
    """strftime pads a field to any width (`%1270Y`): refuse long formats and wide fields."""
    if isinstance(fmt, str) and (len(fmt) > MAX_STRFTIME or re.search(r"%[-_0^#]*\d{3,}", fmt)):
        raise RenderLimitError(f"it asked strftime for a format longer than {MAX_STRFTIME} characters "
                               "or a field width of 100 or more")


def check_binop(op: str, left: object, right: object) -> None:
    """Pre-check an intercepted binary operator before Python evaluates it."""
    if op == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            if n > 0 and weight(seq) * n > MAX_CHARS:
                raise RenderLimitError(f"it repeated a sequence into more than {MAX_CHARS} characters")
        elif isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderLimitError(f"it built an integer of more than {MAX_INT_BITS} bits")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(left.bit_length(), 1) * right > MAX_INT_BITS:
                raise RenderLimitError(f"it built an integer of more than {MAX_INT_BITS} bits")
    elif op == "%" and isinstance(left, str):
        check_format(left, (right,))


def check_join(sep: object, items: object) -> None:
    """Pre-check `sep.join(items)`: separators are repeated once per item."""
    if isinstance(items, (list, tuple)):
        sep_len = len(sep) if isinstance(sep, str) else 0
        if weight(items) + sep_len * len(items) > MAX_CHARS:
            raise RenderLimitError(f"it joined a list into more than {MAX_CHARS} characters")


def check_replace(text: object, old: object, new: object) -> None:
    """Pre-check `text.replace(old, new)`: every match grows the text by len(new) - len(old)."""
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        growth = text.count(old) * max(len(new) - len(old), 0)
        if len(text) + growth > MAX_CHARS:
            raise RenderLimitError(f"it replaced text into more than {MAX_CHARS} characters")

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
    """Characters plus items in `value`, counting a shared part each time it appears; stops past `limit`."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple)):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        if total > limit:
            return total
    return total


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

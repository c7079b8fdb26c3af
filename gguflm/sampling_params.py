"""The sampler's settings, torch-free: the command line parses and checks them before torch loads.

`gguflm.sampling` (the tensor ops) re-exports `SamplingParams` and `GREEDY` from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from gguflm.errors import GGUFLMError

# field -> (test of a valid value, what a valid value is): one table for the API, the CLI and /set
CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "temperature": (math.isfinite, "a finite number (0 or less is greedy)"),
    "top_k": (lambda v: 0 <= v < 2**31, "0 (off) or more, below 2^31"),
    "top_p": (lambda v: 0.0 < v <= 1.0, "above 0 and at most 1 (1 is off)"),
    "min_p": (lambda v: 0.0 <= v <= 1.0, "from 0 (off) to 1"),
    "repeat_penalty": (lambda v: 0.0 < v < math.inf, "a finite number above 0 (1 is off)"),
    "repeat_last_n": (lambda v: 0 <= v < 2**31, "0 or more, below 2^31"),
    "seed": (lambda v: 0 <= v < 2**63, "from 0 to 2^63 - 1"),
    "frequency_penalty": (lambda v: -2.0 <= v <= 2.0, "from -2 to 2 (0 is off)"),
    "presence_penalty": (lambda v: -2.0 <= v <= 2.0, "from -2 to 2 (0 is off)"),
}


def problem(field: str, value, name: str | None = None) -> str | None:
    """Why `value` is not valid for `field` (named `name`, e.g. the CLI's --temp), or None when it is."""
    valid, what = CHECKS[field]
    if value is None and field == "seed":
        return None
    if valid(value):  # NaN fails every comparison, so no range test lets it through
        return None
    return f"{name or field} must be {what}, not {value}"


@dataclass(frozen=True)
class SamplingParams:
    """llama.cpp's defaults; temperature <= 0 means greedy."""

    temperature: float = 0.8
    top_k: int = 40  # 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float = 0.05  # 0.0: off
    repeat_penalty: float = 1.0  # 1.0: off
    repeat_last_n: int = 64
    seed: int | None = None
    frequency_penalty: float = 0.0  # subtracted once per occurrence in the window; 0.0: off
    presence_penalty: float = 0.0  # subtracted once per token present in the window; 0.0: off

    def __post_init__(self) -> None:
        for field in CHECKS:
            found = problem(field, getattr(self, field))
            if found:
                raise GGUFLMError(f"sampling: {found}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def argmax_only(self) -> bool:
        """Greedy with the penalties off: an argmax, no sort, no random draw."""
        return self.greedy and not self.penalized

    @property
    def penalty_window(self) -> int:
        """How many recent tokens the penalties read: 0 when they are off."""
        return self.repeat_last_n if self.penalized else 0

    @classmethod
    def greedy_params(cls) -> "SamplingParams":
        return GREEDY

    def with_(self, **changes) -> "SamplingParams":
        return replace(self, **changes)


GREEDY = SamplingParams(temperature=0.0)  # the API's default: generation without sampling params is greedy

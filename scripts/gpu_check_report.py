"""What scripts/gpu_check.py records: a Step per step (status, time, problems, tables, data), the
Context a step runs in, and the Report written as report.md (tables a person reads) and report.json."""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("env", "tests", "correctness", "gemv", "decode", "llama_bench")
TITLES = dict(env="environment", tests="GPU tests", correctness="correctness: Triton vs reference",
              gemv="copy bandwidth and GEMV table", decode="decode and prefill speed", llama_bench="llama-bench")


class Skip(Exception):
    """A step (or part of one) that does not apply here: recorded as skipped with the reason."""


@dataclass
class Step:
    name: str
    title: str
    status: str = "pending"  # ok, failed, skipped, trimmed (ran, but the budget cut rows)
    seconds: float = 0.0
    summary: str = ""  # one line for the report's first table
    problems: list[str] = field(default_factory=list)  # what is wrong (the step still ran)
    notes: list[str] = field(default_factory=list)  # skipped or trimmed parts, and why
    markdown: list[str] = field(default_factory=list)  # the step's section of report.md
    data: dict = field(default_factory=dict)
    error: str | None = None  # what stopped the step

    @property
    def number(self) -> int:
        return STEPS.index(self.name) + 1

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def trimmed(self, text: str) -> None:
        self.notes.append(f"trimmed to fit the budget: {text}")
        self.data["trimmed"] = True

    def finish(self) -> None:
        if self.status == "pending":
            self.status = "failed" if self.error or self.problems else "trimmed" if self.data.get("trimmed") else "ok"


@dataclass
class Context:
    """What a step needs: the options, where to write, and when to stop starting new work."""

    args: argparse.Namespace
    deadline: float  # time.time() after which the step starts nothing new
    previous: dict  # earlier steps' data, by name

    @property
    def dry(self) -> bool:
        return self.args.dry_run

    @property
    def workdir(self) -> Path:
        return Path(self.args.workdir)

    def left(self) -> float:
        return self.deadline - time.time()

    def device(self):
        """The CPU in a dry run, else the CUDA GPU (an error where none is visible)."""
        import torch

        if self.dry:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU is visible (use --dry-run to check the steps on the CPU)")
        return torch.device("cuda")


def free_memory(device) -> None:
    """Give back what the last model or weight set held, before the next is made."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the report


@dataclass
class Report:
    command: str
    started: str
    dry_run: bool
    budget_s: float
    host: str = platform.node()
    commit: str | None = None
    total_s: float = 0.0
    steps: list[Step] = field(default_factory=list)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str) + "\n"

    def markdown(self) -> str:
        env = self.step("env")
        device = env.data.get("device", "?") if env else "?"
        lines = [f"# GPU check: {device} · {self.started}", "",
                 f"`{self.command}` · commit {self.commit or 'unknown'} · budget {self.budget_s:.0f} s · "
                 f"total {self.total_s:.0f} s{' · DRY RUN on the CPU' if self.dry_run else ''}", "",
                 "| step | status | seconds | summary |", "|---|---|---:|---|"]
        for s in self.steps:
            lines.append(f"| {s.number} {s.title} | {s.status} | {s.seconds:.1f} | {s.summary.replace('|', chr(92) + '|')} |")
        for s in self.steps:
            lines += ["", f"## {s.number}. {s.title}: {s.status} ({s.seconds:.1f} s)"]
            items = [f"- problem: {p}" for p in s.problems] + [f"- note: {n}" for n in s.notes]
            for block in (items, ["```", s.error.rstrip(), "```"] if s.error else [], s.markdown):
                if block:
                    lines += [""] + block
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        from gguflm.files import write_text_atomic

        write_text_atomic(out / "report.json", self.as_json(), "the GPU check's JSON report")
        write_text_atomic(out / "report.md", self.markdown(), "the GPU check's report")

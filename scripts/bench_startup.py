"""Start-up benchmark: wall time of commands that must answer without loading torch.

Runs each command N times as a fresh process (the `gguflm` console script beside this Python,
else `python -m gguflm.cli.main`) and prints the median and the fastest wall time. The goal for
`gguflm --help` is under 0.3 s. Usage: python scripts/bench_startup.py [-n 10] [--model FILE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 0.3  # for `gguflm --help`


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs per command")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file for `info` (default: the demo model)")
    args = parser.parse_args()
    from gguflm.data import DEMO_MODEL

    script = Path(sys.executable).with_name("gguflm")  # this environment's, not another one on PATH
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "gguflm.cli.main"]
    model = str(args.model or DEMO_MODEL)
    commands = {
        "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
        "gguflm --help": [*base, "--help"],
        "gguflm run --help": [*base, "run", "--help"],
        "gguflm --version": [*base, "--version"],
        "gguflm run --temp nan (an option error)": [*base, "run", "--temp", "nan"],
        f"gguflm info {Path(model).name}": [*base, "info", model],
    }
    print(f"{'command':<44} {'median':>8} {'fastest':>8}   ({args.n} runs each)")
    for label, cmd in commands.items():
        t = wall(cmd, args.n)
        print(f"{label:<44} {statistics.median(t):>7.3f}s {min(t):>7.3f}s")
    help_median = statistics.median(wall([*base, "--help"], args.n))
    print(f"goal: gguflm --help under {GOAL_S} s: {'met' if help_median < GOAL_S else 'NOT met'} "
          f"(median {help_median:.3f} s)")


if __name__ == "__main__":
    main()

"""The whole GPU verification in one command that fits a short lease: one report, every step timed.

    python3 scripts/gpu_check.py [--out DIR] [--budget SECONDS] [--llama-bench PATH]
    python3 scripts/gpu_check.py --dry-run --out DIR      # every step on the CPU, tiny shapes

Steps, in this order (the compile-heavy ones first, so later steps find Triton's cache warm):
  1 env          GPU, SMs, memory, driver, clocks; torch, triton and the other versions
  2 tests        `pytest -m gpu` (the kernel tests and CUDA-graph tests, compiled for real)
  3 correctness  Triton backend vs reference backend: greedy ids, max |dlogit|, graphs on/off, seeded sampling
  4 gemv         copy bandwidth, then the GEMV table: every format the kernels read, at real layer shapes
  5 decode       decode tok/s of synthetic 8B files at contexts 512 and 4096, graph vs eager, prefill, TTFT
  6 llama_bench  llama.cpp's llama-bench on the same files (with --llama-bench PATH)

Each step runs in a child process with its own deadline, so a kernel fault or a hang costs that step
alone: its error is recorded and the rest run. `--budget` (default 400 s) is shared out among the
steps still to run, so time one step leaves flows to the next; the benchmark steps trim rows to fit.
report.md and report.json are rewritten after every step in --out (default $OUT, else ./gpu-report),
beside tests.log (pytest's output) and gpu-check.log (every step's output).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the modules beside this file

from gpu_check_report import REPO, STEPS, TITLES, Context, Report, Skip, Step  # noqa: E402

WEIGHTS = dict(env=2, tests=30, correctness=15, gemv=20, decode=33, llama_bench=10)  # shares of the budget
GRACE_S = 20  # past its deadline a step may finish the row it is on before it is killed


# ---------------------------------------------------------------------------- one step


def run_step_here(name: str, ctx: Context) -> Step:
    """Run one step in this process; whatever it raises is recorded in the Step."""
    step = Step(name, TITLES[name])
    started = time.monotonic()
    try:
        import gpu_check_steps

        getattr(gpu_check_steps, name)(step, ctx)
    except Skip as e:
        step.status = "skipped"
        step.summary = step.summary or str(e)
        step.notes.append(str(e))
    except BaseException as e:  # noqa: BLE001 (a step's failure is a line of the report, never the end of the run)
        step.error = "".join(traceback.format_exception(e)[-6:])[-3000:]
        step.summary = step.summary or f"{type(e).__name__}: {e}"[:300]
    step.seconds = time.monotonic() - started
    step.finish()
    return step


def run_step_child(name: str, args: argparse.Namespace, deadline: float, hard_stop: float, log) -> Step:
    """Run one step as `gpu_check.py ... --step NAME`, killed at `hard_stop`; a crash or a hang is recorded."""
    result = args.workdir / f"step-{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--step", name, "--deadline", f"{deadline:.1f}",
           "--out", str(args.out), "--workdir", str(args.workdir)]
    log.write(f"\n===== step {name}: {deadline - time.time():.0f} s to its deadline\n")
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        code = proc.wait(timeout=max(1.0, hard_stop - time.time()))
    except subprocess.TimeoutExpired:  # the step and what it started (pytest and its workers): none outlives it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    if result.exists():
        return Step(**json.loads(result.read_text()))
    step = Step(name, TITLES[name], status="failed", seconds=time.monotonic() - started)
    step.error = (f"killed after {step.seconds:.0f} s, past its deadline" if code is None
                  else f"its process exited with code {code} and wrote no result (see gpu-check.log)")
    step.summary = step.error
    return step


# ---------------------------------------------------------------------------- options


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-report", help="where the reports go ($OUT, else ./gpu-report)")
    p.add_argument("--budget", type=float, default=400.0, help="seconds the whole run may take (benchmarks trim to fit)")
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU: interpreter, tiny shapes, the tiny model")
    p.add_argument("--steps", default=",".join(STEPS), help=f"the steps to run, of {','.join(STEPS)}")
    p.add_argument("--testdata", default=None, help="the test data folder (default: ../shared/testdata, else ./.testdata)")
    p.add_argument("--workdir", default=None, help="where synthetic files and step results go (default: in /tmp)")
    p.add_argument("--decode-types", default="Q8_0,Q4_K_M", help="types of the decode files (those the kernels run)")
    p.add_argument("--decode-shape", default=None, help="model shape of the decode files (gguflm.synthetic.shapes; "
                   "default llama-3-8b, tiny in a dry run)")
    p.add_argument("--llama-bench", default=None, help="llama.cpp's llama-bench, run on the same synthetic files")
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)  # internal: run this one step in this process
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = argv
    args.out = Path(args.out).expanduser().resolve()
    args.workdir = Path(args.workdir or f"/tmp/gguflm-gpu-check{'-dry' if args.dry_run else ''}").expanduser().resolve()
    args.testdata = testdata_dir(args.testdata)
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        p.error(f"unknown steps: {', '.join(sorted(unknown))} (the steps are {', '.join(STEPS)})")
    return args


def testdata_dir(given: str | None) -> Path | None:
    """The test data folder: the one given, ../shared/testdata beside the checkout, or .testdata inside it."""
    for path in ([Path(given)] if given else [REPO.parent / "shared" / "testdata", REPO / ".testdata"]):
        if path.is_dir():
            return path.resolve()
    return None


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton, here and in the children
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a dry run takes the CPU path, even beside a GPU
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:  # a child: one step, its result as JSON for the parent
        from gguflm.files import write_text_atomic

        so_far = args.out / "report.json"
        previous = {s["name"]: s["data"] for s in json.loads(so_far.read_text())["steps"]} if so_far.exists() else {}
        step = run_step_here(args.step, Context(args, args.deadline or time.time() + 600, previous))
        write_text_atomic(args.workdir / f"step-{args.step}.json", json.dumps(asdict(step), default=str), "a step result")
        return 0

    start = time.time()
    end = start + args.budget
    (args.out / "report.json").unlink(missing_ok=True)  # children read the steps of this run only
    report = Report(" ".join(["python3 scripts/gpu_check.py", *args.argv]), datetime.now(timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"), args.dry_run, args.budget, commit=git_commit())
    chosen = [s for s in STEPS if s in args.steps.split(",")]
    weights = dict(WEIGHTS, llama_bench=WEIGHTS["llama_bench"] if args.llama_bench else 0)
    with open(args.out / "gpu-check.log", "w") as log:
        for i, name in enumerate(chosen):
            now = time.time()
            share = max(0.0, end - now) * weights[name] / max(1, sum(weights[s] for s in chosen[i:]))
            if now < end or not weights[name]:
                step = run_step_child(name, args, now + share, min(now + share, end) + GRACE_S, log)
            else:
                step = Step(name, TITLES[name], status="skipped", summary="not run: the budget was spent")
            report.steps.append(step)
            report.total_s = time.time() - start
            report.write(args.out)
            print(f"[{report.total_s:6.1f} s] {step.number} {step.title}: {step.status} ({step.seconds:.1f} s) "
                  f"{step.summary}", flush=True)
    failed = [s.name for s in report.steps if s.status == "failed"]
    print(f"\n{args.out / 'report.md'} and report.json written; failed steps: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())

"""The steps of scripts/gpu_check.py, one function each: `step(s, ctx)` fills the Step `s` (summary,
problems, markdown, data) and raises what stops it. gpu_check.py runs each in a process of its own."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from importlib import metadata, util
from pathlib import Path

from gpu_check_report import REPO, Context, Skip, Step, free_memory
from gpu_check_correctness import correctness  # noqa: F401 (step 3)

DECODE = dict(contexts=[512, 4096], prefill=[512], steps=64)  # on the GPU
DECODE_DRY = dict(contexts=[16, 48], prefill=[8], steps=3)  # the tiny model on the CPU
DECODE_MIN_S = 120  # a decode file of 8B shape is written, loaded and timed in about this (before a second type)


def table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


# ---------------------------------------------------------------------------- 1. environment


def env(s: Step, ctx: Context) -> None:
    import torch

    versions = {name: _version(name) for name in ("torch", "triton", "gguf", "numpy", "transformers", "pytest")}
    s.data.update(python=platform.python_version(), versions=versions, torch_cuda=torch.version.cuda,
                  triton_interpret=os.environ.get("TRITON_INTERPRET"), cpu_count=os.cpu_count())
    rows = [("python", f"{platform.python_version()} ({sys.executable})"),
            ("packages", ", ".join(f"{k} {v}" for k, v in versions.items())),
            ("gguflm", str(Path(__import__("gguflm").__file__).parent)), ("CPU cores", str(os.cpu_count()))]
    if ctx.dry:
        s.data["device"] = f"CPU ({platform.processor() or platform.machine()})"
        rows.insert(0, ("device", s.data["device"] + ", dry run: TRITON_INTERPRET=1"))
        s.summary = f"dry run on the CPU; torch {versions['torch']}, triton {versions['triton']}"
    else:
        dev = ctx.device()
        props = torch.cuda.get_device_properties(dev)
        free, total = torch.cuda.mem_get_info(dev)
        s.data.update(device=props.name, sms=props.multi_processor_count, memory_bytes=total, free_bytes=free,
                      capability=f"{props.major}.{props.minor}", l2_bytes=getattr(props, "L2_cache_size", None))
        rows[:0] = [("device", f"{props.name}, compute capability {props.major}.{props.minor}"),
                    ("SMs", str(props.multi_processor_count)),
                    ("memory", f"{total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"),
                    ("L2", f"{(s.data['l2_bytes'] or 0) / 2**20:.0f} MiB"), ("torch CUDA", str(torch.version.cuda))]
        smi = _nvidia_smi()
        s.data["nvidia_smi"] = smi
        rows += [(f"nvidia-smi {k}", v) for k, v in smi.items()]
        s.summary = (f"{props.name}, {props.multi_processor_count} SMs, {total / 2**30:.0f} GiB, driver "
                     f"{smi.get('driver_version', '?')}; torch {versions['torch']}, triton {versions['triton']}")
        if free < 0.9 * total:
            s.problem(f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB is free: another process holds GPU memory")
    if not versions["gguf"]:
        s.problem("the gguf package is missing (scripts/device_wheels.sh brings it as a wheel)")
    s.markdown += table(rows)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


SMI_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
              "power.draw", "power.limit", "temperature.gpu", "memory.used", "memory.total", "utilization.gpu")


def _nvidia_smi() -> dict:
    """nvidia-smi's view of GPU 0 (clocks in MHz, power in W, memory in MiB); {} where it does not answer."""
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits",
                               "--id=0"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    values = [v.strip() for v in proc.stdout.strip().split(",")]
    return dict(zip(SMI_FIELDS, values)) if len(values) == len(SMI_FIELDS) else {"error": proc.stderr.strip()[:200]}


# ---------------------------------------------------------------------------- 2. the GPU tests


def tests(s: Step, ctx: Context) -> None:
    """`pytest -m gpu` in a child process; its results read from the JUnit XML it writes."""
    junit = ctx.workdir / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfE",
           "--continue-on-collection-errors", f"--junitxml={junit}"]
    if util.find_spec("xdist") and not ctx.dry:
        cmd += ["-n", str(min(8, os.cpu_count() or 1))]  # compiles in parallel
    if util.find_spec("pytest_timeout"):
        cmd += ["--timeout", "120"]  # a hung test fails alone
    cmd += ["tests/test_kernel_rmsnorm.py", "-k", "dtype0"] if ctx.dry else ["tests"]  # a dry run: the plumbing
    env = dict(os.environ)
    if ctx.args.testdata:
        env["GGUFLM_TESTDATA"] = str(ctx.args.testdata)
    s.data["command"] = " ".join(["python", *cmd[1:]])
    with open(ctx.args.out / "tests.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,  # Ctrl-C even where
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # it was ignored
        try:
            code = proc.wait(timeout=max(10.0, ctx.left()))
        except subprocess.TimeoutExpired:  # Ctrl-C: pytest stops and still writes what it ran
            proc.send_signal(signal.SIGINT)
            s.trimmed("pytest was interrupted at the step's deadline; the tests it finished are counted")
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    if not junit.exists():
        raise RuntimeError(f"pytest exited with code {code} and wrote no results (its output: tests.log)")
    counts, failures, skips = _junit(junit)
    s.data.update(exit_code=code, **counts, failures=failures)
    s.summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k == "passed")
    for f in failures[:20]:
        s.problem(f)
    if len(failures) > 20:
        s.problem(f"... and {len(failures) - 20} more (tests.log)")
    if code not in (0, 1, 2 if s.data.get("trimmed") else 0) or counts["passed"] == 0:
        s.problem(f"pytest exited with code {code}" + ("" if counts["passed"] else " and no test passed"))
    s.markdown += [f"`{s.data['command']}` (output: tests.log)", "", "| result | tests |", "|---|---:|"]
    s.markdown += [f"| {k} | {n} |" for k, n in counts.items()]
    if skips:
        s.markdown += ["", "| skipped because | tests |", "|---|---:|"] + [f"| {r} | {n} |" for r, n in skips]


def _junit(path: Path) -> tuple[dict, list[str], list[tuple[str, int]]]:
    """(counts, 'test: message' of each failure or error, (skip reason, count) most common first)."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    failures, skips = [], {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            counts["failed" if bad.tag == "failure" else "errors"] += 1
            failures.append(f"{name}: {(bad.get('message') or '').splitlines()[0][:300] if bad.get('message') else bad.tag}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = (case.find("skipped").get("message") or "").replace("|", "/")[:150]
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return counts, failures, sorted(skips.items(), key=lambda kv: -kv[1])


# ---------------------------------------------------------------------------- 4. bandwidth and the GEMV table


def gemv(s: Step, ctx: Context) -> None:
    import bench_gemv as bg

    from gguflm.bench import copy_bandwidth

    dev = ctx.device()
    copy_bps = copy_bandwidth(dev, 2**24 if ctx.dry else 2**30)
    layers = bg.TINY_LAYERS if ctx.dry else [layer for m in bg.MODELS for layer in bg.model_layers(m)]
    formats = bg.gemv_formats()
    rows, left_out = bg.run_table(layers, formats, dev, copy_bps, deadline=ctx.deadline)
    s.data.update(copy_bytes_per_s=copy_bps, formats=[f.name for f in formats], rows=rows)
    if left_out:
        s.trimmed(f"layers not timed: {', '.join(left_out)}")
    for r in rows:
        where = f"{r['format']} {r['model']} {r['layer']} ({r['n']}x{r['k']})"
        if "error" in r:
            s.problem(f"{where}: {r['error'][:300]}")
        elif not r["max_rel_err"] <= 1e-3:  # fp32 accumulation over the same weights
            s.problem(f"{where}: the Triton GEMV is off by {r['max_rel_err']:.1e} (relative) from dequantize+matmul")
    fracs = {f.name: [r["triton"]["frac_of_copy"] for r in rows if r["format"] == f.name and "triton" in r]
             for f in formats}
    s.summary = f"copy {copy_bps / 1e9:.0f} GB/s; Triton GEMV median % of copy: " + ", ".join(
        f"{name} {100 * statistics.median(v):.0f}%" for name, v in fracs.items() if v)
    s.markdown.append(bg.markdown(rows, copy_bps))


# ---------------------------------------------------------------------------- 5. decode and prefill


def decode(s: Step, ctx: Context) -> None:
    """Decode/prefill timings (gguflm.bench) on a synthetic file of each type that the kernels run."""
    from gguflm.bench import markdown, run_bench

    import gguflm
    from gguflm.synthetic.shapes import synthetic_model

    dev = ctx.device()
    shape = ctx.args.decode_shape or ("tiny" if ctx.dry else "llama-3-8b")
    plan = DECODE_DRY if ctx.dry else DECODE
    backend = "reference" if ctx.dry else "triton"  # the interpreter would take minutes; step 3 ran Triton on the CPU
    s.data.update(shape=shape, files={}, results={}, **plan)
    summaries, last_s = [], 0.0
    for qtype in ctx.args.decode_types.split(","):
        reason = _cannot_run(qtype, ctx, dev, backend)
        if reason:
            s.notes.append(f"{qtype}: {reason}")
            continue
        if summaries and ctx.left() < max(last_s, 0 if ctx.dry else DECODE_MIN_S):
            s.trimmed(f"{qtype} not timed ({ctx.left():.0f} s left)")
            continue
        started = time.monotonic()
        path = synthetic_model(shape, ctx.workdir, qtype)
        written = time.monotonic() - started
        model = gguflm.load(path, device=dev, backend=backend)
        loaded = time.monotonic() - started - written
        report = run_bench(model, f"synthetic {shape} {qtype}", plan["contexts"], plan["prefill"], plan["steps"])
        del model
        free_memory(dev)
        last_s = time.monotonic() - started
        s.data["files"][qtype] = str(path)
        s.data["results"][qtype] = dict(report.as_dict(), file_bytes=path.stat().st_size, write_s=written, load_s=loaded)
        ceiling = [report.copy_bandwidth_gb_s * 1e9 / d.bytes_per_token for d in report.decode]
        s.markdown += [f"### {qtype}: {path.name} ({path.stat().st_size / 2**30:.2f} GiB, written in {written:.0f} s, "
                       f"loaded in {loaded:.0f} s)", "", markdown(report), "",
                       "bandwidth ceiling (copy bandwidth / bytes read per token): " +
                       ", ".join(f"{c:.0f} tok/s at {d.context}" for c, d in zip(ceiling, report.decode)), ""]
        d0 = report.decode[0]
        summaries.append(f"{qtype} {d0.tok_s:.0f} tok/s at {d0.context} ({100 * d0.fraction_of_copy_bw:.0f}% of copy bw)")
        for d in report.decode:
            if not d.tok_s > 0:
                s.problem(f"{qtype} decode at context {d.context} measured {d.tok_s} tok/s")
    if not summaries:
        raise Skip("no decode type runs on the Triton backend yet: " + "; ".join(s.notes))
    s.summary = "; ".join(summaries)


def _cannot_run(qtype: str, ctx: Context, dev, backend: str) -> str | None:
    """Why synthetic files of `qtype` cannot be timed on `backend` (None: they can), from a tiny file of that type."""
    from gguflm.errors import GGUFLMError
    from gguflm.gguf_file import open_gguf
    from gguflm.synthetic.shapes import synthetic_model

    import gguflm

    probe = ctx.workdir / "probe"
    shutil.rmtree(probe, ignore_errors=True)  # written by this build's synthetic writer, never an older one
    try:
        path = synthetic_model("tiny", probe, qtype)
    except (GGUFLMError, ValueError, KeyError, NotImplementedError) as e:
        return f"the synthetic writer cannot make {qtype} files ({e})"
    types = {t.tensor_type.name for t in open_gguf(path).tensors.values() if len(t.shape) == 2}
    if qtype not in ("F32",) and types <= {"F32"}:
        return f"the synthetic writer makes no {qtype} tensors yet (it wrote {', '.join(sorted(types))})"
    try:
        gguflm.load(path, device=dev, backend=backend)
    except GGUFLMError as e:
        return f"does not run on the {backend} backend yet ({e})"
    return None


# ---------------------------------------------------------------------------- 6. llama-bench


def llama_bench(s: Step, ctx: Context) -> None:
    """llama.cpp's llama-bench (-p 512 -n 128 -ngl 99) on the decode step's files, beside our figures."""
    exe = ctx.args.llama_bench
    if not exe:
        raise Skip("no --llama-bench PATH given")
    files = ctx.previous.get("decode", {}).get("files", {})
    if not files:
        raise Skip("the decode step wrote no files to run llama-bench on")
    ours = ctx.previous["decode"].get("results", {})
    s.markdown += ["| file | llama.cpp pp512 tok/s | llama.cpp tg128 tok/s | ours: prefill 512 tok/s "
                   "| ours: decode at 512 tok/s |", "|---|---:|---:|---:|---:|"]
    summaries = []
    for qtype, path in files.items():
        cmd = [exe, "-m", path, "-p", "512", "-n", "128", "-ngl", "99", "-o", "json"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, ctx.left()))
        except (OSError, subprocess.TimeoutExpired) as e:
            s.problem(f"{qtype}: `{' '.join(cmd)}` failed: {type(e).__name__}: {str(e)[:300]}")
            continue
        try:
            results = json.loads(proc.stdout)
        except json.JSONDecodeError:
            s.problem(f"{qtype}: llama-bench exited with code {proc.returncode} and printed no JSON; its last "
                      f"words: {proc.stderr.strip()[-400:]}")
            continue
        pp = next((r["avg_ts"] for r in results if r.get("n_prompt") and not r.get("n_gen")), None)
        tg = next((r["avg_ts"] for r in results if r.get("n_gen") and not r.get("n_prompt")), None)
        s.data.setdefault("results", {})[qtype] = results
        mine = ours.get(qtype, {})
        our_pp = next((p["tok_s"] for p in mine.get("prefill", []) if p["tokens"] == 512), None)
        our_tg = next((d["tok_s"] for d in mine.get("decode", []) if d["context"] == 512), None)
        s.markdown.append(f"| {Path(path).name} | {_num(pp)} | {_num(tg)} | {_num(our_pp)} | {_num(our_tg)} |")
        summaries.append(f"{qtype} llama.cpp tg128 {_num(tg)} tok/s")
    s.markdown += ["", "llama.cpp's tg128 starts from an empty cache; ours is timed after 512 cached tokens."]
    s.summary = "; ".join(summaries) or "llama-bench gave no figures"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.0f}"

"""scripts/gpu_check.py --dry-run: every step of the GPU check runs on the CPU and lands in both reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
STEPS = ["env", "tests", "correctness", "gemv", "decode", "llama_bench"]


def gpu_check(tmp_path, *args):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--workdir", str(tmp_path / "w"),
                           *args], capture_output=True, text=True, timeout=900)
    report = json.loads((out / "report.json").read_text())
    return proc, {s["name"]: s for s in report["steps"]}, (out / "report.md").read_text()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return gpu_check(tmp_path_factory.mktemp("gpu_check"))


def test_every_step_runs_and_is_reported(dry_run):
    proc, steps, md = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(steps) == STEPS
    for name, s in steps.items():
        assert s["status"] == ("skipped" if name == "llama_bench" else "ok"), (name, s["error"], s["problems"])
        assert s["seconds"] > 0 and s["summary"]
        assert f"## {STEPS.index(name) + 1}. {s['title']}: {s['status']}" in md
    assert steps["llama_bench"]["notes"] == ["no --llama-bench PATH given"]
    assert md.count("\n| ") > 6 + 6  # the steps table, then each step's tables


def test_the_steps_measure_what_they_say(dry_run):
    _, steps, _ = dry_run
    assert steps["env"]["data"]["versions"]["gguf"] and steps["env"]["data"]["triton_interpret"] == "1"
    tests = steps["tests"]["data"]
    assert tests["passed"] > 0 and tests["failed"] == tests["errors"] == 0 and tests["exit_code"] == 0

    (row,) = steps["correctness"]["data"]["rows"]
    assert row["graph_eq_eager"] and row["eager_eq_ref"] and row["seeded_twice_same_graph"]
    assert 0 < row["max_abs_dlogit"] < 0.05 * row["logit_std"]

    gemv = steps["gemv"]["data"]
    assert "Q8_0" in gemv["formats"] and gemv["copy_bytes_per_s"] > 0
    assert {r["format"] for r in gemv["rows"]} == set(gemv["formats"])  # every format the kernels read
    for r in gemv["rows"]:
        assert "error" not in r, r
        assert r["triton"]["us"] > 0 and r["dequant_cublas"]["gb_s"] > 0 and r["max_rel_err"] < 1e-3

    decode = steps["decode"]["data"]["results"]["Q8_0"]
    assert [d["context"] for d in decode["decode"]] == [16, 48]
    assert all(d["tok_s"] > 0 and d["bytes_per_token"] > 0 for d in decode["decode"])
    assert decode["prefill"][0]["tokens"] == 8 and decode["prefill"][0]["ttft_s"] > 0
    assert Path(steps["decode"]["data"]["files"]["Q8_0"]).exists()


def test_a_failing_step_is_recorded_and_the_rest_still_run(tmp_path):
    proc, steps, md = gpu_check(tmp_path, "--steps", "decode,llama_bench", "--decode-types", "Q8_0",
                                "--decode-shape", "no-such-model", "--llama-bench", sys.executable)
    assert proc.returncode == 1
    assert list(steps) == ["decode", "llama_bench"]
    assert steps["decode"]["status"] == "failed" and "unknown model shape 'no-such-model'" in steps["decode"]["error"]
    assert steps["llama_bench"]["status"] == "skipped"  # it ran, and found no decode files to time
    assert "## 5. decode and prefill speed: failed" in md and "failed steps: decode" in proc.stdout

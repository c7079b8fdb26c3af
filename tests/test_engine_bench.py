"""`gguflm bench` on the CPU with a tiny model: the code path runs and the JSON has every field."""

import json
import subprocess
import sys

import pytest
import torch


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gguflm.cli.main", "bench", *args], capture_output=True, text=True)


def test_bench_reports_positive_numbers_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("--device", "cpu", "--shape", "tiny", "--contexts", "16,48", "--prefill", "8,24",
                     "--steps", "3", "--workdir", str(tmp_path), "--json", str(out), "-ctk", "f32,q8_0")
    assert result.returncode == 0, result.stderr
    assert "| context | KV cache K/V | decode tok/s" in result.stdout
    report = json.loads(out.read_text())
    assert report["copy_bandwidth_gb_s"] > 0 and report["weight_bytes_per_token"] > 0
    assert report["peak_memory_bytes"] > 0
    assert [(d["context"], d["cache"]) for d in report["decode"]] == [
        (16, "f32/f32"), (48, "f32/f32"), (16, "q8_0/f32"), (48, "q8_0/f32")]
    assert report["decode"][2]["bytes_per_token"] < report["decode"][0]["bytes_per_token"]  # q8_0 K: fewer bytes
    for d in report["decode"]:
        for key in ("tok_s", "tok_s_eager", "bytes_per_token", "achieved_gb_s", "fraction_of_copy_bw"):
            assert d[key] > 0, key
        assert "graph_speedup" in d
    assert report["decode"][1]["bytes_per_token"] > report["decode"][0]["bytes_per_token"]  # more KV read
    assert [p["tokens"] for p in report["prefill"]] == [8, 24]
    assert all(p["tok_s"] > 0 and p["ttft_s"] > 0 for p in report["prefill"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_without_cuda_is_one_clear_sentence(tmp_path):
    result = run_cli("--shape", "tiny", "--workdir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr

"""CPU decode and prefill tok/s of gguflm's CPU backend, beside llama.cpp on the same file with the same
thread count in the same run (when llama-cpp-python is importable here or in --llama-python).

Files: SmolLM2-135M-Instruct as shipped (Q4_1) and rewritten from its dequantized weights as F32, F16
and Q8_0 (in --workdir, made once), any --model given (a Q4_K_M file, say), and with --big a synthetic
Llama-3.2-1B-shaped Q8_0 model. Decode: --tokens single-token steps after a 16-token prompt; prefill:
one --prompt-len prompt. Each figure is the best of --repeat runs (the machine may be shared).

    python scripts/bench_cpu.py [--threads 2,1] [--formats F32,F16,Q8_0,Q4_1] [--big] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT.parent / "shared" / "testdata" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_PYTHON = Path("/work/venvs/llamacpp/bin/python")  # where this project's dev box built llama-cpp-python
QT = gguf.GGMLQuantizationType
ENV = dict(os.environ)  # as given: llama.cpp runs under it, not under what gguflm sets for itself
SKIP_KEYS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}  # the writer's own


def rewrite(src: Path, dst: Path, qtype: str) -> Path:
    """`src` with every 2-D tensor dequantized and stored as `qtype` (F32, F16 or Q8_0); 1-D tensors F32."""
    if dst.exists():
        return dst
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(dst) + ".part", arch)
    for name, field in reader.fields.items():
        if name not in SKIP_KEYS:
            sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), field.types[0], sub)
    target = QT[qtype]
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)  # numpy order (rows, cols)
        if w.ndim == 1 or target == QT.F32:
            writer.add_tensor(t.name, w)
        elif target == QT.F16:
            writer.add_tensor(t.name, w.astype(np.float16))
        else:
            writer.add_tensor(t.name, gguf.quants.quantize(w, target), raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(str(dst) + ".part", dst)
    return dst


# ---------------------------------------------------------------------------- the two runtimes

LLAMA_CPP = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, tokens, prompt_len, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=prompt_len + tokens + 32,
            n_batch=max(prompt_len, 32), verbose=False)
n_vocab = llm.n_vocab()
prompt = [(7 * i + 3) % n_vocab for i in range(prompt_len)]
dec, pre = 0.0, 0.0
for _ in range(repeat):
    llm.reset()
    t = time.perf_counter(); llm.eval(prompt); pre = max(pre, prompt_len / (time.perf_counter() - t))
    llm.reset(); llm.eval(prompt[:16])
    t = time.perf_counter()
    for i in range(tokens):
        llm.eval([(11 * i + 5) % n_vocab])
    dec = max(dec, tokens / (time.perf_counter() - t))
print(json.dumps({"decode": dec, "prefill": pre}))
"""


def bench_gguflm(path: Path, threads: int, tokens: int, prompt_len: int, repeat: int, backend: str) -> dict:
    """Best-of-`repeat` decode and prefill tok/s of gguflm's `backend` on the CPU."""
    import torch

    import gguflm

    model = gguflm.load(path, device="cpu", backend=backend, threads=threads)
    n_vocab, b = model.config.n_vocab, model.backend
    prompt = [(7 * i + 3) % n_vocab for i in range(prompt_len)]
    b.prefill_last(prompt[:16], b.new_cache(prompt_len + 4))  # first calls: compile (or load) the kernels
    dec, pre = 0.0, 0.0
    with torch.inference_mode():
        for _ in range(repeat):
            cache = b.new_cache(prompt_len + tokens + 32)
            t = time.perf_counter()
            b.prefill_last(prompt, cache)
            pre = max(pre, prompt_len / (time.perf_counter() - t))
            cache = b.new_cache(prompt_len + tokens + 32)
            b.prefill_last(prompt[:16], cache)
            t = time.perf_counter()
            for i in range(tokens):
                b.decode((11 * i + 5) % n_vocab, cache)
            dec = max(dec, tokens / (time.perf_counter() - t))
    return {"decode": dec, "prefill": pre, "backend": type(b).__name__}


def bench_llama_cpp(python: str | None, path: Path, threads: int, tokens: int, prompt_len: int,
                    repeat: int) -> dict | None:
    if python is None:
        return None
    run = subprocess.run([python, "-c", LLAMA_CPP, str(path), str(threads), str(tokens), str(prompt_len), str(repeat)],
                         capture_output=True, text=True, env=ENV)
    if run.returncode:
        print(f"llama.cpp failed on {path.name}: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def find_llama_python(given: str | None) -> str | None:
    """A python that imports llama_cpp: --llama-python, this one, or the dev box's llamacpp venv."""
    for python in [given, sys.executable, str(LLAMA_PYTHON) if LLAMA_PYTHON.exists() else None]:
        if python and subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
            return python
    return None


# ---------------------------------------------------------------------------- main


def main() -> None:
    from gguflm.threads import physical_cores, prefer_passive_openmp

    prefer_passive_openmp()  # as the command line does, before torch loads

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default=str(physical_cores()), help="thread counts, comma-separated (both runtimes)")
    ap.add_argument("--formats", default="F32,F16,Q8_0,Q4_1", help="SmolLM2-135M files to time (Q4_1: as shipped)")
    ap.add_argument("--model", action="append", default=[], help="another GGUF file to time (repeatable)")
    ap.add_argument("--big", action="store_true", help="also a synthetic Llama-3.2-1B-shaped Q8_0 model")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default="cpu", help="gguflm backends to time, comma-separated (cpu, reference)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gguflm-bench-cpu"))
    ap.add_argument("--llama-python", default=None, help="a python with llama_cpp installed")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        if fmt == "Q4_1":
            files.append((f"SmolLM2-135M {fmt}", SMOLLM2))
        else:
            files.append((f"SmolLM2-135M {fmt}", rewrite(SMOLLM2, args.workdir / f"SmolLM2-135M-{fmt}.gguf", fmt)))
    files += [(Path(m).name, Path(m)) for m in args.model]
    if args.big:
        from gguflm.synthetic.shapes import synthetic_model

        files.append(("synthetic llama-3.2-1b Q8_0", synthetic_model("llama-3.2-1b", args.workdir)))

    llama_python = find_llama_python(args.llama_python)
    rows = []
    print(f"decode {args.tokens} tokens, prefill {args.prompt_len} tokens, best of {args.repeat}; "
          f"llama.cpp: {llama_python or 'not importable'}")
    print("| model | threads | gguflm backend | decode tok/s | prefill tok/s | llama.cpp decode | llama.cpp prefill "
          "| decode ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for label, path in files:
        for threads in [int(t) for t in args.threads.split(",")]:
            theirs = bench_llama_cpp(llama_python, path, threads, args.tokens, args.prompt_len, args.repeat)
            for backend in args.backends.split(","):
                ours = bench_gguflm(path, threads, args.tokens, args.prompt_len, args.repeat, backend.strip())
                rows.append({"model": label, "file": str(path), "threads": threads, "gguflm": ours, "llama_cpp": theirs})
                lc = (f"{theirs['decode']:.1f} | {theirs['prefill']:.1f} | {ours['decode'] / theirs['decode']:.2f}x"
                      if theirs else "- | - | -")
                print(f"| {label} | {threads} | {ours['backend']} | {ours['decode']:.1f} | {ours['prefill']:.1f} | {lc} |",
                      flush=True)
    if args.json:
        from gguflm.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n", "the results")


if __name__ == "__main__":
    main()

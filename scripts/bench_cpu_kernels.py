"""CPU matvec kernels alone: G weights/s and GB/s of packed bytes read, per format, one row of x.

Random valid blocks (legacy formats: random bytes with small fp16 scales; k-quants:
`gguflm.synthetic.kblocks`), the kernel called as the backend calls it (`gguflm.cpu.linear`, so the
per-call costs count), best of --repeat rounds of --calls calls, rounds interleaved across formats so
a busy machine slows each alike:

    python scripts/bench_cpu_kernels.py [--formats Q8_0,Q5_0,Q4_K,Q6_K] [--shape 3072x768] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import gguf
import numpy as np
import torch

from gguflm import cpu, quants
from gguflm.synthetic import kblocks

QT = gguf.GGMLQuantizationType


def random_weight(name: str, n: int, k: int, seed: int = 0) -> quants.PackedWeight:
    qtype = QT[name]
    rng = np.random.default_rng(seed)
    if kblocks.supports(qtype):
        raw = kblocks.random_blocks(rng, n, k, qtype)
    else:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
        n_floats = 2 if name in ("Q4_1", "Q5_1") else 1
        raw[:, :, : 2 * n_floats] = (rng.random((n, k // block, n_floats)) * 0.01).astype(np.float16).view(np.uint8)
        raw = raw.reshape(n, -1)
    return quants.pack(torch.from_numpy(np.ascontiguousarray(raw)), qtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K")
    ap.add_argument("--shape", default="3072x768", help="N x K of the matrix (K a multiple of 256 for k-quants)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    n, k = (int(v) for v in args.shape.split("x"))
    names = [f.strip() for f in args.formats.split(",") if f.strip()]
    weights = {name: random_weight(name, n, k) for name in names}
    x = torch.randn(1, k)
    best = dict.fromkeys(names, float("inf"))
    for name, w in weights.items():
        if cpu.kernel_for(w) is None:
            print(f"{name}: no CPU kernel (reference path)")
        cpu.linear(x, w, n_threads=args.threads)  # compile or load
    for _ in range(args.repeat):
        for name, w in weights.items():
            t = time.perf_counter()
            for _ in range(args.calls):
                cpu.linear(x, w, n_threads=args.threads)
            best[name] = min(best[name], (time.perf_counter() - t) / args.calls)
    print(f"{n}x{k}, {args.threads} thread(s), best of {args.repeat} x {args.calls} calls")
    print("| format | us per call | G weights/s | GB/s read |")
    print("|---|---:|---:|---:|")
    for name, w in weights.items():
        s = best[name]
        print(f"| {name} | {s * 1e6:.0f} | {n * k / s / 1e9:.2f} | {w.nbytes / s / 1e9:.2f} |")


if __name__ == "__main__":
    main()

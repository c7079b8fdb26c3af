"""Speed of each CPU kernel alone (gguflm/cpu/), for every format with one: the matvec of one row of x
against an N x K matrix (decode) on 1 and 2 threads, and the expansion of one GEMM-path chunk (prefill),
in G weights/s and GB/s of the format's bytes, so formats can be compared per weight and per byte.

Weights are random valid blocks (every quant bit uniform, fp16 scales small), built in the file layout
and packed as the loader packs them. Rounds are interleaved over the formats so a busy machine slows all
alike; each figure is the best round.

    python scripts/bench_cpu_kernels.py [--n 4096] [--k 4096] [--rounds 10] [--formats Q8_0,Q2_K]
"""

from __future__ import annotations

import argparse
import os
import time

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType


def random_rows(name: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, row bytes) uint8 of format `name`: dense rows from Gaussian floats, block formats from random
    bytes with their fp16 scale fields (d, and m / dmin where there is one) set small and finite."""
    from gguflm.synthetic import RANDOM_BLOCKS, kblocks

    qtype = QT[name]
    if name in ("F32", "F16", "BF16"):
        w = rng.standard_normal((n, k), dtype=np.float32) / np.float32(np.sqrt(k))
        if name == "BF16":
            return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return w.astype(np.float16 if name == "F16" else np.float32).view(np.uint8)
    if kblocks.supports(qtype):
        return kblocks.random_blocks(rng, n, k, qtype)
    if name in RANDOM_BLOCKS:
        return RANDOM_BLOCKS[name](rng, n, k).reshape(n, -1)
    block, size = gguf.GGML_QUANT_SIZES[qtype]  # legacy blocks: fp16 d (and m) lead the block
    raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
    n_floats = 2 if name in ("Q4_1", "Q5_1") else 1
    raw[:, :, : 2 * n_floats] = (rng.random((n, k // block, n_floats)) * 0.01).astype(np.float16).view(np.uint8)
    return raw.reshape(n, -1)


def best_time(fn, rounds: int = 3) -> float:
    fn()  # warm (and compiled)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="rows of the matrix")
    parser.add_argument("--k", type=int, default=4096, help="row length (a multiple of 256)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--formats", default="", help="comma-separated subset (default: every format with a kernel)")
    args = parser.parse_args()

    from gguflm.threads import prefer_passive_openmp

    prefer_passive_openmp()  # as the command line does, before torch loads
    import torch

    from gguflm import cpu, ops, quants

    names = [f.name for f in quants.FORMATS.values() if cpu.KERNELS.lookup(f.kernel) is not None]
    if args.formats:
        names = [n for n in names if n in args.formats.split(",")]
    rng = np.random.default_rng(0)
    weights = {name: quants.pack(torch.from_numpy(np.ascontiguousarray(random_rows(name, args.n, args.k, rng))),
                                 QT[name]) for name in names}
    x = torch.randn(1, args.k).numpy()  # the matvecs take numpy arrays
    out = np.empty((1, args.n), dtype=np.float32)
    step = ops.EXPAND_BYTES // (4 * args.k)  # the GEMM path's chunk of rows
    buf = torch.empty(step, args.k)
    cases = [("matvec", 1), ("matvec", 2), ("expand", 1), ("expand", 2)]
    best = {(name, case): float("inf") for name in names for case in cases}
    for _ in range(args.rounds):
        for name, w in weights.items():
            kern = cpu.kernel_for(w)
            planes, chunk = cpu.planes_of(kern, w.parts), cpu.planes_of(kern, w.rows(slice(0, step)).parts)
            for what, n_threads in cases:
                run = (lambda: kern.matvec(planes, x, out)) if what == "matvec" else (lambda: kern.expand(chunk, buf))
                with cpu.threads(n_threads):
                    key = (name, (what, n_threads))
                    best[key] = min(best[key], best_time(run))
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
    print(f"{args.n} x {args.k}, matvec of 1 row; expand of {step} x {args.k} rows; best of {args.rounds} rounds; "
          f"load average after: {load}")
    print("| format | bits/weight | matvec 1 thread G weights/s (GB/s) | matvec 2 threads | expand 1 thread "
          "G weights/s | expand 2 threads |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, w in weights.items():
        bits = 8 * w.nbytes / (args.n * args.k)

        def rate(what, n_threads, rows=args.n):
            return rows * args.k / best[(name, (what, n_threads))] / 1e9

        cells = [f"{rate('matvec', t):.2f} ({rate('matvec', t) * bits / 8:.1f})" for t in (1, 2)]
        cells += [f"{rate('expand', t, step):.2f}" for t in (1, 2)]
        print(f"| {name} | {bits:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

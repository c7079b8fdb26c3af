"""CPU reference dequantization speed per format, per byte of the file, beside Q8_0's.

The reference backend expands weights a chunk of rows at a time (gguflm.ops.EXPAND_BYTES of fp32);
this times that expansion for each block format on random valid blocks, rounds interleaved so a
busy machine slows every format alike, and reports the best round:

    python scripts/bench_dequant.py [--threads 1] [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import gguf
import numpy as np
import torch

from gguflm import ops, quants

FORMATS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")


def random_rows(name: str, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """(n, row bytes) uint8 of random blocks with small finite fp16 scales (and minimums)."""
    qtype = gguf.GGMLQuantizationType[name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
    n_floats = 2 if name in ("Q4_1", "Q5_1") else 1
    raw[:, :, : 2 * n_floats] = (rng.random((n, k // block, n_floats)) * 0.01).astype(np.float16).view(np.uint8)
    return torch.from_numpy(raw.reshape(n, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--k", type=int, default=1024, help="row length; rows fill one expansion chunk")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = ops.EXPAND_BYTES // (4 * args.k)
    weights = {name: quants.pack(random_rows(name, n, args.k), gguf.GGMLQuantizationType[name]) for name in FORMATS}
    best = {name: float("inf") for name in FORMATS}
    for _ in range(args.rounds):
        for name, w in weights.items():
            w.dequantize()  # warm
            started = time.perf_counter()
            for _ in range(5):
                w.dequantize()
            best[name] = min(best[name], (time.perf_counter() - started) / 5)
    q8 = weights["Q8_0"].nbytes / best["Q8_0"]
    print(f"{n} x {args.k} rows per chunk, {args.threads} thread(s), best of {args.rounds} rounds")
    print("| format | us per chunk | MB/s of file bytes | Mweights/s | per byte vs Q8_0 |")
    print("|---|---:|---:|---:|---:|")
    for name, w in weights.items():
        bps = w.nbytes / best[name]
        print(f"| {name} | {1e6 * best[name]:.0f} | {bps / 1e6:.0f} | {n * args.k / best[name] / 1e6:.0f} "
              f"| {bps / q8:.2f}x |")


if __name__ == "__main__":
    main()

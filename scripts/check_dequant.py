"""Every block-quantized tensor of a GGUF file, dequantized by the quant registry (as the loader packs
it) and by gguf-py's `gguf.quants.dequantize`: bit-exact or not, counted per type.

    python scripts/check_dequant.py MODEL.gguf [--rows 4096]

--rows caps the rows compared per tensor (0: all). Exit status 1 if any tensor differs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import gguf
import numpy as np
import torch

from gguflm import quants
from gguflm.gguf_file import open_gguf


def check(path: str, max_rows: int) -> dict[str, list[int]]:
    """type name -> [tensors bit-exact, tensors that differ]."""
    gf = open_gguf(path)
    counts: dict[str, list[int]] = {}
    for name, t in gf.tensors.items():
        fmt = quants.lookup(t.tensor_type)
        if fmt is None or fmt.torch_dtype is not None or len(t.shape) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            raw = np.asarray(t.data).view(np.uint8).reshape(-1, fmt.row_bytes(int(t.shape[0])))
        raw = raw[:max_rows] if max_rows else raw
        ours = quants.pack(torch.from_numpy(raw.copy()), t.tensor_type).dequantize().numpy()
        same = np.array_equal(ours, gguf.quants.dequantize(raw, t.tensor_type))
        counts.setdefault(fmt.name, [0, 0])[0 if same else 1] += 1
        if not same:
            print(f"{name}: {fmt.name} differs from gguf.quants", file=sys.stderr)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rows", type=int, default=4096, help="rows compared per tensor (0: all)")
    args = parser.parse_args()
    counts = check(args.model, args.rows)
    for name, (same, differ) in sorted(counts.items()):
        print(f"{name}: {same} tensors bit-exact, {differ} differ")
    sys.exit(1 if any(differ for _, differ in counts.values()) else 0)


if __name__ == "__main__":
    main()

"""ggml's own block quantizers (ggml-quants.c from a llama.cpp source tree) as a shared library,
called with ctypes: the oracle gguflm's quantizers are compared against byte for byte.

A development check, not part of the suite: `build` compiles ggml-quants.c with the few ggml
symbols it needs given here, at -O2 without -march (so no FMA contraction: plain float32
arithmetic, the arithmetic gguflm reproduces). The suite's oracle test uses the library when
GGUFLM_GGML_QUANTS_LIB names it (default /tmp/ggml_ref/libggmlquants.so) and skips otherwise.

    python scripts/ggml_quants_oracle.py build /path/to/llama.cpp [--out /tmp/ggml_ref/libggmlquants.so]
    python scripts/ggml_quants_oracle.py compare [--rows 64 --cols 4096 --seeds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType
DEFAULT_LIB = Path(os.environ.get("GGUFLM_GGML_QUANTS_LIB", "/tmp/ggml_ref/libggmlquants.so"))
# llama-quantize calls quantize_<type>(src, dst, nrows, n_per_row, imatrix=NULL) through ggml_quantize_chunk
NAMES = {QT.Q4_0: "q4_0", QT.Q4_1: "q4_1", QT.Q5_0: "q5_0", QT.Q5_1: "q5_1", QT.Q8_0: "q8_0", QT.Q2_K: "q2_K",
         QT.Q3_K: "q3_K", QT.Q4_K: "q4_K", QT.Q5_K: "q5_K", QT.Q6_K: "q6_K", QT.IQ4_NL: "iq4_nl",
         QT.IQ4_XS: "iq4_xs"}

# The ggml symbols ggml-quants.c links against, for the types above.
_STUBS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "abort %s:%d\n", file, line); abort(); }
static int blck(enum ggml_type t) { switch (t) { case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0:
  case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0: case GGML_TYPE_IQ4_NL: return 32; default: return 256; } }
size_t ggml_type_size(enum ggml_type t) { switch (t) {
  case GGML_TYPE_Q4_0: return 18; case GGML_TYPE_Q4_1: return 20; case GGML_TYPE_Q5_0: return 22;
  case GGML_TYPE_Q5_1: return 24; case GGML_TYPE_Q8_0: return 34; case GGML_TYPE_IQ4_NL: return 18;
  case GGML_TYPE_Q2_K: return 84; case GGML_TYPE_Q3_K: return 110; case GGML_TYPE_Q4_K: return 144;
  case GGML_TYPE_Q5_K: return 176; case GGML_TYPE_Q6_K: return 210; case GGML_TYPE_IQ4_XS: return 136;
  default: abort(); } }
size_t ggml_row_size(enum ggml_type t, int64_t ne) { return ggml_type_size(t) * ne / blck(t); }
const char * ggml_type_name(enum ggml_type t) { (void) t; return "?"; }
"""


def build(src: Path, out: Path) -> Path:
    ggml = src / "ggml"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        stub = Path(d) / "stubs.c"
        stub.write_text(_STUBS)
        objs = []
        for c in (ggml / "src" / "ggml-quants.c", stub):
            o = Path(d) / (c.stem + ".o")
            subprocess.run(["gcc", "-O2", "-fPIC", "-std=gnu11", "-DNDEBUG", f"-I{ggml / 'include'}",
                            f"-I{ggml / 'src'}", "-c", str(c), "-o", str(o)], check=True)
            objs.append(str(o))
        subprocess.run(["gcc", "-shared", "-o", str(out), *objs, "-lm"], check=True)
    return out


class Oracle:
    def __init__(self, lib: Path = DEFAULT_LIB):
        self.lib = ctypes.CDLL(str(lib))

    def quantize(self, rows: np.ndarray, qtype: QT) -> np.ndarray:
        """(N, K) float32 -> (N, row_bytes) uint8, by ggml's quantize_<type> without an importance matrix."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        n, k = rows.shape
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        out = np.zeros((n, k // block * size), dtype=np.uint8)
        fn = getattr(self.lib, "quantize_" + NAMES[qtype])
        fn.restype = ctypes.c_size_t
        fn(rows.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n),
           ctypes.c_int64(k), None)
        return out


def hard_rows(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Random rows of mixed scales, with the cases searches trip on: zero runs, one sign, outliers, ties."""
    x = (rng.standard_normal((n, k)) * rng.choice([1e-4, 1e-2, 1.0, 50.0], size=(n, 1))).astype(np.float32)
    x[0, : k // 3] = 0
    x[1] = np.abs(x[1])
    x[2, ::5] *= 30
    x[3] = np.round(x[3] * 4) / 4  # many equal values
    x[4, :] = 0.5
    return x


def compare(rows: int, cols: int, seeds: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gguflm.quantize.blocks import quantize_rows

    oracle, bad = Oracle(), 0
    for qtype in NAMES:
        diffs = 0
        for seed in range(seeds):
            x = hard_rows(np.random.default_rng(seed), rows, cols)
            diffs += int((quantize_rows(x, qtype) != oracle.quantize(x, qtype)).any(axis=1).sum())
        print(f"{qtype.name:7s} {'identical' if diffs == 0 else f'{diffs} rows differ'} "
              f"({seeds} x {rows} rows of {cols})")
        bad += diffs
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("llama_cpp", type=Path)
    b.add_argument("--out", type=Path, default=DEFAULT_LIB)
    c = sub.add_parser("compare")
    c.add_argument("--rows", type=int, default=64)
    c.add_argument("--cols", type=int, default=4096)
    c.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "build":
        print(build(args.llama_cpp, args.out))
        return 0
    return compare(args.rows, args.cols, args.seeds)


if __name__ == "__main__":
    sys.exit(main())

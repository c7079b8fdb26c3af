"""What each quantization type costs on a real model: `gguflm quantize` every type, then per type the
tensors' RMSE (against the source weights), llama.cpp's own quantizer's RMSE on the same tensors
(ggml-quants.c via scripts/ggml_quants_oracle.py, when its library is built) and whether the
bytes are identical, and --verify's KL divergence / top-1 agreement / max |dlogit| against the
source. Prints a markdown table (the one in models.md).

    python scripts/quantize_quality.py ../shared/testdata/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --types Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,IQ4_XS,Q3_K_M,Q2_K [--no-verify]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from ggml_quants_oracle import DEFAULT_LIB, NAMES, Oracle  # noqa: E402

from gguflm.gguf_file import open_gguf  # noqa: E402
from gguflm.quantize.rewrite import CHUNK_BYTES, quantize_file, source_rows  # noqa: E402
from gguflm.quantize.verify import all_logits, compare_logits  # noqa: E402


def rmse_rows(src, out, oracle: Oracle | None) -> tuple[float, float | None, bool | None]:
    """(relative RMSE of gguflm's tensors, of ggml's on the same rows, bytes identical) over every re-encoded tensor."""
    se = ss = se_ref = 0.0
    identical = True if oracle else None
    for name, a in src.tensors.items():
        b = out.tensors[name]
        if b.tensor_type == a.tensor_type:
            continue
        rows = a.n_elements // a.shape[0]
        step = max(1, CHUNK_BYTES // (4 * a.shape[0]))
        for r in range(0, rows, step):
            x = source_rows(a, r, min(rows, r + step))
            y = source_rows(b, r, min(rows, r + step))
            se += float(((x.astype(np.float64) - y) ** 2).sum())
            ss += float((x.astype(np.float64) ** 2).sum())
            if oracle is not None and b.tensor_type in NAMES:
                ref = oracle.quantize(x, b.tensor_type)
                mine = np.asarray(b.data).reshape(rows, -1)[r:r + step]
                identical = identical and np.array_equal(ref, mine)
                yr = gguf.quants.dequantize(ref, b.tensor_type)
                se_ref += float(((x.astype(np.float64) - yr) ** 2).sum())
            elif oracle is not None:  # float types: the same rounding either way
                se_ref += float(((x.astype(np.float64) - y) ** 2).sum())
    if ss == 0:  # every tensor kept as it was (already in its target type)
        return 0.0, (0.0 if oracle else None), identical
    return (se / ss) ** 0.5, ((se_ref / ss) ** 0.5 if oracle else None), identical


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--types", default="Q8_0,Q6_K,Q5_K_M,Q5_K_S,Q5_1,Q5_0,Q4_K_M,Q4_K_S,Q4_1,Q4_0,IQ4_NL,IQ4_XS,"
                                          "Q3_K_L,Q3_K_M,Q3_K_S,Q2_K")
    ap.add_argument("--no-verify", action="store_true", help="Skip the KL / top-1 runs (the slow part).")
    args = ap.parse_args()
    oracle = Oracle() if DEFAULT_LIB.is_file() else None
    src = open_gguf(args.model)
    ref = None
    if not args.no_verify:
        prompts, ref, _ = all_logits(args.model)
    print("| type | size MiB | bits/weight | RMSE (gguflm) | RMSE (llama.cpp's quantizer) | bytes identical | "
          "KL mean | KL max | top-1 | max abs dlogit | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    n_weights = sum(t.n_elements for t in src.tensors.values())
    with tempfile.TemporaryDirectory(prefix="gguflm-quality-") as d:
        for name in args.types.split(","):
            out_path = Path(d) / f"{name}.gguf"
            t0 = time.perf_counter()
            quantize_file(args.model, out_path, name, allow_requantize=True)
            secs = time.perf_counter() - t0
            out = open_gguf(out_path)
            rel, rel_ref, same = rmse_rows(src, out, oracle)
            kl = ""
            if ref is not None:
                _, test, _ = all_logits(out_path, prompts)
                kl_mean, kl_max, top1, dmax, _ = compare_logits(ref, test)
                kl = f"{kl_mean:.4f} | {kl_max:.4f} | {100 * top1:.1f}% | {dmax:.3f}"
            else:
                kl = "| | |"
            size = out_path.stat().st_size
            print(f"| {name} | {size / 2**20:.1f} | {8 * size / n_weights:.2f} | {100 * rel:.3f}% | "
                  f"{'' if rel_ref is None else f'{100 * rel_ref:.3f}%'} | {'' if same is None else same} | {kl} | "
                  f"{secs:.0f} |", flush=True)
            del out
            out_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

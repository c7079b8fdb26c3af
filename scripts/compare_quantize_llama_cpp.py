"""`gguflm quantize` against llama.cpp's own llama_model_quantize (a development check, not part of the suite).

Needs llama-cpp-python in some Python (it is not a dependency of gguflm): that interpreter runs
llama_model_quantize on each model and type; this one runs gguflm's quantizer on the same input
and compares, per tensor, the type (the mix table) and the bytes, and the whole files. With no MODEL, the two tiny
models of tests/test_quantize_mixes.py (Llama- and Qwen2-shaped) are written and used.

    python scripts/compare_quantize_llama_cpp.py --llama-python /work/venvs/llamacpp/bin/python \\
        [--types Q4_K_M,Q5_K_M,Q3_K_M] [MODEL.gguf ...] [--allow-requantize]
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gguflm.quantize.mixes import get_mix  # noqa: E402
from gguflm.quantize.rewrite import quantize_file  # noqa: E402

LLAMA = r"""
import sys, llama_cpp
src, out, ftype, requant = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
llama_cpp.llama_backend_init()
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.nthread, p.allow_requantize = ftype, 2, requant
rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), p)
sys.exit(rc)
"""


def tiny_models(d: Path) -> list[Path]:
    from test_quantize_mixes import SPECS

    from gguflm.synthetic import write_synthetic_gguf

    return [write_synthetic_gguf(d / f"tiny-{arch}.gguf", spec) for arch, spec in SPECS.items()]


def compare(a: Path, b: Path) -> tuple[list[str], int, int]:
    """(type differences, tensors with equal bytes, tensors) between llama.cpp's file `a` and gguflm's `b`."""
    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    diffs = [f"{n}: llama.cpp {ta[n].tensor_type.name if n in ta else '-'}, gguflm "
             f"{tb[n].tensor_type.name if n in tb else '-'}"
             for n in sorted(set(ta) | set(tb)) if n not in ta or n not in tb or ta[n].tensor_type != tb[n].tensor_type]
    same = sum(1 for n in ta if n in tb and np.array_equal(np.asarray(ta[n].data), np.asarray(tb[n].data)))
    return diffs, same, len(ta)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="*")
    ap.add_argument("--llama-python", required=True, help="A Python with llama-cpp-python installed.")
    ap.add_argument("--types", default="Q4_K_M,Q5_K_M,Q3_K_M")
    ap.add_argument("--allow-requantize", action="store_true")
    args = ap.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="gguflm-vs-llama-") as d:
        models = args.models or tiny_models(Path(d))
        for model in models:
            for name in args.types.split(","):
                mix = get_mix(name)
                ref, mine = Path(d) / "llama.gguf", Path(d) / "gguflm.gguf"
                subprocess.run([args.llama_python, "-c", LLAMA, str(model), str(ref), str(int(mix.file_type)),
                                "1" if args.allow_requantize else "0"], check=True, capture_output=True)
                quantize_file(model, mine, mix.name, allow_requantize=args.allow_requantize)
                diffs, same, n = compare(ref, mine)
                whole = filecmp.cmp(ref, mine, shallow=False)
                print(f"{model.name} {mix.name}: {'same type table' if not diffs else f'{len(diffs)} types differ'}, "
                      f"{same}/{n} tensors byte-identical, {'the same file' if whole else 'the files differ'}")
                for line in diffs[:10]:
                    print("   ", line)
                bad += len(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

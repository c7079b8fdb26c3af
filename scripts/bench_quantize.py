"""`gguflm quantize` speed: MB/s of f16 source per type and the peak RSS of each run.

Writes a synthetic f16 GGUF of the given size (a llama of real proportions, random weights), then
quantizes it to each type in a fresh process and prints one
markdown row per type: wall MB/s, CPU MB/s (source MB per CPU second: the rate a machine not shared
with other work would see per core), seconds, peak RSS (the process's VmHWM: ru_maxrss would keep the
parent's size across fork and exec). The peak counts the source's pages, which are memory-mapped.

    python scripts/bench_quantize.py [--mib 256] [--types Q4_K_M,Q8_0,...] [--workdir /tmp/gguflm-bench-quantize]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer

CHILD = r"""
import json, re, sys, time
from gguflm.quantize.rewrite import quantize_file
src, out, qtype = sys.argv[1:4]
t0, c0 = time.perf_counter(), time.process_time()
r = quantize_file(src, out, qtype)
print(json.dumps(dict(seconds=time.perf_counter() - t0, cpu=time.process_time() - c0, source=r.source_bytes,
                      out=r.total_bytes, rss=int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1]) * 1024)))
"""


def synthetic_f16(mib: int, workdir: Path) -> Path:
    """A llama-shaped f16 model of about `mib` MiB: dim 1024, ffn 2816, vocab 32000, layers to fit."""
    dim, ffn, vocab = 1024, 2816, 32000
    per_layer = 2 * (4 * dim * dim + 3 * dim * ffn)
    head = 2 * 2 * vocab * dim
    layers = max(1, (mib * 2**20 - head) // per_layer)
    path = workdir / f"bench-f16-{mib}mib.gguf"
    if not path.exists():
        spec = SyntheticSpec(arch="llama", n_vocab=vocab, dim=dim, n_layers=layers, ffn_dim=ffn, n_heads=16,
                             n_kv_heads=4, qtype="F16")
        write_synthetic_gguf(path, spec, tokenizer=spm_tokenizer(vocab))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--types", default="Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K,IQ4_NL,IQ4_XS,BF16")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gguflm-bench-quantize")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = synthetic_f16(args.mib, args.workdir)
    print(f"source: {src.name}, {src.stat().st_size / 2**20:.0f} MiB f16")
    print("| type | MB/s (wall) | MB/s (per CPU second) | seconds | peak RSS MiB | output MiB |")
    print("|---|---|---|---|---|---|")
    out = args.workdir / "out.gguf"
    for qtype in args.types.split(","):
        res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), qtype], capture_output=True,
                             text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        mb = r["source"] / 1e6
        print(f"| {qtype} | {mb / r['seconds']:.1f} | {mb / r['cpu']:.1f} | {r['seconds']:.1f} | "
              f"{r['rss'] / 2**20:.0f} | {r['out'] / 2**20:.0f} |", flush=True)
        out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

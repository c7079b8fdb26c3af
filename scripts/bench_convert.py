"""Converter benchmark: a synthetic ~2 GB bf16 Llama-shaped sharded checkpoint to q8_0 and f16.

Reports peak RSS of each conversion (measured inside a fresh subprocess from /proc/self/status
VmHWM) against the checkpoint size, and throughput in MiB/s of checkpoint read.
Usage: python scripts/bench_convert.py [--layers 22] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

# TinyLlama-1.1B's shapes: 22 layers of 2048 wide, GQA 32/4 heads, 5632 ffn, 32000 vocab (~2.2 GB in bf16).
SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
             vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0)
SHARD_BYTES = 500 * 2**20

_CHILD = """
import sys, time
from gguflm.convert import convert_checkpoint
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
base = hwm()
t = time.perf_counter()
convert_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3])
print(base, hwm(), time.perf_counter() - t)
"""


def layer_shapes(i: int) -> dict[str, tuple[int, ...]]:
    h, f = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    kv = h // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    p = f"model.layers.{i}."
    return {p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h), p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)}


def make_checkpoint(d: Path, n_layers: int) -> int:
    """Write config.json, bf16 shards and the index; return the total tensor bytes."""
    h, v = SHAPE["hidden_size"], SHAPE["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(n_layers):
        shapes.update(layer_shapes(i))
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    weight_map, shard, shard_bytes, files, total = {}, {}, 0, [], 0
    gen = torch.Generator().manual_seed(0)

    def flush() -> None:
        nonlocal shard, shard_bytes
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, str(d / name), metadata={"format": "pt"})
        files.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, shard_bytes = {}, 0

    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
        shard[name] = t
        shard_bytes += t.numel() * 2
        total += t.numel() * 2
        if shard_bytes >= SHARD_BYTES:
            flush()
    if shard:
        flush()
    final = {f: f.replace(".safetensors", f"-of-{len(files):05d}.safetensors") for f in files}
    for old, new in final.items():
        (d / old).rename(d / new)
    index = {"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in weight_map.items()}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    config = dict(SHAPE, architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=n_layers,
                  torch_dtype="bfloat16", tie_word_embeddings=False)
    (d / "config.json").write_text(json.dumps(config))
    return total


def run_one(src: Path, out: Path, outtype: str) -> tuple[int, int, float]:
    """(baseline RSS after imports, peak RSS, seconds) of one conversion in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), outtype],
                          capture_output=True, text=True, check=True)
    base, peak, secs = proc.stdout.split()
    return int(base), int(peak), float(secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--keep", type=Path, default=None, help="Build in this folder and keep it.")
    args = ap.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "synthetic-llama"
        d.mkdir(exist_ok=True)
        t = time.perf_counter()
        size = make_checkpoint(d, args.layers)
        n_shards = len(list(d.glob("*.safetensors")))
        print(f"checkpoint: {size / 2**30:.2f} GiB bf16 in {n_shards} shards, built in {time.perf_counter() - t:.0f}s")
        ok = True
        for outtype in ("q8_0", "f16"):
            out = Path(tmp) / f"out-{outtype}.gguf"
            base, peak, secs = run_one(d, out, outtype)
            within = peak < size / 4
            ok &= within
            print(f"{outtype:>5}: {secs:6.1f}s  {size / 2**20 / secs:7.1f} MiB/s read  "
                  f"peak RSS {peak / 2**20:6.0f} MiB (after imports {base / 2**20:.0f} MiB; "
                  f"limit {size / 4 / 2**20:.0f} MiB: {'ok' if within else 'OVER'})  "
                  f"output {out.stat().st_size / 2**30:.2f} GiB")
            out.unlink()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

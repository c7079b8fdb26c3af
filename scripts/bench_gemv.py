"""Decode GEMV bandwidth of every format the quant registry holds and the Triton GEMV reads, at the
layer shapes of real models, next to dequantize + cuBLAS and a dense fp16 cuBLAS GEMV.

Each result is achieved GB/s (the weight as stored + x + y over the median time) and its fraction
of the device-to-device copy bandwidth measured in the same run; weight sets are rotated so L2
never holds them. Step 4 of scripts/gpu_check.py runs the same table. Alone, on a CUDA GPU:

    python scripts/bench_gemv.py [--models llama-3-8b,qwen2.5-7b] [--json bench_gemv.json]

On any machine, the CPU reference path's speed per stored byte of each block format against Q8_0's:

    python scripts/bench_gemv.py --cpu-reference 4096x4096
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import gguf
import numpy as np
import torch
import torch.nn.functional as F

from gguflm import quants
from gguflm.quants import PackedWeight, QuantFormat
from gguflm.synthetic import kblocks

MODELS = ("llama-3-8b", "qwen2.5-7b")
POOL_ROWS = 16  # Gaussian rows quantized by gguf-py; weights draw their blocks from this pool


@dataclass(frozen=True)
class Layer:
    model: str
    name: str
    n: int  # rows as stored (gate and up together for a fused gate+up)
    k: int
    glu: bool = False


def model_layers(model: str) -> list[Layer]:
    """The decode GEMVs of one model shape (gguflm.synthetic.shapes), as the loader fuses them."""
    from gguflm.synthetic.shapes import shape_spec

    c = shape_spec(model).config
    return [Layer(model, "qkv", c.q_dim + 2 * c.kv_dim, c.dim), Layer(model, "attn_out", c.dim, c.q_dim),
            Layer(model, "gate+up", 2 * c.ffn_dim, c.dim, glu=True), Layer(model, "down", c.dim, c.ffn_dim),
            Layer(model, "output", c.n_vocab, c.dim)]


# Shapes for checking the code path on the CPU: rows a multiple of every block size (256)
TINY_LAYERS = [Layer("tiny", "qkv", 48, 256), Layer("tiny", "gate+up", 64, 512, glu=True)]


def gemv_formats() -> list[QuantFormat]:
    """The registry's formats that the Triton GEMV has a kernel for."""
    from gguflm.kernels import supports

    return [f for f in quants.FORMATS.values() if supports(f)]


# ---------------------------------------------------------------------------- weights and timing


def random_weight(fmt: QuantFormat, n: int, k: int, device: torch.device, seed: int = 0) -> PackedWeight:
    """An (n, k) weight in `fmt`'s device layout, packed by the registry as the loader packs file rows.

    Dense formats: Gaussian values. Block formats: blocks that gguf-py quantized from Gaussian rows, drawn
    at random from a small pool; where gguf-py has no quantizer, random bytes with the float parts of the
    packed layout (the block scales) set to small positive values.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    if kblocks.supports(fmt.ggml_type):  # superblock formats: random valid blocks (gguf-py cannot quantize them)
        raw = kblocks.random_blocks(np.random.default_rng(seed), n, k, fmt.ggml_type)
        return quants.pack(torch.from_numpy(raw).to(device), fmt.ggml_type)
    if fmt.torch_dtype is not None:
        w = torch.randn(n, k, device=device, generator=g) / math.sqrt(k)
        return quants.pack(w.to(fmt.torch_dtype).view(torch.uint8), fmt.ggml_type)
    n_blocks = n * (k // fmt.block_size)
    rows = np.random.default_rng(seed).standard_normal((POOL_ROWS, k), dtype=np.float32) / np.sqrt(k)
    try:
        pool = np.ascontiguousarray(gguf.quants.quantize(rows, fmt.ggml_type)).view(np.uint8)
    except NotImplementedError:
        raw = torch.randint(0, 256, (n, fmt.row_bytes(k)), dtype=torch.uint8, device=device, generator=g)
        w = quants.pack(raw, fmt.ggml_type)
        for part in w.parts:
            if part.is_floating_point():
                part.copy_(torch.rand(part.shape, device=device, generator=g) * 0.01 + 0.001)
        if not torch.isfinite(w.rows(slice(0, 8)).dequantize()).all():
            raise ValueError(f"random {fmt.name} blocks dequantize to inf/NaN, and gguf-py has no {fmt.name} quantizer")
        return w
    blocks = torch.from_numpy(pool.reshape(-1, fmt.type_size).copy()).to(device)  # (POOL_ROWS * k / block, type_size)
    pick = torch.randint(0, blocks.shape[0], (n_blocks,), device=device, generator=g)
    return quants.pack(blocks[pick].view(n, fmt.row_bytes(k)), fmt.ggml_type)


def median_ms(fn, device: torch.device) -> float:
    """Median milliseconds of fn(): triton.testing.do_bench on CUDA (events, L2 flushed); one timed call on the CPU."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()  # warm-up
    started = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - started)  # the CPU runs the code path, not a benchmark


def rotating(make, n_sets: int):
    """A zero-argument callable that runs make(i) on the next of n_sets weight sets."""
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % n_sets
        return make(state["i"])
    return call


def l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 60 * 2**20


# ---------------------------------------------------------------------------- one row


def _ours(x, w: PackedWeight, glu: bool):
    from gguflm.kernels import gemv, gemv_silu_mul

    return gemv_silu_mul(x, w) if glu else gemv(x, w)


def _dequant_cublas(x16, w: PackedWeight, glu: bool):
    y = F.linear(x16, w.dequantize(x16.dtype))
    if glu:
        half = y.shape[-1] // 2
        y = F.silu(y[:half]) * y[half:]
    return y


def measure(layer: Layer, fmt: QuantFormat, copy_bps: float, device: torch.device) -> dict:
    """Triton GEMV and dequantize + cuBLAS for one layer in one format: us, GB/s, fraction of copy bandwidth."""
    n_sets = max(2, math.ceil(4 * l2_bytes(device) / max(1, fmt.row_bytes(layer.k) * layer.n))) if device.type == "cuda" else 1
    sets = [random_weight(fmt, layer.n, layer.k, device, seed=i) for i in range(n_sets)]
    x = torch.randn(layer.k, device=device, generator=torch.Generator(device=device).manual_seed(99))
    x16 = x.to(torch.float16 if device.type == "cuda" else torch.float32)
    n_out = layer.n // 2 if layer.glu else layer.n
    io_bytes = (layer.k + n_out) * 4
    weight_bytes = sets[0].nbytes
    ref = _dequant_cublas(x, sets[0], layer.glu)  # fp32 math on the same weights
    got = _ours(x, sets[0], layer.glu)
    row = dict(model=layer.model, layer=layer.name, n=layer.n, k=layer.k, format=fmt.name,
               bits_per_weight=8 * weight_bytes / (layer.n * layer.k),
               max_rel_err=float((got - ref).abs().max() / ref.abs().max()))
    for name, fn, nbytes in (("triton", rotating(lambda i: _ours(x, sets[i], layer.glu), n_sets), weight_bytes + io_bytes),
                             ("dequant_cublas", rotating(lambda i: _dequant_cublas(x16, sets[i], layer.glu), n_sets),
                              weight_bytes + io_bytes)):
        ms = median_ms(fn, device)
        row[name] = dict(us=1e3 * ms, gb_s=nbytes / ms / 1e6, frac_of_copy=nbytes / ms * 1e3 / copy_bps)
    return row


def measure_dense_fp16(layer: Layer, copy_bps: float, device: torch.device) -> dict:
    """The same layer as a dense fp16 weight through cuBLAS: what a dense GEMV reaches on this device."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    nbytes = layer.n * layer.k * torch.finfo(dtype).bits // 8
    n_sets = max(2, math.ceil(4 * l2_bytes(device) / nbytes)) if device.type == "cuda" else 1
    ws = [torch.randn(layer.n, layer.k, device=device).to(dtype) for _ in range(n_sets)]
    x = torch.randn(layer.k, device=device).to(dtype)
    ms = median_ms(rotating(lambda i: F.linear(x, ws[i]), n_sets), device)
    total = nbytes + (layer.k + layer.n) * x.element_size()
    return dict(us=1e3 * ms, gb_s=total / ms / 1e6, frac_of_copy=total / ms * 1e3 / copy_bps)


# ---------------------------------------------------------------------------- the table


def run_table(layers: list[Layer], formats: list[QuantFormat], device: torch.device, copy_bps: float,
              deadline: float | None = None) -> tuple[list[dict], list[str]]:
    """Rows for every (layer, format), layer by layer; returns (rows, the layers not started before `deadline`,
    a time.time()). A row that fails holds its error instead of timings; the rest still run.
    """
    rows, left_out = [], []
    for layer in layers:
        if deadline is not None and time.time() > deadline:
            left_out.append(f"{layer.model} {layer.name}")
            continue
        dense = measure_dense_fp16(layer, copy_bps, device)
        for fmt in formats:
            if layer.k % fmt.block_size:
                continue  # this format cannot hold rows of this length
            try:
                row = measure(layer, fmt, copy_bps, device)
            except Exception as e:  # noqa: BLE001 (a failing format is a row of the report)
                row = dict(model=layer.model, layer=layer.name, n=layer.n, k=layer.k, format=fmt.name,
                           error=f"{type(e).__name__}: {e}")
            row["cublas_fp16"] = dense
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # this row's weight sets are gone
    return rows, left_out


def markdown(rows: list[dict], copy_bps: float) -> str:
    lines = [f"copy bandwidth {copy_bps / 1e9:.0f} GB/s (device-to-device, bytes read + written)", "",
             "| model | layer | N x K | format | bits/w | Triton us | GB/s | % copy | dequant+cuBLAS us | % copy "
             "| cuBLAS fp16 us | % copy | max rel err |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['model']} | {r['layer']} | {r['n']}x{r['k']} | {r['format']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:200]} |||||||||")
            continue
        t, b, c = r["triton"], r["dequant_cublas"], r["cublas_fp16"]
        lines.append(f"{head} {r['bits_per_weight']:.2f} | {t['us']:.1f} | {t['gb_s']:.0f} | {100 * t['frac_of_copy']:.0f}% "
                     f"| {b['us']:.1f} | {100 * b['frac_of_copy']:.0f}% | {c['us']:.1f} | {100 * c['frac_of_copy']:.0f}% "
                     f"| {r['max_rel_err']:.1e} |")
    return "\n".join(lines)


def cpu_reference_table(n: int, k: int, repeats: int = 9) -> list[dict]:
    """The CPU reference path (ops.linear: rows expanded a chunk at a time) for one (n, k) weight in every
    block format that can hold rows of k: the best of `repeats` rounds (each round times every format once,
    so a busy machine slows them alike), stored GB/s, per-byte speed vs Q8_0."""
    from gguflm import ops

    device = torch.device("cpu")
    x = torch.randn(1, k, generator=torch.Generator().manual_seed(1))
    fmts = [f for f in quants.FORMATS.values() if f.torch_dtype is None and k % f.block_size == 0]
    weights = {f.name: random_weight(f, n, k, device) for f in fmts}
    best = dict.fromkeys(weights, float("inf"))
    for _ in range(repeats):
        for name, w in weights.items():
            ops.linear(x, w)  # warm-up: the chunk buffers
            started = time.perf_counter()
            ops.linear(x, w)
            best[name] = min(best[name], time.perf_counter() - started)
    rows = [dict(format=name, ms=1e3 * t, gb_s=weights[name].nbytes / t / 1e9, gweights_s=n * k / t / 1e9)
            for name, t in best.items()]
    q8 = next((r["gb_s"] for r in rows if r["format"] == "Q8_0"), None)
    for r in rows:
        r["per_byte_vs_q8_0"] = r["gb_s"] / q8 if q8 else None
    return rows


def main() -> None:
    from gguflm.bench import copy_bandwidth
    from gguflm.files import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="model shapes (gguflm.synthetic.shapes)")
    parser.add_argument("--json", default="bench_gemv.json", help="where to write the rows")
    parser.add_argument("--cpu-reference", metavar="NxK", help="instead: time the CPU reference path on an NxK weight")
    args = parser.parse_args()
    if args.cpu_reference:
        n, k = (int(v) for v in args.cpu_reference.lower().split("x"))
        print(f"CPU reference path (ops.linear), {n}x{k}, {torch.get_num_threads()} threads")
        print("| format | ms | GB/s stored | G weights/s | per byte vs Q8_0 |\n|---|---:|---:|---:|---:|")
        for r in cpu_reference_table(n, k):
            print(f"| {r['format']} | {r['ms']:.1f} | {r['gb_s']:.3f} | {r['gweights_s']:.3f} | {r['per_byte_vs_q8_0']:.2f} |")
        return
    if not torch.cuda.is_available():
        sys.exit("bench_gemv.py needs a CUDA GPU and none is available.")
    device = torch.device("cuda")
    copy_bps = copy_bandwidth(device, 2**30)
    layers = [layer for model in args.models.split(",") for layer in model_layers(model)]
    rows, _ = run_table(layers, gemv_formats(), device, copy_bps)
    print(f"{torch.cuda.get_device_name()}: " + markdown(rows, copy_bps))
    write_text_atomic(args.json, json.dumps(dict(device=torch.cuda.get_device_name(), copy_bytes_per_s=copy_bps,
                                                 rows=rows), indent=2) + "\n", "the GEMV results")


if __name__ == "__main__":
    main()

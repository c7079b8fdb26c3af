"""Decode GEMV bandwidth on a CUDA GPU: Triton Q8_0 GEMV vs torch dequant+matmul vs cuBLAS fp16.

Each result is achieved GB/s (bytes of weights + scales + x + y over the median time) and its
fraction of the device-to-device copy bandwidth measured in the same run. Several weight sets
are rotated so the L2 cache never holds the weights. Prints a markdown table, writes JSON.

    python scripts/bench_gemv.py [--json bench_gemv.json]
"""

import argparse
import json
import math
import sys

import torch

L2_BYTES = 60 * 2**20          # H100/H200 L2; rotating > 4x this defeats it

# (model, layer, rows N, K, fused gate+up)
SHAPES = [
    ("llama3-8b", "qkv", 6144, 4096, False),
    ("llama3-8b", "attn_out", 4096, 4096, False),
    ("llama3-8b", "gate+up", 28672, 4096, True),
    ("llama3-8b", "down", 4096, 14336, False),
    ("llama3-8b", "output", 128256, 4096, False),
    ("llama3.2-1b", "qkv", 3072, 2048, False),
    ("llama3.2-1b", "attn_out", 2048, 2048, False),
    ("llama3.2-1b", "gate+up", 16384, 2048, True),
    ("llama3.2-1b", "down", 2048, 8192, False),
    ("llama3.2-1b", "output", 128256, 2048, False),
]


def bench(fn) -> float:
    """Median milliseconds of fn() (triton.testing.do_bench, which also flushes L2 between calls)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def rotating(make, n_sets):
    """A zero-argument callable that runs make(set_i) on the next of n_sets weight sets."""
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % n_sets
        return make(state["i"])
    return call


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written) of a 2 GiB copy."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() / ms / 1e6


def measure(n, k, glu, copy_gbs):
    from gguflm.kernels import gemv, gemv_silu_mul
    from gguflm.quants import PackedWeight
    from gguflm.quants.legacy import Q8_0

    q8_bytes = n * k + n * (k // 32) * 2
    n_sets = max(2, math.ceil(4 * L2_BYTES / q8_bytes))
    sets = [(torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda"),
             (torch.rand(n, k // 32, device="cuda") * 0.01).half()) for _ in range(n_sets)]
    packed = [PackedWeight(Q8_0, s, k) for s in sets]
    x = torch.randn(k, device="cuda")
    n_out = n // 2 if glu else n
    y = torch.empty(n_out, device="cuda")
    io_bytes = k * 4 + n_out * 4

    if glu:
        ours = rotating(lambda i: gemv_silu_mul(x, packed[i], out=y), n_sets)
    else:
        ours = rotating(lambda i: gemv(x, packed[i], out=y), n_sets)

    def dequant_matmul(i):
        qs, d = sets[i]
        w = (qs.view(n, k // 32, 32).half() * d.unsqueeze(-1)).view(n, k)
        r = torch.nn.functional.linear(x.half(), w).float()
        if glu:
            r = torch.nn.functional.silu(r[: n // 2]) * r[n // 2:]
        return r
    baseline = rotating(dequant_matmul, n_sets)

    ref = dequant_matmul(0)
    got = (gemv_silu_mul if glu else gemv)(x, packed[0])
    err = ((got - ref).abs().max() / ref.abs().max()).item()

    fp16_bytes = n * k * 2
    n_h = max(1, math.ceil(4 * L2_BYTES / fp16_bytes))
    w16 = [torch.randn(n, k, device="cuda").half() for _ in range(n_h)]
    x16 = x.half()
    cublas = rotating(lambda i: torch.nn.functional.linear(x16, w16[i]), n_h)

    row = {}
    for name, fn, nbytes in (("triton_q8", ours, q8_bytes + io_bytes),
                             ("torch_dequant_matmul", baseline, q8_bytes + io_bytes),
                             ("cublas_fp16", cublas, fp16_bytes + k * 2 + n * 2)):
        ms = bench(fn)
        gbs = nbytes / ms / 1e6
        row[name] = {"us": ms * 1e3, "GBps": gbs, "frac_of_copy": gbs / copy_gbs}
    row["triton_q8"]["max_rel_err"] = err
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench_gemv.json", help="where to write the results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gemv.py needs a CUDA GPU and none is available.")
    copy_gbs = copy_bandwidth()
    result = {"device": torch.cuda.get_device_name(), "copy_GBps": copy_gbs, "rows": []}
    print(f"{result['device']}: device copy bandwidth {copy_gbs:.0f} GB/s\n")
    print("| model | layer | N x K | triton Q8_0 us | GB/s | % copy | dequant+matmul us | % copy "
          "| cuBLAS fp16 us | % copy |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, layer, n, k, glu in SHAPES:
        r = measure(n, k, glu, copy_gbs)
        torch.cuda.empty_cache()                       # this shape's weight sets are gone
        result["rows"].append({"model": model, "layer": layer, "N": n, "K": k, **r})
        t, b, c = r["triton_q8"], r["torch_dequant_matmul"], r["cublas_fp16"]
        print(f"| {model} | {layer} | {n}x{k} | {t['us']:.1f} | {t['GBps']:.0f} | "
              f"{100 * t['frac_of_copy']:.0f}% | {b['us']:.1f} | {100 * b['frac_of_copy']:.0f}% | "
              f"{c['us']:.1f} | {100 * c['frac_of_copy']:.0f}% |", flush=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

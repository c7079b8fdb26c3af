"""Compile the kernels for Hopper (sm_90) with Triton's bundled ptxas, no GPU needed.

Guards what the interpreter cannot see: the kernels lower to PTX at decode shapes, the GEMV
streams its weights with 16-byte loads, and nothing spills registers to local memory.
The compiles run in a child process (`python this_file.py`) without TRITON_INTERPRET,
since under the interpreter @triton.jit functions cannot be compiled.

A spill is what `ptxas -v` counts as spill stores and loads, read by running the ptxas this
triton compiles with over the kernel's PTX. A stack frame alone is not one: with triton 3.6
`tl.sin`/`tl.cos` keep a 32-byte local array for their slow path, and nothing spills.
Checked with triton 3.6 (ptxas 12.8) and 3.9 (ptxas 13.4); the offline compile needs 3.6+.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest


def _compile(fn, types, consts, aligned, num_warps=4, num_stages=3, **options):
    """types: name -> Triton type for runtime args; aligned: args specialized as multiples of 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    sig = {n: ("constexpr" if n in consts else types[n]) for n in names}
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(names.index(n),): v for n, v in consts.items()},
                    attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    kern = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages, **options))
    ptx = kern.asm["ptx"]
    # the GEMV marks its weight loads evict_first: those must be 16 bytes wide
    return dict(_resources(ptx), v4_loads=bool(re.search(r"ld\.global\S*evict_first\S*\.v4\.b32\s", ptx)),
                byte_loads=bool(re.search(r"ld\.global\S*\.(b8|s8|u8)\s", ptx)),
                mma="wgmma" in ptx or "mma.sync" in ptx)


def _ptxas() -> str | None:
    """The ptxas triton assembles sm_90 code with (triton 3.6+), else the one its wheel bundles, else None."""
    import triton

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(90).path
    except (ImportError, AttributeError, TypeError):
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        return path if os.path.exists(path) else None


def _resources(ptx: str) -> dict:
    """ptxas -v's figures for the kernel: registers, stack frame, spill stores and loads (bytes); None without ptxas."""
    ptxas = _ptxas()
    if ptxas is None:
        return dict(registers=None, stack=None, spill_stores=None, spill_loads=None)
    target = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)  # sm_90a: what triton assembles for
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={target}", src, "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers", log)
    if proc.returncode or frame is None or regs is None:
        raise RuntimeError(f"ptxas -v gave no resource report:\n{log[-2000:]}")
    stack, stores, loads = (int(g) for g in frame.groups())
    return dict(registers=int(regs.group(1)), stack=stack, spill_stores=stores, spill_loads=loads)


def _compile_all() -> dict:
    import importlib

    import triton.language as tl

    gemv, attn, gemm, norm, rope, settings = (importlib.import_module("gguflm.kernels." + m) for m in
                                              ("gemv", "attention_decode", "gemm", "rmsnorm", "rope", "settings"))
    out = {}
    types = dict(x_ptr="*fp32", w_ptr="*i8", d_ptr="*fp16", bias_ptr="*fp32", res_ptr="*fp32",
                 out_ptr="*fp32", part_ptr="*fp32", M="i32", N_OUT="i32", K="i32", stride_xm="i32",
                 stride_wn="i32", stride_dn="i32", stride_rm="i32", stride_om="i32", k_per_split="i32")
    aligned = ("x_ptr", "w_ptr", "d_ptr", "bias_ptr", "res_ptr", "out_ptr", "part_ptr", "K",
               "stride_xm", "stride_wn", "stride_dn", "k_per_split")
    for n, k, glu, res, bias in GEMV_CASES:
        cfg = settings.gemv_config(n, k, 1, 2 if glu else 1, num_sms=132)  # the H200's 132 SMs
        out[f"gemv-{n}-{k}"] = _compile(
            gemv._gemv_kernel, types,
            dict(BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, LAYOUT=gemv.LAYOUTS["q8_0"], EVEN_K=True, GLU=glu,
                 SPLIT=cfg.split_k > 1, HAS_BIAS=bias, HAS_RES=res),
            aligned, num_warps=cfg.num_warps)
    nibble = importlib.import_module("gguflm.kernels.gemv_legacy")
    specs = importlib.import_module("gguflm.kernels.nibbles").NIBBLE_FORMATS
    types = dict(x_ptr="*fp32", q_ptr="*u8", d_ptr="*fp16", m_ptr="*fp16", h_ptr="*i32", bias_ptr="*fp32",
                 res_ptr="*fp32", out_ptr="*fp32", part_ptr="*fp32", M="i32", N_OUT="i32", K="i32",
                 stride_xm="i32", stride_qn="i32", stride_dn="i32", stride_rm="i32", stride_om="i32",
                 k_per_split="i32")
    aligned = ("x_ptr", "q_ptr", "d_ptr", "m_ptr", "h_ptr", "bias_ptr", "res_ptr", "out_ptr", "part_ptr", "K",
               "stride_xm", "stride_qn", "k_per_split")
    for fmt, n, k, glu, res in NIBBLE_GEMV_CASES:
        cfg = settings.gemv_config(n, k, 0.5, 2 if glu else 1, num_sms=132)
        out[f"gemv-{fmt}-{n}-{k}"] = _compile(
            nibble._nibble_gemv_kernel, types,
            dict(BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, **specs[fmt], EVEN_K=True, GLU=glu,
                 SPLIT=cfg.split_k > 1, HAS_BIAS=False, HAS_RES=res),
            aligned, num_warps=cfg.num_warps)
    types_r = dict(part_ptr="*fp32", bias_ptr="*fp32", res_ptr="*fp32", out_ptr="*fp32", M="i32", N_OUT="i32",
                   stride_rm="i32", stride_om="i32")
    out["gemv-reduce"] = _compile(gemv._reduce_kernel, types_r,
                                  dict(SPLIT_K=4, BLOCK=1024, GLU=False, HAS_BIAS=True, HAS_RES=True), ())
    for group, hd, cache, batch in ATTN_CASES:
        strides = ("s_qb", "s_q", "s_k0", "s_k1", "s_ks0", "s_ks1", "s_v0", "s_v1", "s_vs0", "s_vs1")
        slot_strides = ("s_kslot", "s_ksslot", "s_vslot", "s_vsslot")
        types = {n: "i32" for n in ("n_head", "max_ctx", *strides)}
        types.update({n: "i64" for n in slot_strides})  # a pool of long contexts passes 2^31 elements
        types.update(q_ptr="*fp32", kc_ptr=f"*{CACHE_PTR[cache]}", vc_ptr=f"*{CACHE_PTR[cache]}", ks_ptr="*fp16",
                     vs_ptr="*fp16", pos_ptr="*i32", slot_ptr="*i32", acc_ptr="*fp32", ml_ptr="*fp32",
                     qk_scale="fp32")
        dot = dict(bf16=tl.bfloat16, fp32=tl.float32).get(cache, tl.float16)
        kind = dict(q8_0=1, q4_0=2).get(cache, 0)
        block_t, splits = settings.attention_config(8, 8192, 132, (CACHE_KIND[cache],) * 2)  # 8 KV heads
        out[attn_name(group, hd, cache, batch)] = _compile(
            attn._attn_split_kernel, types,
            dict(GROUP=group, HD=hd, BLOCK_G=16, BLOCK_D=max(16, hd), BLOCK_T=block_t, NUM_SPLITS=splits, DOT_TY=dot,
                 PREC="ieee" if cache == "fp32" else "tf32", K_KIND=kind, V_KIND=kind, BATCH=batch),
            ("q_ptr", "kc_ptr", "vc_ptr", "ks_ptr", "vs_ptr", *strides, *slot_strides),
            num_warps=settings.ATTENTION_WARPS, num_stages=settings.ATTENTION_STAGES)
    out["attn-merge"] = _compile(attn._attn_merge_kernel,
                                 dict(acc_ptr="*fp32", ml_ptr="*fp32", out_ptr="*fp32", n_head="i32", s_ob="i32",
                                      s_o="i32"),
                                 dict(HD=128, NUM_SPLITS=33, BLOCK_S=64, BLOCK_D=128), ())
    types = dict(x_ptr="*fp16", qs_ptr="*i8", d_ptr="*fp16", out_ptr="*fp16", M="i32", N="i32",
                 K="i32", s_xm="i32", s_qn="i32", s_dn="i32", s_om="i32")
    cfg = settings.gemm_config(512, 4096, 4096)
    warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    out["gemm"] = _compile(gemm._q8_gemm_kernel, types, dict(cfg, DOT_TY=tl.float16),
                           ("x_ptr", "qs_ptr", "d_ptr", "out_ptr", "K", "s_xm", "s_qn", "s_dn", "s_om"),
                           num_warps=warps, num_stages=stages)
    types = dict(x_ptr="*fp16", q_ptr="*u8", d_ptr="*fp16", m_ptr="*fp16", h_ptr="*i32", out_ptr="*fp16",
                 M="i32", N="i32", K="i32", s_xm="i32", s_qn="i32", s_dn="i32", s_om="i32")
    for fmt in NIBBLE_GEMM_FORMATS:
        out[f"gemm-{fmt}"] = _compile(gemm._nibble_gemm_kernel, types, dict(cfg, DOT_TY=tl.float16, **specs[fmt]),
                                      ("x_ptr", "q_ptr", "d_ptr", "m_ptr", "h_ptr", "out_ptr", "K", "s_xm", "s_qn",
                                       "s_dn", "s_om"), num_warps=warps, num_stages=stages)
    types = {n: "i32" for n in ("n_rows", "H", "s_x", "s_o")}
    types.update(x_ptr="*fp32", w_ptr="*fp32", out_ptr="*fp32", eps="fp32")
    block_h, block_r, warps = settings.rmsnorm_settings(4096)
    out["rmsnorm"] = _compile(norm._rmsnorm_kernel, types, dict(BLOCK_R=block_r, BLOCK_H=block_h),
                              ("x_ptr", "w_ptr", "out_ptr", "H", "s_x", "s_o"), num_warps=warps)
    strides = ("s_qkv", "s_q0", "s_q1", "s_kc0", "s_kc1", "s_ks0", "s_ks1", "s_vc0", "s_vc1", "s_vs0", "s_vs1")
    for name, (cache, consts) in ROPE_CASES.items():
        types = {n: "i32" for n in ("n_head", "n_kv", "max_ctx", *strides)}
        types.update({n: "i64" for n in ("s_kcs", "s_kss", "s_vcs", "s_vss")})
        types.update(qkv_ptr="*fp32", pos_ptr="*i32", slot_ptr="*i32", ff_ptr="*fp32", qn_ptr="*fp32",
                     kn_ptr="*fp32", q_ptr="*fp32", kc_ptr=f"*{CACHE_PTR[cache]}", vc_ptr=f"*{CACHE_PTR[cache]}",
                     ks_ptr="*fp16", vs_ptr="*fp16", inv_pos_scale="fp32", log2_base="fp32", eps="fp32")
        kind = dict(q8_0=1, q4_0=2).get(cache, 0)
        out[name] = _compile(rope._rope_cache_kernel, types, dict(dict(BATCH=False) | consts, HD=128, BLOCK_D=128,
                                                                  K_KIND=kind, V_KIND=kind),
                             (), num_warps=1, enable_fp_fusion=False)
    return out


# (N, K, gate+up, residual, bias); the last: Qwen2.5-7B's QKV, K not a multiple of 1024
GEMV_CASES = [(4096, 4096, False, True, False), (14336, 4096, True, False, False),
              (128256, 2048, False, False, False), (256, 4096, False, False, False), (4608, 3584, False, False, True)]
# (format, N, K, gate+up, residual): Llama-3-8B's QKV, gate+up, down (split K) and a short-N matrix
NIBBLE_GEMV_CASES = [("q4_0", 6144, 4096, False, False), ("q4_1", 14336, 4096, True, False),
                     ("q5_0", 4096, 14336, False, True), ("q5_1", 6144, 4096, False, False),
                     ("iq4_nl", 14336, 4096, True, False), ("q4_0", 256, 4096, False, False)]
NIBBLE_GEMM_FORMATS = ("q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
# (group, head size, cache type, batch); head size 8 (stories260K) is padded to tl.dot's 16 by the launcher;
# batch: per-row lengths and cache slots (serving)
ATTN_CASES = [(4, 128, "fp16", False), (8, 64, "bf16", False), (1, 128, "fp32", False), (4, 128, "fp32", False),
              (2, 8, "fp16", False), (4, 128, "q8_0", False), (4, 64, "q8_0", False), (4, 128, "q4_0", False),
              (4, 128, "fp16", True), (4, 128, "q8_0", True)]


def attn_name(group, hd, cache, batch):
    return f"attn-{group}-{hd}-{cache}" + ("-batch" if batch else "")
CACHE_PTR = dict(fp16="fp16", bf16="bf16", fp32="fp32", q8_0="i8", q4_0="u8")
CACHE_KIND = dict(fp16="f16", bf16="bf16", fp32="f32", q8_0="q8_0", q4_0="q4_0")  # gguflm.kv_cache names
ROPE_CASES = {  # Qwen3: q/k norms, partial rotation; llama: adjacent pairs, the whole head; quantized stores
    "rope-neox": ("fp16", dict(ROT=64, NEOX=True, HAS_FF=True, HAS_QN=True, HAS_KN=True)),
    "rope-normal": ("fp16", dict(ROT=128, NEOX=False, HAS_FF=False, HAS_QN=False, HAS_KN=False)),
    "rope-q8_0": ("q8_0", dict(ROT=128, NEOX=False, HAS_FF=False, HAS_QN=False, HAS_KN=False)),
    "rope-q4_0": ("q4_0", dict(ROT=128, NEOX=True, HAS_FF=False, HAS_QN=True, HAS_KN=True)),
    # serving: per-row positions and cache slots
    "rope-batch": ("fp16", dict(ROT=128, NEOX=False, HAS_FF=False, HAS_QN=False, HAS_KN=False, BATCH=True)),
    "rope-batch-q8_0": ("q8_0", dict(ROT=128, NEOX=True, HAS_FF=True, HAS_QN=True, HAS_KN=True, BATCH=True)),
}


@pytest.fixture(scope="module")
def compiled():
    from importlib.metadata import version

    if tuple(int(x) for x in version("triton").split(".")[:2]) < (3, 6):
        pytest.skip(f"the offline sm_90 compile needs triton 3.6+ (its ASTSource), this is {version('triton')}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _no_spills(info):
    if info["spill_stores"] is None:
        pytest.skip("this triton wheel ships no ptxas to report register usage")
    assert (info["spill_stores"], info["spill_loads"]) == (0, 0), info


@pytest.mark.parametrize("n,k", [(n, k) for n, k, *_ in GEMV_CASES])
def test_q8_0_gemv_streams_with_16_byte_loads(compiled, n, k):
    info = compiled[f"gemv-{n}-{k}"]
    assert info["v4_loads"] and not info["byte_loads"]
    _no_spills(info)


@pytest.mark.parametrize("case", NIBBLE_GEMV_CASES)
def test_nibble_gemv_streams_with_16_byte_loads(compiled, case):
    """The nibbles of every 4/5-bit format stream as 16-byte loads; scales, minimums, fifth bits as words."""
    info = compiled["gemv-{}-{}-{}".format(*case[:3])]
    assert info["v4_loads"] and not info["byte_loads"], info
    _no_spills(info)


@pytest.mark.parametrize("case", ATTN_CASES)
def test_attention_compiles_without_spills(compiled, case):
    _no_spills(compiled[attn_name(*case)])


def test_q8_gemm_uses_tensor_cores(compiled):
    assert compiled["gemm"]["mma"]
    _no_spills(compiled["gemm"])


@pytest.mark.parametrize("fmt", NIBBLE_GEMM_FORMATS)
def test_nibble_gemm_uses_tensor_cores(compiled, fmt):
    assert compiled[f"gemm-{fmt}"]["mma"]
    _no_spills(compiled[f"gemm-{fmt}"])


@pytest.mark.parametrize("name", ["rmsnorm", *ROPE_CASES, "gemv-reduce", "attn-merge"])
def test_small_kernels_compile_without_spills(compiled, name):
    _no_spills(compiled[name])


if __name__ == "__main__":
    print(json.dumps(_compile_all()))

"""Quantized KV caches (q8_0, q4_0): the store is ggml's quantization to the bit, decode attention over
them is the reference attention over their dequantization, and generation runs with every type."""

from __future__ import annotations

import kernel_utils as ku  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)
import gguf
import numpy as np
import pytest
import torch

import gguflm
from gguflm import ops
from gguflm.errors import GGUFLMError
from gguflm.kernels import attention_decode, rope_and_cache
from gguflm.kv_cache import CACHE_TYPES, KVCache, bytes_per_token, cache_type
from gguflm.ops import Rope
from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf
from gguflm.synthetic.vocab import spm_tokenizer
from reference_loop import greedy_ids

QT = gguf.GGMLQuantizationType
BLOCK_TYPES = ("q8_0", "q4_0")


def gguf_blocks(rows: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """gguf-py's own quantization of fp32 rows (R, K): (scales fp16 (R, K/32), the block bytes after them)."""
    qt = QT.Q8_0 if kind == "q8_0" else QT.Q4_0
    raw = gguf.quants.quantize(rows.astype(np.float32), qt)
    blocks = raw.reshape(rows.shape[0], rows.shape[1] // 32, -1)
    return blocks[:, :, :2].copy().view(np.float16)[..., 0], blocks[:, :, 2:].reshape(rows.shape[0], -1)


def layer_blocks(layer, pos: int) -> tuple[np.ndarray, np.ndarray]:
    """The same two arrays as the cache layer holds them at one position, for every KV head."""
    data = layer.data[:, pos].cpu().numpy()
    return layer.scale[:, pos].cpu().numpy(), data.view(np.uint8) if data.dtype == np.int8 else data


def rows_with_edge_cases(n: int, hd: int, seed: int) -> torch.Tensor:
    x = ku.rand(n, hd, scale=3.0, seed=seed)
    x[0, :32] = 0.0  # an all-zero block: scale 0
    x[-1, 32:64 if hd >= 64 else 32] = 1.5  # a block of equal values: the first of the largest wins (q4_0)
    x[-1, 3] = -2.5  # and a negative largest value in the first
    return x


@pytest.mark.parametrize("kind", BLOCK_TYPES)
@pytest.mark.parametrize("hd", [32, 64, 96])  # 96: the kernel's 128-wide tile has a masked last block
def test_rope_kernel_stores_ggml_quantization_to_the_bit(kind, hd):
    n_head, n_kv, m, max_ctx = 2, 2, 3, 16
    rope = Rope(head_dim=hd, mode="neox")
    qkv = ku.rand(m, (n_head + 2 * n_kv) * hd, seed=hd)
    qkv[:, (n_head + n_kv) * hd:] = rows_with_edge_cases(m, n_kv * hd, seed=1)  # the V heads
    k_layer, v_layer = (ku.cache_layer(kind, n_kv, max_ctx, hd, seed=s) for s in (2, 3))
    pos = torch.tensor([0], dtype=torch.int32, device=ku.DEVICE)  # K at position 0: the rotation is exact
    rope_and_cache(qkv, pos, k_layer, v_layer, rope, n_head=n_head)
    for t in range(m):  # V rows are stored unrotated at every position
        v = qkv[t, (n_head + n_kv) * hd:].reshape(n_kv, hd).cpu().numpy()
        for got, want in zip(layer_blocks(v_layer, t), gguf_blocks(v, kind)):
            assert np.array_equal(got, want), t
    k = qkv[0, n_head * hd:(n_head + n_kv) * hd].reshape(n_kv, hd).cpu().numpy()
    for got, want in zip(layer_blocks(k_layer, 0), gguf_blocks(k, kind)):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("kind", BLOCK_TYPES)
def test_reference_quantizers_are_gguf_bit_exact(kind):
    x = rows_with_edge_cases(7, 128, seed=4).cpu()
    q, d = (ops.quantize_q8_0 if kind == "q8_0" else ops.quantize_q4_0)(x)
    want_d, want_q = gguf_blocks(x.numpy(), kind)
    assert np.array_equal(d.numpy(), want_d)
    assert np.array_equal(q.numpy().view(np.uint8), want_q)
    deq = (ops.dequantize_q8_0 if kind == "q8_0" else ops.dequantize_q4_0)(q, d)
    assert np.array_equal(deq.numpy(), gguf.quants.dequantize(gguf.quants.quantize(x.numpy(), QT[kind.upper()]),
                                                              QT[kind.upper()]))


@pytest.mark.parametrize("k_kind,v_kind", [("q8_0", "q8_0"), ("q4_0", "q4_0"), ("f16", "q8_0"), ("q4_0", "f32")])
@pytest.mark.parametrize("mode,pos", [("normal", 29), ("neox", 5)])
def test_rope_kernel_matches_the_reference_write_at_any_position(k_kind, v_kind, mode, pos):
    hd, n_head, n_kv, max_ctx = 64, 4, 2, 40
    rope = Rope(head_dim=hd, mode=mode, base=500000.0)
    qkv = ku.rand(2, (n_head + 2 * n_kv) * hd, seed=6)
    qn, kn = ku.rand(hd, seed=7), ku.rand(hd, seed=8)
    k_layer, v_layer = ku.cache_layer(k_kind, n_kv, max_ctx, hd, seed=9), ku.cache_layer(v_kind, n_kv, max_ctx, hd, seed=10)
    p = torch.tensor([pos], dtype=torch.int32, device=ku.DEVICE)
    q_ref, k_ref, v_ref = ku.rope_and_cache_ref(qkv, p, k_layer, v_layer, rope, n_head=n_head, q_norm=qn, k_norm=kn)
    q = rope_and_cache(qkv, p, k_layer, v_layer, rope, n_head=n_head, q_norm=qn, k_norm=kn,
                       q_out=ku.poisoned((2, n_head, hd)))
    torch.testing.assert_close(q, q_ref, rtol=1e-4, atol=1e-4)
    for got, want in ((k_layer, k_ref), (v_layer, v_ref)):
        a, b = got.read(0, max_ctx), want.read(0, max_ctx)
        # the rotated K differs from the reference in its last bits: at most one quantization step apart
        step = 0.0 if not got.kind.quantized else got.scale.float().abs().max().item()
        assert (a - b).abs().max().item() <= step + 2e-3
        assert torch.equal(got.data[:, :pos], want.data[:, :pos])  # rows before pos untouched


@pytest.mark.parametrize("k_kind,v_kind", [("q8_0", "q8_0"), ("q4_0", "q4_0"), ("f16", "q4_0"), ("q8_0", "f32")])
@pytest.mark.parametrize("valid,hd", [(1, 64), (67, 64), (150, 96), (33, 128)])
def test_decode_attention_over_a_quantized_cache(k_kind, v_kind, valid, hd):
    n_kv, group, max_ctx = 2, 2, 150
    q = ku.rand(n_kv * group, hd, seed=valid)
    k, v = ku.cache_layer(k_kind, n_kv, max_ctx, hd, seed=1), ku.cache_layer(v_kind, n_kv, max_ctx, hd, seed=2)
    pos = torch.tensor([valid - 1], dtype=torch.int32, device=ku.DEVICE)
    out = attention_decode(q, k, v, pos, out=ku.poisoned(q.shape))
    tol = 1e-4 if "f32" in (k_kind, v_kind) and k_kind == "f32" else 3e-3  # fp16 dot operands
    torch.testing.assert_close(out, ku.attention_decode_ref(q, k, v, pos), rtol=tol, atol=tol)


def test_cache_types_sizes_and_bad_names():
    from gguflm.cli.options import CACHE_TYPE_NAMES

    assert tuple(CACHE_TYPES) == CACHE_TYPE_NAMES  # the CLI's torch-free copy of the names
    spec = SyntheticSpec(dim=128, n_heads=4, n_kv_heads=2, n_layers=3)
    cfg = spec.config  # head size 32: 2 * 3 layers * 2 heads per position
    assert bytes_per_token(cfg, "f16", "f16") == 3 * 2 * (64 + 64)
    assert bytes_per_token(cfg, "q8_0", "q4_0") == 3 * 2 * ((32 + 2) + (16 + 2))
    cache = KVCache.allocate(cfg, 10, "cpu", "q8_0", "q4_0")
    assert cache.row_bytes == bytes_per_token(cfg, "q8_0", "q4_0") and cache.k.data.dtype == torch.int8
    with pytest.raises(GGUFLMError, match="unknown cache type 'q5_1' \\(choose from f32, f16, bf16, q8_0, q4_0\\)"):
        cache_type("q5_1")
    with pytest.raises(GGUFLMError, match="multiple of 32, and this model's is 16"):
        KVCache.allocate(SyntheticSpec().config, 8, "cpu", "q8_0")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    spec = SyntheticSpec(qtype="Q8_0", dim=128, n_heads=4, n_kv_heads=2, n_vocab=320, n_ctx=4096, seed=2)
    return write_synthetic_gguf(tmp_path_factory.mktemp("kv") / "m.gguf", spec, tokenizer=spm_tokenizer(320))


@pytest.mark.parametrize("k_kind,v_kind", [("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "f16")])
def test_triton_backend_with_a_quantized_cache_follows_the_reference(model_path, k_kind, v_kind):
    """The same cache types in both backends: Triton's fused stores and attention against the torch path."""
    ref = gguflm.load(model_path, device="cpu", backend="reference", cache_type_k=k_kind, cache_type_v=v_kind)
    tri = gguflm.load(model_path, device=ku.DEVICE, backend="triton", cache_type_k=k_kind, cache_type_v=v_kind)
    prompt = [1, 300, 17, 42, 99, 7, 260]
    rc, tc = (m.backend.new_cache(32, *m.cache_types) for m in (ref, tri))
    assert tc.k.kind.name == k_kind and tc.v.kind.name == v_kind
    expect = ref.backend.prefill(prompt, rc)
    torch.testing.assert_close(tri.backend.prefill(prompt[:4], tc)[-1].cpu(), expect[3], atol=2e-2, rtol=0)
    torch.testing.assert_close(tri.backend.prefill(prompt[4:], tc).cpu(), expect[4:], atol=2e-2, rtol=0)
    token = int(expect[-1].argmax())
    for _ in range(4):
        r, t = ref.backend.decode(token, rc), tri.backend.decode(token, tc).cpu()
        torch.testing.assert_close(t, r, atol=2e-2, rtol=0)
        token = int(r.argmax())
    # the engine: the graph path's eager body over the quantized cache gives the plain loop's tokens
    engine = tri.new_engine(ctx=64, graphs=False)
    assert list(engine.generate_ids(prompt, 6, stop_ids=())) == greedy_ids(tri.backend, prompt, 6)


def test_prefill_over_a_quantized_cache_goes_a_tile_at_a_time(model_path, monkeypatch):
    import gguflm.backends.triton as tb

    tri = gguflm.load(model_path, device=ku.DEVICE, backend="triton", cache_type_k="q8_0", cache_type_v="q4_0")
    monkeypatch.setattr(tb, "ATTEND_TILE", 5)  # 13 rows: tiles of 5, 5, 3
    reads = []
    from gguflm.kv_cache import CacheLayer

    real = CacheLayer.read
    monkeypatch.setattr(CacheLayer, "read", lambda self, a, b: reads.append(b - a) or real(self, a, b))
    prompt = [1, 300, 17, 42, 99, 7, 260, 5, 6, 7, 8, 9, 10]
    cache = tri.backend.new_cache(16, "q8_0", "q4_0")
    tiled = tri.backend.prefill(prompt, cache)
    assert max(reads) == 5 and len(reads) == 2 * 3 * tri.config.n_layers
    monkeypatch.setattr(tb, "ATTEND_TILE", 1024)
    whole = tri.backend.prefill(prompt, tri.backend.new_cache(16, "q8_0", "q4_0"))
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q4_0"])
def test_chat_turns_reuse_a_cache_of_each_type(model_path, kind):
    """The second turn prefills only what the template added, and its logits match a fresh prefill into
    a cache of the same type (quantizing a row depends on that row alone)."""
    from gguflm.chat.session import ChatSession
    from gguflm.chat.template import ChatTemplate
    from gguflm.engine import common_prefix

    model = gguflm.load(model_path, device="cpu", cache_type_k=kind, cache_type_v=kind)
    s = ChatSession(model.new_engine(256), ChatTemplate.resolve("chatml", None), max_tokens=6)
    first = "".join(s.send("hello world"))
    first_prompt = s.engine.stats.last.prompt_tokens
    held = list(s.engine.tokens)
    s.messages.append({"role": "user", "content": "once upon a time"})
    full = s.prompt_ids()
    s.messages.pop()
    "".join(s.send("once upon a time"))
    reused = common_prefix(held, full)
    assert s.engine.stats.last.prefilled_tokens == len(full) - reused and reused >= first_prompt
    assert s.messages[1] == {"role": "assistant", "content": first}
    engine = s.engine
    engine.truncate(len(full) - 1)
    cached = engine.backend.prefill([full[-1]], engine.cache)[-1]
    fresh = engine.backend.prefill(full, engine.backend.new_cache(len(full), kind, kind))[-1]
    torch.testing.assert_close(cached, fresh, atol=1e-3 if kind in ("f32", "f16") else 5e-2, rtol=0)


def test_cli_refuses_an_unknown_cache_type_before_loading(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gguflm.cli.main", "run", "-m", str(tmp_path / "none.gguf"),
                             "-p", "x", "-ctk", "q5_1"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "unknown cache type 'q5_1' (choose from f32, f16, bf16, q8_0, q4_0)" in result.stderr


def test_context_sizing_counts_the_cache_types_bytes(model_path, monkeypatch):
    from types import SimpleNamespace

    from gguflm.engine import choose_context

    cfg = gguflm.load(model_path, device="cpu").config  # 2 layers, 2 KV heads of 32
    fake = SimpleNamespace(cfg=cfg, device=torch.device("cuda"), cache_dtype=torch.float16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000_000, 2_000_000))
    f16, _ = choose_context(fake, None)
    q8, _ = choose_context(fake, None, "q8_0", "q8_0")
    q4, _ = choose_context(fake, None, "q4_0", "q4_0")
    # 0.9 MB / (512, 272, 144 B per token), rounded down to 256s; q4_0 fits the whole trained context
    assert (f16, q8, q4) == (1536, 3072, 4096)

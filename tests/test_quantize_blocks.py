"""Block quantizers: bit-exact with gguf-py (legacy types) and with ggml itself (every type, when
its library is built: scripts/ggml_quants_oracle.py), and a gguf-py round trip per type."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from gguflm.errors import GGUFLMError
from gguflm.quantize.blocks import QUANTIZERS, quantize_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from ggml_quants_oracle import DEFAULT_LIB, NAMES, Oracle, hard_rows  # noqa: E402

QT = gguf.GGMLQuantizationType
LEGACY = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0)
QUANTIZED = tuple(t for t in QUANTIZERS if t not in (QT.F32, QT.F16, QT.BF16))
# Relative RMS error of a round trip on Gaussian rows: a little above what each format reaches
# (measured: Q2_K 0.30, Q3_K 0.15, Q4_K 0.072, IQ4 0.075, Q4_0 0.086, Q5_K 0.036, Q6_K 0.018, Q8_0 0.0054).
MAX_REL = {QT.Q2_K: 0.33, QT.Q3_K: 0.17, QT.Q4_0: 0.095, QT.Q4_1: 0.09, QT.Q4_K: 0.08, QT.IQ4_NL: 0.083,
           QT.IQ4_XS: 0.083, QT.Q5_0: 0.05, QT.Q5_1: 0.042, QT.Q5_K: 0.04, QT.Q6_K: 0.02, QT.Q8_0: 0.006}


def gaussian(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_legacy_types_match_gguf_quants_byte_for_byte(qtype):
    x = gaussian(13, 96) * np.float32(3)
    x[0] = 0.25  # a constant row: d = 0 for the asymmetric types
    x[1, :32] = np.linspace(-1, 1, 32)  # evenly spaced: many values on rounding boundaries
    x[2] *= np.float32(1e-6)
    assert np.array_equal(quantize_rows(x, qtype), gguf.quants.quantize(x, qtype))


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_round_trip_through_gguf_dequantize(qtype):
    x = gaussian(6, 512, seed=1)
    y = gguf.quants.dequantize(quantize_rows(x, qtype), qtype)
    assert y.shape == x.shape
    rel = np.sqrt(((x - y) ** 2).mean() / (x ** 2).mean())
    assert rel < MAX_REL[qtype], rel


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_degenerate_blocks_stay_finite(qtype):
    """All-zero, constant, one-sign and denormal-small rows decode to finite values near the input."""
    k = 256
    x = np.zeros((4, k), dtype=np.float32)
    x[1] = 0.75
    x[2] = np.abs(gaussian(1, k)[0])
    x[3] = gaussian(1, k, seed=2)[0] * np.float32(1e-30)
    y = gguf.quants.dequantize(quantize_rows(x, qtype), qtype)
    assert np.isfinite(y).all()
    assert np.array_equal(y[0], np.zeros(k))
    assert np.abs(y[1] - 0.75).max() < 0.05 and np.abs(y[3]).max() < 1e-20
    assert np.sqrt(((x[2] - y[2]) ** 2).mean()) < 2 * MAX_REL[qtype] * np.sqrt((x[2] ** 2).mean())


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_rows_are_independent(qtype):
    """Chunks of rows encode to the bytes of the whole (the rewrite streams a chunk at a time)."""
    x = gaussian(5, 512, seed=3)
    whole = quantize_rows(x, qtype)
    assert np.array_equal(np.concatenate([quantize_rows(x[:2], qtype), quantize_rows(x[2:], qtype)]), whole)


def test_float_types_match_numpy_and_gguf():
    x = gaussian(3, 64) * np.float32(1e3)
    assert np.array_equal(quantize_rows(x, QT.F16).view(np.float16), x.astype(np.float16))
    assert np.array_equal(quantize_rows(x, QT.BF16), gguf.quants.quantize(x, QT.BF16).view(np.uint8))
    assert np.array_equal(quantize_rows(x, QT.F32).view(np.float32), x)


def test_rows_not_whole_blocks_and_non_finite_weights_are_refused():
    with pytest.raises(GGUFLMError, match="multiple"):
        quantize_rows(gaussian(2, 96), QT.Q4_K)
    x = gaussian(2, 256)
    x[1, 7] = np.nan
    for qtype in QUANTIZED:
        with pytest.raises(GGUFLMError, match=f"NaN or infinite cannot be quantized to {qtype.name}"):
            quantize_rows(x, qtype)


@pytest.mark.skipif(not DEFAULT_LIB.is_file(), reason=f"ggml's quantizers are not built at {DEFAULT_LIB} "
                    "(scripts/ggml_quants_oracle.py build LLAMA_CPP_SRC)")
@pytest.mark.parametrize("qtype", list(NAMES), ids=lambda t: t.name)
def test_identical_to_ggml(qtype):
    """The bytes ggml's quantize_<type> writes (llama-quantize's path without an importance matrix)."""
    x = hard_rows(np.random.default_rng(7), 12, 1024)
    assert np.array_equal(quantize_rows(x, qtype), Oracle().quantize(x, qtype))

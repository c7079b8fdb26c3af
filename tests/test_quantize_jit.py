"""The compiled quantizers (jit_*) write the bytes of the numpy ones (kquants, search: the oracle),
on rows chosen to trip the searches, and their float helpers round as numpy does.

The first run in a fresh checkout compiles each type (about 5 s each on the 2-core box); later
runs load numba's disk cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from gguflm.quantize import jit_kquants, kquants
from gguflm.quantize.jit_arith import exact, fp16_round, nearest_int, round_clamp

KQUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")


def awkward_rows(seed: int, k: int = 512) -> np.ndarray:
    """Rows of the kinds a search or a scale trips on, one kind per row, then Gaussian rows."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((14, k)).astype(np.float32)
    x = g.copy()
    x[0] = 0  # all zero
    x[1] = np.float32(-0.375)  # constant (flat groups: max == min)
    x[2] = np.float32(2.0)  # constant positive: the min is clamped to 0
    x[3] = -np.abs(g[3])  # negative only
    x[4] = np.abs(g[4])  # positive only
    x[5] *= np.float32(1e-30)  # tiny: below GROUP_MAX_EPS in some groups
    x[6] *= np.float32(3e4)  # huge: scales past fp16's range
    x[7, :] = g[7] * np.float32(1e-3)
    x[7, rng.integers(k)] = np.float32(40.0)  # one outlier
    x[8] = np.round(g[8] * 3) / 3  # many ties between levels
    x[9, : k // 2] = 0  # half zero
    x[10] = np.where(rng.random(k) < 0.9, np.float32(0), g[10])  # sparse
    x[11] *= rng.choice([1e-6, 1e-2, 1.0, 100.0], size=k).astype(np.float32)  # mixed scales within a row
    x[12, ::16] = np.float32(-7.0)  # one repeated value per group
    x[13] = np.linspace(-1, 1, k, dtype=np.float32)  # evenly spaced
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", KQUANTS)
def test_compiled_kquants_equal_numpy_byte_for_byte(name, seed):
    x = awkward_rows(seed)
    want = getattr(kquants, "quantize_" + name)(x)
    got = getattr(jit_kquants, "quantize_" + name)(x)
    assert got.shape == want.shape and got.dtype == np.uint8
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad.tolist()} differ"


@pytest.mark.parametrize("name", KQUANTS)
def test_compiled_kquants_odd_block_counts(name):
    """1, 3 and 5 super-blocks: tiles that are not full (Q4_K/Q5_K pair super-blocks in a tile)."""
    for n, k in ((1, 256), (3, 256), (1, 768), (5, 256)):
        x = np.random.default_rng(n * k).standard_normal((n, k)).astype(np.float32)
        assert np.array_equal(getattr(jit_kquants, "quantize_" + name)(x), getattr(kquants, "quantize_" + name)(x))


@exact
def _helpers(x, h, back, near, rc):
    for i in range(x.size):
        h[i], back[i] = fp16_round(x[i])
        v = x[i] * np.float32(1000.0)
        near[i] = nearest_int(v)
        rc[i] = round_clamp(v, np.float32(-100), np.float32(31))


def test_fp16_and_rounding_match_numpy():
    """Every fp16 value, its float32 neighbours and the midpoints between fp16 values (the ties),
    subnormals, the overflow edge at 65520, and random bit patterns."""
    h = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)  # finite non-negative
    h = np.concatenate([h, -h])
    b = h.view(np.int32)
    mids = ((h[:-1].astype(np.float64) + h[1:]) / 2).astype(np.float32)
    bits = np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    edge = np.array([65504, 65519.996, 65520, 1e9, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 0.0, -0.0], np.float32)
    x = np.concatenate([h, (b + 1).view(np.float32), (b - 1).view(np.float32), mids, edge, bits.view(np.float32)])
    x = x[np.isfinite(x)]
    out = (np.empty(x.size, np.int32), np.empty(x.size, np.float32), np.empty(x.size, np.int64),
           np.empty(x.size, np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        _helpers(x, *out)
        want = x.astype(np.float16)
        v = x * np.float32(1000.0)
    assert np.array_equal(out[0].astype(np.uint16), want.view(np.uint16))
    assert np.array_equal(out[1].view(np.int32), want.astype(np.float32).view(np.int32))
    ok = np.abs(v) < 2**22  # nearest_int's domain (ggml asserts it)
    assert np.array_equal(out[2][ok], np.rint(v[ok]).astype(np.int64))
    assert np.array_equal(out[3][ok], np.clip(np.rint(v[ok]), -100, 31))

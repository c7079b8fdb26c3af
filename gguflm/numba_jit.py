"""numba compilation shared by the CPU kernels (`gguflm.cpu.jit`) and the compiled quantizers
(`gguflm.quantize.jit_arith`): a function compiled once and cached on disk, and numba's thread pool
started the one way both want. Imports no torch, so the quantizer can use it without the CPU backend.

The cache goes next to the source (`__pycache__`) when that is writable, else to the user's cache
directory (~/.cache/numba; NUMBA_CACHE_DIR overrides); with neither writable a function is still
compiled, afresh in each process.
"""

from __future__ import annotations

import os

import numba


def compiled(func, **options):
    """`func` compiled by numba with `options`, cached on disk where a cache directory is writable."""
    try:
        return numba.njit(cache=True, **options)(func)
    except RuntimeError:  # no writable cache directory anywhere
        return numba.njit(**options)(func)


def start_threads() -> None:
    """Start numba's thread pool once (later calls do nothing). OpenMP when its idle threads sleep
    (OMP_WAIT_POLICY=PASSIVE, read by torch's libgomp, which numba's shares, when torch loads:
    `threads.prefer_passive_openmp`), else numba's workqueue. SmolLM2 Q8_0 decode on the loaded 2-core
    box: 20.7-32.8 tok/s with passive OpenMP, 13.6-15.9 with workqueue (slower to wake), 1.5 with
    OpenMP spinning (idle threads take the cores from the work between kernels).
    NUMBA_THREADING_LAYER, when set, decides instead."""
    from numba.np.ufunc import parallel

    if "NUMBA_THREADING_LAYER" not in os.environ and not parallel._is_initialized:
        passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
        numba.config.THREADING_LAYER = "omp" if passive else "workqueue"
    parallel._launch_threads()

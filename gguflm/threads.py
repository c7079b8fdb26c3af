"""How many threads the CPU path computes with: by default one per physical core, as llama.cpp does."""

from __future__ import annotations

import os
import sys

from gguflm.errors import GGUFLMError


def prefer_passive_openmp() -> None:
    """Before torch loads: OpenMP's idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE,
    unless set), so the CPU kernels can run on OpenMP (`gguflm.numba_jit.start_threads`). The
    command line calls it; a program using the Python API may set the variable itself."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def physical_cores() -> int:
    """Distinct (package, core) pairs among the CPUs this process may run on (hyper-threads counted
    once); the CPU count where the topology cannot be read."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topo}/physical_package_id") as pkg, open(f"{topo}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def check_threads(threads: int | None) -> int:
    """The thread count to use: `threads`, or the physical cores when None; fewer than 1 is an error."""
    if threads is None:
        return physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise GGUFLMError(f"threads must be a positive whole number, not {threads!r}")
    return threads


def set_threads(threads: int, kernels: bool = True) -> None:
    """Compute with `threads` threads: torch's ops, and (`kernels`) the numba kernels, which cannot
    have more than the CPUs numba found at start-up."""
    import torch

    torch.set_num_threads(threads)
    if kernels:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

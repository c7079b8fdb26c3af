"""Shared fixtures: the ../shared test data (skipped when absent) and synthetic models; the `gpu` marker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# GGUFLM_TESTDATA points elsewhere where ../shared does not travel (scripts/gpu_check.py on a GPU machine)
TESTDATA = Path(os.environ.get("GGUFLM_TESTDATA") or Path(__file__).resolve().parents[1].parent / "shared" / "testdata")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: runs Triton kernels or CUDA graphs: on a CUDA machine they compile and run for real "
        "(`pytest -m gpu`, step 2 of scripts/gpu_check.py). Every test in a module that imports kernel_utils has it.")


def pytest_collection_modifyitems(items):
    """Mark the tests of kernel modules `gpu`: they import kernel_utils, which puts them on the GPU when there is one."""
    kernel_utils = sys.modules.get("kernel_utils")
    for item in items:
        module = getattr(item, "module", None)
        if kernel_utils is not None and module is not None and any(v is kernel_utils for v in vars(module).values()):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"{TESTDATA} is absent (the test data ships with the development checkout only)")
    return TESTDATA


@pytest.fixture(scope="session")
def stories260k(testdata: Path) -> Path:
    return testdata / "models" / "stories260K.gguf"

"""Shared fixtures: the ../shared test data (skipped when absent) and synthetic models."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip("../shared/testdata is absent (it ships with the development checkout only)")
    return TESTDATA


@pytest.fixture(scope="session")
def stories260k(testdata: Path) -> Path:
    return testdata / "models" / "stories260K.gguf"

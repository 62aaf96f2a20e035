"""Fixtures for runtime tests: a fresh SageMaker tree per test and the digits channels."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtree import EXAMPLE, JobTree


@pytest.fixture
def job(tmp_path: Path) -> JobTree:
    return JobTree(tmp_path / "ml")


@pytest.fixture(scope="session")
def digits_channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from prepare_data import write_channels
    finally:
        sys.path.remove(str(EXAMPLE))
    return write_channels(tmp_path_factory.mktemp("digits"))


@pytest.fixture
def code_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty source directory for a test's own user script."""
    d = tmp_path / "src"
    d.mkdir()
    return d

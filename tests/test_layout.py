"""Guards for the repository layout that docs/design.md requires."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "path", ["constructs/__init__.py", "runtime/__init__.py", "tests/constructs"]
)
def test_no_package_shadows_the_constructs_library(path: str) -> None:
    assert not (REPO / path).exists(), (
        f"{path} must not exist: a package named like that shadows the `constructs` library "
        "that aws-cdk-lib is built on"
    )


def test_constructs_library_resolves_to_site_packages_from_the_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import constructs; print(constructs.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 and "No module named 'constructs'" in out.stderr:
        pytest.fail("the constructs library is not installed in this environment")
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout, out.stdout

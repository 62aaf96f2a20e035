"""Build the second anchor (the current AWS serving stack) in its own virtualenv.

Today's SageMaker framework containers serve through PyPI's ``sagemaker-inference`` toolkit
(1.10.1) on ``multi-model-server`` (1.1.11): a Java (Netty) front end that forwards every
request over a Unix socket to Python backend workers. No official Chainer image ever used it
(Chainer was deprecated first), so ``mms_handler.py`` gives it the same Chainer defaults as the
first anchor. Chainer needs ``setuptools<70`` at build time and NumPy 1.x, as in
``build_venv.py``; the
front end needs a Java runtime on ``PATH`` (17 on the project's machines: Debian's
``openjdk-17-jre-headless``).

Run: ``python benchmarks/anchor/build_mms_venv.py`` (idempotent: a stamp file skips a finished
build).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["MMS_VENV", "build", "mms_python"]

MMS_VENV = Path(__file__).resolve().parent.parent / ".mms-venv"
_STAMP = MMS_VENV / ".built-v1"
_PACKAGES = ["multi-model-server==1.1.11", "sagemaker-inference==1.10.1"]


def mms_python() -> Path:
    return MMS_VENV / "bin" / "python"


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, env=env)


def build(base_python: str = "python3.11") -> Path:
    """Create the venv when missing; return its interpreter."""
    if shutil.which("java") is None:
        raise SystemExit("java is missing: apt-get install -y openjdk-17-jre-headless")
    if _STAMP.exists():
        return mms_python()
    _run([base_python, "-m", "venv", str(MMS_VENV)])
    py = str(mms_python())
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("setuptools<70\n")
        env = dict(os.environ, PIP_CONSTRAINT=str(constraints))
        _run([*pip, "setuptools<70", "wheel"], env)
        _run([*pip, "numpy<2", "chainer==7.8.1", *_PACKAGES], env)
    _run([py, "-c", "import sagemaker_inference, mms, chainer"])
    _STAMP.write_text("ok\n")
    return mms_python()


if __name__ == "__main__":
    print(build(*sys.argv[1:]))

"""Build the anchor stack (the old SageMaker Chainer serving stack) in its own virtualenv.

The anchor is what existing endpoints run: nginx -> gunicorn (gevent workers) -> Flask, from
PyPI's ``sagemaker-containers`` 2.8.6.post2. Its last release predates Python 3.11, so the install
follows a recipe that is known to work (issue 3): Chainer first, built against ``setuptools<70``
(its ``setup.py`` needs ``pkg_resources`` APIs that later setuptools dropped) and NumPy 1.x, then
``sagemaker-containers`` without build isolation (its sdist imports setuptools at build time),
then the pins that keep Flask 1.x importable, then a ``.pth`` shim that restores the
``collections`` aliases removed in Python 3.10 which that Flask stack still imports.

Run: ``python benchmarks/anchor/build_venv.py`` (idempotent: a stamp file skips a finished build).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ANCHOR_VENV", "anchor_python", "build"]

ANCHOR_VENV = Path(__file__).resolve().parent.parent / ".anchor-venv"
_STAMP = ANCHOR_VENV / ".built-v1"
_PINS = [
    "jinja2<3",
    "markupsafe<2.1",
    "itsdangerous<2",
    "werkzeug<2",
    "click<8",
    "protobuf<4",
]
# One line: site.py exec()s it inside a function, so no comprehension (it cannot see the names).
_SHIM = (
    "import collections as _c, collections.abc as _a; "
    + "; ".join(
        f"_c.{_n} = getattr(_c, {_n!r}, None) or _a.{_n}"
        for _n in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable")
    )
    + "\n"
)


def anchor_python() -> Path:
    return ANCHOR_VENV / "bin" / "python"


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, env=env)


def build(base_python: str = "python3.11") -> Path:
    """Create the venv when missing; return its interpreter."""
    if _STAMP.exists():
        return anchor_python()
    _run([base_python, "-m", "venv", str(ANCHOR_VENV)])
    py = str(anchor_python())
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("setuptools<70\n")
        env = dict(os.environ, PIP_CONSTRAINT=str(constraints))
        _run([*pip, "setuptools<70", "wheel"], env)
        _run([*pip, "numpy<2", "chainer==7.8.1"], env)
        _run([*pip, "--no-build-isolation", "sagemaker-containers==2.8.6.post2"], env)
        _run([*pip, *_PINS], env)
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "anchor_collections_shim.pth").write_text(_SHIM)
    _run([py, "-c", "import sagemaker_containers.beta.framework, chainer, gevent, gunicorn"])
    _STAMP.write_text("ok\n")
    return anchor_python()


if __name__ == "__main__":
    print(build(*sys.argv[1:]))

"""Deterministic ``sourcedir.tar.gz``: the same bytes on every machine and every run.

Entries are sorted, owned by uid/gid 0 with empty names, dated 0, mode 0644 (0755 for
directories and executables), and the gzip header carries mtime 0 and no file name, so the
asset hash depends on the file contents and relative paths only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["EXCLUDED_DIRS", "build_model_archive", "build_source_archive", "extract", "is_excluded"]

EXCLUDED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "node_modules",
        "cdk.out",
        ".ipynb_checkpoints",
    }
)
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def is_excluded(path: Path) -> bool:
    """True for caches, version control, virtualenvs and compiled Python files."""
    if path.name in EXCLUDED_DIRS or path.name.startswith(".venv"):
        return True
    if path.is_dir() and (path / "pyvenv.cfg").is_file():
        return True  # a virtualenv under any name
    return path.is_file() and path.suffix in _EXCLUDED_SUFFIXES


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_excluded(base / d))
        yield from (base / d for d in dirnames)
        yield from (base / f for f in sorted(filenames) if not is_excluded(base / f))


def _members(source_dir: Path, dependencies: Sequence[Path], under: str = "") -> dict[str, Path]:
    """Archive name -> file on disk; dependency directories land next to the source files."""
    root = Path(under) if under else Path()
    members: dict[str, Path] = {under: source_dir} if under else {}
    for path in _walk(source_dir):
        members[(root / path.relative_to(source_dir)).as_posix()] = path
    for dep in dependencies:
        members[(root / dep.name).as_posix()] = dep
        if dep.is_dir():
            for path in _walk(dep):
                members[(root / dep.name / path.relative_to(dep)).as_posix()] = path
    return members


def _tar_info(name: str, path: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    st = path.stat()  # follows symlinks: the archive carries the content, never a link
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def build_source_archive(source_dir: Path, dependencies: Sequence[Path], destination: Path) -> str:
    """Write the gzip tar of ``source_dir`` plus ``dependencies`` to ``destination``.

    Returns the SHA-256 of the archive bytes.
    """
    return _write(_members(source_dir, dependencies), destination)


def build_model_archive(
    model_dir: Path, code_dir: Path, dependencies: Sequence[Path], destination: Path
) -> str:
    """``model.tar.gz`` with the serving code under ``code/`` (as the SageMaker SDK repacks it
    for network-isolated models, which cannot download code). Returns the SHA-256."""
    members = _members(model_dir, [])
    members.update(_members(code_dir, dependencies, under="code"))
    return _write(members, destination)


def _write(members: dict[str, Path], destination: Path) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(members.items()):
            info = _tar_info(name, path)
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
    data = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(destination.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(destination)
    return hashlib.sha256(data).hexdigest()


def extract(archive: Path, destination: Path) -> Path:
    """Unpack a ``.tar.gz`` for repacking; only regular files and directories, no links."""
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(destination, filter="data")
    return destination

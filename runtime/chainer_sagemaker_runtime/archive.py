"""Safe extraction of code and model archives (CONTRACT.md §1.6: better than the old containers).

Every member is checked before anything is written, so a refused archive leaves the target
untouched: no absolute paths, no ``..`` components, no links that point outside the target, no
device files or FIFOs.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from chainer_sagemaker_runtime.errors import CodeError

__all__ = ["UnsafeArchiveError", "check_members", "safe_extract"]


class UnsafeArchiveError(CodeError):
    """An archive member would escape the extraction directory."""


def _problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "'..' path component"
    if member.isdev() or member.isfifo():
        return "device file or FIFO"
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            return f"link to absolute path {target!r}"
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"link {target!r} points outside the archive"
    return None


def check_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    bad = [f"{m.name!r}: {why}" for m in members if (why := _problem(m)) is not None]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnsafeArchiveError(
            f"refusing to extract {source}: {shown}. Build the archive from a directory with "
            "relative paths only (for example `tar -czf sourcedir.tar.gz -C src .`)."
        )
    return members


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a (gzip) tar into ``target`` after checking every member."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise CodeError(
            f"{archive} is not a readable tar archive ({exc}); "
            "code and models must be packed as .tar.gz"
        ) from exc
    with tar:
        members = check_members(tar, str(archive))
        target.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):  # defence in depth where Python has it
            tar.extractall(target, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(target, members=members)  # noqa: S202 - members checked above

"""Safe extraction of code archives (docs/contract.md §1.6; stricter than the old containers).

The archive is read header by header and checked before a single file is written:

* every member's path must be relative, free of ``..``, and must not run through a link member
  (``d/s -> ..`` followed by ``d/s/x`` would otherwise write wherever ``d/s`` points);
* a link's target must stay inside the archive, judged component by component, and must not
  run through a symlink member either (``e -> d/s/..`` is outside when ``d/s`` is ``..``);
* no device files, FIFOs or sparse files;
* at most ``CHAINER_SAGEMAKER_MAX_ARCHIVE_MEMBERS`` members and
  ``CHAINER_SAGEMAKER_MAX_ARCHIVE_BYTES`` bytes of member data (the sizes come from the
  headers, and each header is judged before the data behind it is decompressed, so a gzip bomb
  is refused after reading at most the limit).

Only then is the archive extracted, with Python's ``tarfile.data_filter`` as a second line of
defence, into a temporary directory next to the target, which is moved into place at the end:
a refused or broken archive leaves nothing behind. Where ``tarfile.data_filter`` is missing
(Pythons before 3.10.12 / 3.11.4, which ``requires-python`` still admits) extraction is
refused outright rather than trusting the checks alone.

Hand-written because no maintained library checks tar link chains before extracting; the
rules follow Python's own data filter, applied to the whole archive up front.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chainer_sagemaker_runtime.errors import CodeError, ConfigError

__all__ = [
    "MAX_BYTES_ENV",
    "MAX_MEMBERS_ENV",
    "ArchiveLimits",
    "UnsafeArchiveError",
    "safe_extract",
]

MAX_BYTES_ENV = "CHAINER_SAGEMAKER_MAX_ARCHIVE_BYTES"
MAX_MEMBERS_ENV = "CHAINER_SAGEMAKER_MAX_ARCHIVE_MEMBERS"
# A code directory with vendored packages or a few pretrained weights fits easily; a
# compression bomb (3 MB that expands to 3 GB) does not.
DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_MEMBERS = 100_000


class UnsafeArchiveError(CodeError):
    """An archive member would escape the extraction directory, or the archive is too big."""


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may hold (member data bytes, member count)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ArchiveLimits:
        """Read the two limits; a bad value is a :class:`ConfigError` naming the variable."""
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        values = []
        for name, default in (
            (MAX_BYTES_ENV, DEFAULT_MAX_BYTES),
            (MAX_MEMBERS_ENV, DEFAULT_MAX_MEMBERS),
        ):
            raw = environ.get(name, "").strip()
            if not raw:
                values.append(default)
                continue
            try:
                number = int(raw)
            except ValueError:
                number = 0
            if number < 1:
                problems.append(
                    f"{name}={raw!r} is not valid: use a positive integer (default {default})"
                )
                number = default
            values.append(number)
        if problems:
            raise ConfigError(problems)
        return cls(max_bytes=values[0], max_members=values[1])


_DRIVE = re.compile(r"^[A-Za-z]:([/\\]|$)")


def _is_absolute(name: str) -> bool:
    """POSIX-absolute, or a Windows drive path (archives packed on Windows)."""
    return name.startswith(("/", "\\")) or _DRIVE.match(name) is not None


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _walk(start: list[str], target: str, links: set[str]) -> str | None:
    """Resolve ``target`` from the directory ``start`` component by component; the problem."""
    current = list(start)
    steps = _parts(target)
    for i, step in enumerate(steps):
        if step == "..":
            if not current:
                return f"link {target!r} points outside the archive"
            current.pop()
            continue
        current.append(step)
        if i < len(steps) - 1 and "/".join(current) in links:
            return f"link {target!r} runs through the link member {'/'.join(current)!r}"
    return None


def _problem(member: tarfile.TarInfo, links: set[str], symlinks: set[str]) -> str | None:
    name = member.name
    if _is_absolute(name):
        return "absolute path"
    parts = _parts(name)
    if ".." in parts:
        return "'..' path component"
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if prefix in links:
            return f"path runs through the link member {prefix!r}"
    if member.isdev() or member.isfifo():
        return "device file or FIFO"
    if member.issparse():
        return "sparse file (pack the code without --sparse)"
    if member.issym() or member.islnk():
        target = member.linkname
        if _is_absolute(target):
            return f"link to absolute path {target!r}"
        if member.islnk() and "/".join(_parts(target)) in symlinks:
            return f"hard link {target!r} to a symlink member"
        return _walk(parts[:-1] if member.issym() else [], target, links)
    return None


def _read_members(
    tar: tarfile.TarFile, source: str, limits: ArchiveLimits
) -> list[tarfile.TarInfo]:
    """Read the headers one by one, stopping at the first limit crossed."""
    members: list[tarfile.TarInfo] = []
    total = 0
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CodeError(f"{source} is not a readable tar archive ({exc})") from exc
        if member is None:
            return members
        members.append(member)
        if len(members) > limits.max_members:
            raise UnsafeArchiveError(
                f"refusing to extract {source}: it has more than {limits.max_members} members "
                f"(the limit {MAX_MEMBERS_ENV}={limits.max_members}; raise it if the code "
                "really has that many files)"
            )
        total += max(member.size, 0)
        if total > limits.max_bytes:
            raise UnsafeArchiveError(
                f"refusing to extract {source}: its members hold more than {limits.max_bytes} "
                f"bytes uncompressed (the limit {MAX_BYTES_ENV}={limits.max_bytes}; raise it "
                "if the code really is that big)"
            )


def check_members(
    tar: tarfile.TarFile, source: str, limits: ArchiveLimits | None = None
) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, after checking all of them; raises naming every bad one."""
    members = _read_members(tar, source, limits or ArchiveLimits())
    symlinks = {"/".join(_parts(m.name)) for m in members if m.issym()}
    links = symlinks | {"/".join(_parts(m.name)) for m in members if m.islnk()}
    bad = [f"{m.name!r}: {why}" for m in members if (why := _problem(m, links, symlinks))]
    files_so_far: set[str] = set()
    for m in members:  # a hard link needs its file extracted before it
        if m.islnk() and not bad and "/".join(_parts(m.linkname)) not in files_so_far:
            bad.append(f"{m.name!r}: hard link to {m.linkname!r}, which is no earlier file member")
        if m.isreg():
            files_so_far.add("/".join(_parts(m.name)))
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnsafeArchiveError(
            f"refusing to extract {source}: {shown}. Build the archive from a directory with "
            "relative paths and links that stay inside it (for example "
            "`tar -czf sourcedir.tar.gz -C src .`)."
        )
    return members


def _place(extracted: Path, target: Path) -> None:
    """Move the extracted tree into ``target``; entries of the same name are replaced."""
    if not target.exists() or (
        target.is_dir() and not target.is_symlink() and not any(target.iterdir())
    ):
        if target.exists():
            target.rmdir()
        extracted.rename(target)
        return
    for entry in extracted.iterdir():
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        entry.rename(dest)
    extracted.rmdir()


def safe_extract(archive: Path, target: Path, *, limits: ArchiveLimits | None = None) -> None:
    """Extract a (compressed) tar into ``target`` after checking every member."""
    limits = limits or ArchiveLimits.from_environ()
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CodeError(
            f"{archive} is not a readable tar archive ({exc}); "
            "code must be packed as a (gzip) tar, for example sourcedir.tar.gz"
        ) from exc
    with tar:
        members = check_members(tar, str(archive), limits)
        data_filter = getattr(tarfile, "data_filter", None)
        if data_filter is None:
            raise CodeError(
                f"refusing to extract {archive}: this Python lacks tarfile.data_filter "
                "(Python 3.10.12, 3.11.4, 3.12 or newer has it); upgrade Python in the image"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
        try:
            try:
                tar.extractall(scratch, members=members, filter=data_filter)  # noqa: S202 - checked
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"refusing to extract {archive}: {exc}") from exc
            except (tarfile.TarError, OSError, EOFError, KeyError) as exc:
                raise CodeError(f"could not extract {archive} into {target}: {exc}") from exc
            scratch.chmod(0o755)
            _place(scratch, target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

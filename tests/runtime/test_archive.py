"""Code archives are checked whole before anything is written (docs/contract.md §1.6).

Refused archives leave nothing behind: no target, no temporary directory next to it, nothing
outside. Each row is one way an archive can try to write outside its directory or to exhaust
the disk.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from jobtree import JobTree

from chainer_sagemaker_runtime.archive import (
    MAX_BYTES_ENV,
    MAX_MEMBERS_ENV,
    ArchiveLimits,
    UnsafeArchiveError,
    safe_extract,
)
from chainer_sagemaker_runtime.errors import ConfigError

Member = tuple[str, str, str]  # (kind, name, link target or file content)


def _info(kind: str, name: str, arg: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    data = b""
    if kind == "file":
        data = arg.encode()
        info.size = len(data)
    elif kind == "dir":
        info.type = tarfile.DIRTYPE
    elif kind in ("sym", "hard"):
        info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
        info.linkname = arg
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    elif kind == "chr":
        info.type = tarfile.CHRTYPE
    return info, data


def write_tar(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, arg in members:
            info, data = _info(kind, name, arg)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


# (id, members, what the refusal says)
REFUSED: list[tuple[str, list[Member], str]] = [
    ("absolute", [("file", "/etc/evil", "x")], "absolute path"),
    ("windows-drive", [("file", "C:\\evil", "x")], "absolute path"),
    ("dotdot", [("file", "../evil", "x")], "'..' path component"),
    ("inner-dotdot", [("file", "ok/../../evil", "x")], "'..' path component"),
    ("symlink-out", [("sym", "escape", "../../etc/passwd")], "points outside the archive"),
    ("symlink-abs", [("sym", "abs", "/etc/passwd")], "link to absolute path"),
    ("hardlink-out", [("hard", "hard", "../x")], "points outside the archive"),
    (
        "symlink-chain",  # d/s -> .. is inside; d/s/l -> .. runs through it; so does d/s/l/x
        [("dir", "d", ""), ("sym", "d/s", ".."), ("sym", "d/s/l", ".."), ("file", "d/s/l/x", "x")],
        "path runs through the link member 'd/s'",
    ),
    (
        "file-through-symlink",
        [("sym", "up", "."), ("file", "up/x", "x")],
        "path runs through the link member 'up'",
    ),
    (
        "hardlink-through-symlink",
        [("dir", "d", ""), ("sym", "d/s", ".."), ("hard", "h", "d/s/etc/passwd")],
        "runs through the link member 'd/s'",
    ),
    (
        "symlink-target-through-symlink",  # normpath('d/s/..') is 'd', but d/s is '.'
        [("dir", "d", ""), ("sym", "d/s", ".."), ("sym", "e", "d/s/..")],
        "runs through the link member 'd/s'",
    ),
    (
        "hardlink-to-symlink",
        [("sym", "s", "good.py"), ("hard", "h", "s")],
        "hard link 's' to a symlink member",
    ),
    (
        "hardlink-to-no-earlier-file",
        [("hard", "h", "later.py"), ("file", "later.py", "x")],
        "hard link to 'later.py', which is no earlier file member",
    ),
    ("fifo", [("fifo", "pipe", "")], "device file or FIFO"),
    ("device", [("chr", "tty", "")], "device file or FIFO"),
]


def _nothing_left(target: Path, archive: Path) -> None:
    """Neither the target nor a temporary directory beside it exists: only the archive."""
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [archive.name]


@pytest.mark.parametrize(("members", "why"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_an_archive_that_could_write_outside_is_refused_whole(
    tmp_path: Path, members: list[Member], why: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = write_tar(work / "bad.tar.gz", [("file", "good.py", "x"), *members])
    target = work / "code"
    with pytest.raises(UnsafeArchiveError, match=why):
        safe_extract(archive, target)
    _nothing_left(target, archive)
    assert [p.name for p in tmp_path.iterdir()] == ["work"]


def test_links_that_stay_inside_are_extracted(tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "ok.tar.gz",
        [
            ("file", "pkg/a.py", "A = 1\n"),
            ("sym", "pkg/b.py", "a.py"),
            ("sym", "top", "pkg/../pkg/a.py"),  # '..' within the archive, through real dirs
            ("hard", "c.py", "pkg/a.py"),
            ("file", "notes:v2.txt", "a colon is not a drive"),
        ],
    )
    target = tmp_path / "out"
    safe_extract(archive, target)
    assert (target / "pkg" / "b.py").read_text() == "A = 1\n"
    assert (target / "top").read_text() == "A = 1\n"
    assert (target / "c.py").read_text() == "A = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar.gz", "out"]


def test_a_refused_archive_leaves_existing_code_untouched(tmp_path: Path) -> None:
    target = tmp_path / "code"
    target.mkdir()
    (target / "keep.py").write_text("kept")
    archive = write_tar(tmp_path / "bad.tar.gz", [("file", "keep.py", "new"), ("sym", "x", "/")])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)
    assert [p.name for p in target.iterdir()] == ["keep.py"]
    assert (target / "keep.py").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "code"]


def test_extraction_into_existing_code_replaces_entries_of_the_same_name(tmp_path: Path) -> None:
    target = tmp_path / "code"
    (target / "pkg").mkdir(parents=True)
    (target / "pkg" / "old.py").write_text("old")
    (target / "other.py").write_text("other")
    archive = write_tar(tmp_path / "new.tar.gz", [("file", "pkg/new.py", "new")])
    safe_extract(archive, target)
    assert sorted(p.name for p in (target / "pkg").iterdir()) == ["new.py"]
    assert (target / "other.py").read_text() == "other"


def test_tarfiles_own_filter_errors_become_our_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's data filter is the second line of defence; what it refuses, we refuse."""

    def strict(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        raise tarfile.OutsideDestinationError(member, path)

    monkeypatch.setattr(tarfile, "data_filter", strict)
    archive = write_tar(tmp_path / "bad.tar.gz", [("file", "a.py", "x")])
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "code")
    _nothing_left(tmp_path / "code", archive)


_WITHOUT_DATA_FILTER = """
import json, sys, tarfile
from pathlib import Path
del tarfile.data_filter  # as on Python < 3.10.12 / 3.11.4
from chainer_sagemaker_runtime.archive import safe_extract
results = {}
for archive in sys.argv[1:]:
    target = Path(archive + ".out")
    try:
        safe_extract(Path(archive), target)
        results[Path(archive).name] = ["extracted", target.exists()]
    except Exception as exc:
        results[Path(archive).name] = [type(exc).__name__ + ": " + str(exc), target.exists()]
print(json.dumps(results))
"""


def test_without_tarfile_data_filter_bad_archives_are_still_refused_and_good_ones_too(
    tmp_path: Path,
) -> None:
    rows = {r[0]: r[1] for r in REFUSED}
    archives = [
        write_tar(tmp_path / f"{name}.tar.gz", rows[name])
        for name in ("symlink-chain", "hardlink-through-symlink")
    ]
    archives.append(write_tar(tmp_path / "good.tar.gz", [("file", "train.py", "print(1)")]))
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DATA_FILTER, *map(str, archives)],
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(out.stdout)
    assert "path runs through the link member 'd/s'" in results["symlink-chain.tar.gz"][0]
    assert "runs through the link member 'd/s'" in results["hardlink-through-symlink.tar.gz"][0]
    assert "lacks tarfile.data_filter" in results["good.tar.gz"][0]  # fail closed
    assert all(exists is False for _, exists in results.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(a.name for a in archives)


def _gzip_bomb(path: Path, declared: int, chunk: int = 1 << 20) -> Path:
    """A tar with one member of ``declared`` zero bytes, as concatenated gzip members.

    Built in milliseconds: one compressed MiB of zeros (about 1 KiB) repeated; a reader
    decompresses all of it, so it is a real bomb of ``declared`` bytes.
    """
    info = tarfile.TarInfo("bomb.bin")
    info.size = declared
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(declared // chunk):
            f.write(zeros)
        f.write(gzip.compress(b"\0" * (-declared % 512 + 1024)))  # padding, end of archive
    return path


@pytest.mark.timeout(30)
def test_a_gzip_bomb_over_the_default_limit_is_refused_without_expanding_it(
    tmp_path: Path,
) -> None:
    bomb = _gzip_bomb(tmp_path / "bomb.tar.gz", 3 * 1024**3)
    assert bomb.stat().st_size < 5 * 1024**2  # 3 GB in a few MB
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(bomb, tmp_path / "code")
    message = str(caught.value)
    assert f"more than {2 * 1024**3} bytes uncompressed" in message
    assert MAX_BYTES_ENV in message
    _nothing_left(tmp_path / "code", bomb)


@pytest.mark.parametrize(
    ("environ", "members", "names"),
    [
        ({MAX_BYTES_ENV: "2500"}, [("file", f"f{i}", "x" * 1000) for i in range(3)], "2500 bytes"),
        ({MAX_MEMBERS_ENV: "3"}, [("file", f"f{i}", "x") for i in range(4)], "more than 3 members"),
    ],
    ids=["bytes", "members"],
)
def test_limits_are_configurable_and_named_in_the_refusal(
    tmp_path: Path, environ: dict[str, str], members: list[Member], names: str
) -> None:
    archive = write_tar(tmp_path / "big.tar.gz", members)
    limits = ArchiveLimits.from_environ(environ)
    with pytest.raises(UnsafeArchiveError, match=names) as caught:
        safe_extract(archive, tmp_path / "code", limits=limits)
    assert next(iter(environ)) in str(caught.value)
    safe_extract(archive, tmp_path / "code")  # the defaults take it


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_bad_limit_is_a_configuration_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=f"{MAX_MEMBERS_ENV}='{value}' is not valid"):
        ArchiveLimits.from_environ({MAX_MEMBERS_ENV: value})


def test_the_job_refuses_a_bomb_naming_the_limit(job: JobTree, tmp_path: Path) -> None:
    bomb = _gzip_bomb(tmp_path / "sourcedir", 64 * 1024**2)  # no suffix: judged by content
    job.configure({"sagemaker_program": "train.py", "sagemaker_submit_directory": str(bomb)})
    result = job.train(**{MAX_BYTES_ENV: str(16 * 1024**2)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{MAX_BYTES_ENV}={16 * 1024**2}" in job.failure()
    assert not (job.base / "code").exists()

"""The code archive is deterministic: same bytes, same asset hash, on every machine and run."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import aws_cdk as cdk
import pytest

from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode
from chainer_sagemaker_cdk._archive import build_source_archive


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "requirements.txt").write_text("numpy\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "model.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    # everything below must stay out of the archive
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "model.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "venv").mkdir()
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "myenv").mkdir()
    (root / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / ".venv-py312").mkdir()
    (root / ".venv-py312" / "x").write_text("")
    return root


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_same_bytes_from_different_directories_and_times(tmp_path: Path) -> None:
    first = _tree(tmp_path / "a" / "code")
    second = tmp_path / "b" / "elsewhere"
    shutil.copytree(first, second)
    for path in second.rglob("*"):
        path.touch()  # other mtimes must not matter
    digest_a = build_source_archive(first, [], tmp_path / "a.tar.gz")
    digest_b = build_source_archive(second, [], tmp_path / "b.tar.gz")
    assert digest_a == digest_b
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_entries_are_sorted_normalized_and_filtered(tmp_path: Path) -> None:
    source = _tree(tmp_path / "code")
    archive = tmp_path / "sourcedir.tar.gz"
    build_source_archive(source, [], archive)
    members = _members(archive)
    assert list(members) == [
        "pkg",
        "pkg/__init__.py",
        "pkg/model.py",
        "requirements.txt",
        "run.sh",
        "train.py",
    ]
    for info in members.values():
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
    assert members["train.py"].mode == 0o644
    assert members["run.sh"].mode == 0o755
    assert members["pkg"].isdir()
    raw = archive.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert not raw[3] & 0x08  # no file name in the gzip header
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        assert tar.extractfile("train.py").read() == b"print('train')\n"  # type: ignore[union-attr]


def test_dependencies_land_at_the_archive_root(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("")
    lib = tmp_path / "deps" / "mylib"
    (lib / "__pycache__").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "__pycache__" / "x.pyc").write_bytes(b"")
    single = tmp_path / "helpers.py"
    single.write_text("")
    archive = tmp_path / "out.tar.gz"
    build_source_archive(source, [lib, single], archive)
    assert list(_members(archive)) == ["helpers.py", "mylib", "mylib/__init__.py", "train.py"]


def _code_asset(outdir: Path, source: Path) -> tuple[str, str]:
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "Hash")
    ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(source, "train.py"),
        image=RuntimeImage.from_registry("registry.example/chainer:1"),
    )
    assembly = app.synth()
    manifest = json.loads((outdir / "Hash.assets.json").read_text())
    (file_hash,) = [h for h, f in manifest["files"].items() if f["source"]["path"].endswith(".tgz")]
    template = json.dumps(assembly.get_stack_by_name("Hash").template)
    return file_hash, template


def test_asset_hash_is_identical_across_synths_in_different_directories(tmp_path: Path) -> None:
    first = _tree(tmp_path / "one" / "code")
    second = tmp_path / "two" / "nested" / "code"
    shutil.copytree(first, second)
    hash_a, template_a = _code_asset(tmp_path / "out-a", first)
    hash_b, template_b = _code_asset(tmp_path / "out-b", second)
    assert hash_a == hash_b
    assert template_a == template_b
    assert f"{hash_a}.tgz" in template_a  # the template refers to the content-addressed object


def test_a_code_change_changes_the_hash(tmp_path: Path) -> None:
    source = _tree(tmp_path / "code")
    before = build_source_archive(source, [], tmp_path / "1.tar.gz")
    (source / "train.py").write_text("print('changed')\n")
    assert build_source_archive(source, [], tmp_path / "2.tar.gz") != before


@pytest.mark.parametrize("name", ["train.py", "sub/entry.py"])
def test_entry_point_may_be_nested(tmp_path: Path, name: str) -> None:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("")
    assert SourceCode.from_directory(tmp_path, name) is not None

"""Packing a finished local job like SageMaker does."""

from __future__ import annotations

import tarfile
from pathlib import Path

__all__ = ["pack_model", "pack_output"]


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str = "") -> None:
    for path in sorted(root.rglob("*")):
        tar.add(path, arcname=prefix + str(path.relative_to(root)), recursive=False)


def pack_model(model_dir: Path, destination: Path) -> Path:
    """``model.tar.gz``: the model directory's files at the archive root."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w:gz") as tar:
        _add_tree(tar, model_dir)
    return destination


def pack_output(output_dir: Path, destination: Path) -> Path:
    """``output.tar.gz``: the ``success``/``failure`` file and ``data/``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w:gz") as tar:
        for name in ("success", "failure"):
            if (output_dir / name).exists():
                tar.add(output_dir / name, arcname=name)
        data = output_dir / "data"
        if data.is_dir():
            tar.add(data, arcname="data", recursive=False)
            _add_tree(tar, data, "data/")
    return destination

"""Fixtures for the ``serve`` tests: the digits model trained once, and real server processes."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servetools import EXAMPLE, ROOT, Server, extract_model

TrainedModel = dict[str, Path]


@pytest.fixture(scope="session")
def digits_model(
    tmp_path_factory: pytest.TempPathFactory, digits_channels: dict[str, Path]
) -> TrainedModel:
    """The example MLP trained for one epoch (once per session), as a dir and a model.tar.gz."""
    work = tmp_path_factory.mktemp("digits-model")
    model_dir = work / "model"
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "train.py"),
            "--epochs",
            "1",
            "--units",
            "1000",
            "--train",
            str(digits_channels["train"]),
            "--test",
            str(digits_channels["test"]),
            "--model-dir",
            str(model_dir),
            "--output-data-dir",
            str(work / "output"),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    tarball = work / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return {"dir": model_dir, "tarball": tarball, "test": digits_channels["test"]}


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``serve`` processes for a test; all are stopped afterwards."""
    servers: list[Server] = []

    def start(
        code: Path | str | None,
        program: str | None = "inference.py",
        *,
        model_tarball: Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Server:
        base = tmp_path / f"ml{len(servers)}"
        (base / "model").mkdir(parents=True)
        if model_tarball is not None:
            extract_model(model_tarball, base / "model")
        server = Server(base, code, program, env or {})
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def digits_server(
    tmp_path_factory: pytest.TempPathFactory, digits_model: TrainedModel
) -> Iterator[Server]:
    """The example model served from its model.tar.gz with the example's own train.py."""
    base = tmp_path_factory.mktemp("digits-serve")
    (base / "model").mkdir()
    extract_model(digits_model["tarball"], base / "model")
    server = Server(base, EXAMPLE, "train.py", {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    server.wait_ready()
    yield server
    server.stop()

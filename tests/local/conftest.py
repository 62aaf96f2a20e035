"""Fixtures for local mode and client tests: a trained digits model and a served endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(EXAMPLE / "prepare_data.py"), str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def trained_model(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory trained by the example script (3 epochs)."""
    model = tmp_path_factory.mktemp("model")
    subprocess.run(
        [
            sys.executable, str(EXAMPLE / "train.py"), "--epochs", "3",
            "--train", str(digits_dir / "train"), "--test", str(digits_dir / "test"),
            "--model-dir", str(model), "--output-data-dir", str(tmp_path_factory.mktemp("o")),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return model


@pytest.fixture(scope="session")
def test_images(digits_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(digits_dir / "test" / "test.npz")
    return data["x"].astype(np.float32) / 255.0, data["y"]


@pytest.fixture(scope="session")
def endpoint_url(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from chainer_sagemaker_cdk.local import LocalEndpoint, pack_model

    work = tmp_path_factory.mktemp("serve")
    tar = pack_model(trained_model, work / "model.tar.gz")
    port = free_port()
    endpoint = LocalEndpoint(
        tar,
        work,
        environment={"SAGEMAKER_PROGRAM": "train.py"},
        code=EXAMPLE,
        port=port,
        workers=1,
    )
    with endpoint:
        yield endpoint.url

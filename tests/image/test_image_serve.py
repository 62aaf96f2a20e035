"""`serve` in the image: /ping and real predictions over a port published on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ContainerJob
from support import free_port

from chainer_sagemaker_cdk.client import Predictor
from chainer_sagemaker_cdk.local.container import ContainerEngine


@pytest.mark.timeout(180)
def test_serve_answers_ping_and_predicts_the_digits_with_the_trained_model(
    engine: ContainerEngine,
    image: str,
    digits_job: ContainerJob,
    digits_channels: dict[str, Path],
) -> None:
    port = free_port()
    name = f"chainer-test-{uuid.uuid4().hex[:8]}"
    model = digits_job.base / "model"
    code = digits_job.base / "code"
    started = time.monotonic()
    engine(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{model}:/opt/ml/model:ro", "-v", f"{code}:/opt/ml/code:ro",
        "-e", "SAGEMAKER_PROGRAM=train.py", "-e", "SAGEMAKER_MODEL_SERVER_WORKERS=2",
        image, "serve",
    )  # fmt: skip
    try:
        ready = None
        while ready is None and time.monotonic() - started < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        ready = time.monotonic() - started
            except OSError:
                time.sleep(0.1)
        assert ready is not None, engine("logs", name).stdout[-3000:]
        print(f"container start to /ping 200: {ready:.2f} s")
        with np.load(digits_channels["test"] / "test.npz") as data:
            x, y = data["x"].astype(np.float32) / 255.0, data["y"]
        scores = Predictor.local(f"http://127.0.0.1:{port}").predict(x)
        accuracy = float((np.asarray(scores).argmax(axis=1) == y).mean())
        assert accuracy >= 0.90
        single = Predictor.local(f"http://127.0.0.1:{port}").predict(x[:1])
        assert np.asarray(single).shape == (1, 10)
    finally:
        engine("stop", "-t", "20", name, check=False)
        engine.remove(name)

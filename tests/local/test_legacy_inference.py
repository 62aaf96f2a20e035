"""An inference script written for the old SageMaker containers runs unmodified under `serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE
from support import free_port

from chainer_sagemaker_cdk.client import (
    CSVSerializer,
    NumpyDeserializer,
    NumpySerializer,
    Predictor,
)
from chainer_sagemaker_cdk.local import LocalEndpoint

LEGACY = """
from sagemaker_containers.beta.framework import content_types, encoders, worker
from train import model_fn  # noqa: F401


def input_fn(input_data, content_type):
    return encoders.decode(input_data, content_type).astype("float32")


def output_fn(prediction, accept):
    accept = accept if accept in (content_types.NPY, content_types.CSV) else content_types.JSON
    return worker.Response(encoders.encode(prediction.argmax(axis=1), accept), mimetype=accept)
"""


@pytest.mark.parametrize(
    ("serializer", "accept"),
    [(NumpySerializer(), "application/x-npy"), (CSVSerializer(), "text/csv")],
)
def test_encoders_and_worker_response_from_the_old_library(
    trained_model: Path,
    tmp_path: Path,
    test_images: tuple[np.ndarray, np.ndarray],
    serializer: NumpySerializer,
    accept: str,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(EXAMPLE / "train.py", code / "train.py")
    (code / "inference.py").write_text(LEGACY)
    x, y = test_images
    endpoint = LocalEndpoint(
        trained_model,
        tmp_path,
        environment={"SAGEMAKER_PROGRAM": "inference.py"},
        code=code,
        port=free_port(),
        workers=1,
    )
    deserializer = NumpyDeserializer(accept=accept)
    with (
        endpoint,
        Predictor.local(endpoint.url, serializer=serializer, deserializer=deserializer) as p,
    ):
        labels = p.predict(x[:20])
    assert labels.shape == (20,)
    assert (labels.astype(int) == y[:20]).mean() >= 0.9

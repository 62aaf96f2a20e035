"""The client's Predictor against a real local model server and a stubbed SageMaker runtime."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from chainer_sagemaker_cdk.client import (
    CSVSerializer,
    JSONSerializer,
    NumpyDeserializer,
    NumpySerializer,
    Predictor,
    PredictorError,
)


@pytest.mark.parametrize(
    ("serializer", "accept"),
    [
        (NumpySerializer(), "application/x-npy"),
        (NumpySerializer(), "application/json"),
        (JSONSerializer(), "application/x-npy"),
        (JSONSerializer(), "application/json"),
        (CSVSerializer(), "text/csv"),
        (CSVSerializer(), "application/x-npy"),
    ],
)
def test_round_trips_keep_shape_and_predictions(
    endpoint_url: str,
    test_images: tuple[np.ndarray, np.ndarray],
    serializer: NumpySerializer,
    accept: str,
) -> None:
    x, y = test_images
    predictor = Predictor.local(
        endpoint_url, serializer=serializer, deserializer=NumpyDeserializer(accept=accept)
    )
    with predictor:
        scores = predictor.predict(x[:50])
    assert scores.shape == (50, 10)
    assert (scores.argmax(axis=1) == y[:50]).mean() >= 0.9


def test_npy_keeps_float32_and_accepts_image_shaped_input(
    endpoint_url: str, test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = test_images
    with Predictor.local(endpoint_url) as predictor:
        flat = predictor.predict(x[:8])
        images = predictor.predict(x[:8].reshape(8, 1, 28, 28))
    assert flat.dtype == np.float32
    np.testing.assert_allclose(flat, images, rtol=1e-5)


def test_server_errors_surface_with_status_and_message(endpoint_url: str) -> None:
    predictor = Predictor.local(endpoint_url, serializer=JSONSerializer())
    with predictor, pytest.raises(PredictorError) as caught:
        predictor.predict([[1, 2], [3]])  # ragged
    assert 400 <= caught.value.status < 500
    assert caught.value.message


def test_serializers_match_the_sagemaker_sdk_wire_formats() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.load(io.BytesIO(NumpySerializer().serialize(x))).dtype == np.float32
    assert json.loads(JSONSerializer().serialize(x)) == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert CSVSerializer().serialize(x) == b"0.0,1.0,2.0\n3.0,4.0,5.0"
    with pytest.raises(TypeError, match="object array"):
        NumpySerializer().serialize(np.array([{"a": 1}], dtype=object))


def test_invoke_endpoint_through_botocore_stubber() -> None:
    """The SageMaker path, with botocore's Stubber standing in for the AWS endpoint."""
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    reply = io.BytesIO()
    np.save(reply, np.ones((2, 10), dtype=np.float32))
    body = reply.getvalue()
    x = np.zeros((2, 784), dtype=np.float32)
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {
                "Body": StreamingBody(io.BytesIO(body), len(body)),
                "ContentType": "application/x-npy",
            },
            {
                "EndpointName": "digits",
                "Body": NumpySerializer().serialize(x),
                "ContentType": "application/x-npy",
                "Accept": "application/x-npy",
            },
        )
        stub.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message="bad input",
            http_status_code=424,
        )
        predictor = Predictor("digits", sagemaker_runtime_client=client)
        out = predictor.predict(x)
        with pytest.raises(PredictorError, match="bad input"):
            predictor.predict(x)
    assert out.shape == (2, 10)
    assert out.dtype == np.float32


def test_local_endpoint_refuses_a_port_in_use(trained_model: Path, tmp_path: Path) -> None:
    from chainer_sagemaker_cdk.local import LocalEndpoint, LocalModeError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LocalModeError, match=f"port {port} on 127.0.0.1 is in use"):
            LocalEndpoint(trained_model, tmp_path, port=port).start()


def test_client_and_local_mode_import_without_aws_cdk_lib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chainer_sagemaker_cdk.client, chainer_sagemaker_cdk.local\n"
        "print(sorted({'aws_cdk', 'jsii', 'chainer'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

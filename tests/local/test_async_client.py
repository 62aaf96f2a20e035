"""``AsyncPredictor`` against moto's S3 and sagemaker-runtime servers on loopback.

moto implements InvokeEndpointAsync as a canned stand-in: it reads no request and runs no
model, it writes the next queued result (or failure) to a bucket of its own and returns both
locations. So these tests check the client's side (the upload, the request, the wait for
either object, the bound on the wait); the model's side runs in test_async_endpoint.py.
A botocore Stubber answers for sagemaker-runtime where the output must appear late or never.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
import urllib3
from botocore.stub import Stubber
from support import moto_server

from chainer_sagemaker_cdk.client import (
    AsyncInferenceError,
    AsyncPredictor,
    JSONSerializer,
    NumpyDeserializer,
)

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3(moto_url: str) -> Any:
    client = _client("s3", moto_url)
    client.create_bucket(Bucket="io-bucket")
    return client


def _queue(moto_url: str, *results: dict[str, Any]) -> None:
    urllib3.request(
        "POST",
        f"{moto_url}/moto-api/static/sagemaker/async-endpoint-results",
        body=json.dumps({"results": list(results)}),
        headers={"Content-Type": "application/json"},
    )


def test_submit_uploads_the_request_and_result_reads_the_output(moto_url: str, s3: Any) -> None:
    _queue(moto_url, {"data": json.dumps([[0.1, 0.9]])})
    predictor = AsyncPredictor(
        "digits-async",
        input_location="s3://io-bucket/async-input",
        serializer=JSONSerializer(),
        deserializer=NumpyDeserializer(accept="application/json"),
        sagemaker_runtime_client=_client("sagemaker-runtime", moto_url),
        s3_client=s3,
        timeout=10,
    )
    invocation = predictor.submit([[1.0, 2.0]], inference_id="req-1")
    assert invocation.input_location == "s3://io-bucket/async-input/req-1"
    stored = s3.get_object(Bucket="io-bucket", Key="async-input/req-1")
    assert json.loads(stored["Body"].read()) == [[1.0, 2.0]]
    assert stored["ContentType"] == "application/json"
    # moto's output object carries no content type: read as the Accept type asked for
    np.testing.assert_allclose(predictor.result(invocation), [[0.1, 0.9]])


def test_a_failure_object_raises_with_its_text(moto_url: str, s3: Any) -> None:
    _queue(moto_url, {"is_failure": True, "data": "model_fn raised ValueError"})
    predictor = AsyncPredictor(
        "digits-async",
        input_location="s3://io-bucket/async-input",
        serializer=JSONSerializer(),
        sagemaker_runtime_client=_client("sagemaker-runtime", moto_url),
        s3_client=s3,
        timeout=10,
    )
    with pytest.raises(AsyncInferenceError, match="model_fn raised ValueError") as caught:
        predictor.predict([[1.0]])
    assert caught.value.failure == "model_fn raised ValueError"


def _stubbed(s3: Any, output_key: str) -> tuple[AsyncPredictor, Stubber]:
    runtime = boto3.client("sagemaker-runtime", region_name=REGION)
    stubber = Stubber(runtime)
    stubber.add_response(
        "invoke_endpoint_async",
        {
            "InferenceId": "late-1",
            "OutputLocation": f"s3://io-bucket/{output_key}",
            "FailureLocation": f"s3://io-bucket/async-failures/{output_key}",
        },
        {
            "EndpointName": "digits-async",
            "InputLocation": "s3://io-bucket/async-input/late-1",
            "ContentType": "application/x-npy",
            "Accept": "application/x-npy",
            "InferenceId": "late-1",
        },
    )
    stubber.activate()
    predictor = AsyncPredictor(
        "digits-async",
        input_location="s3://io-bucket/async-input/",
        sagemaker_runtime_client=runtime,
        s3_client=s3,
        poll_interval=0.2,
        timeout=5,
    )
    return predictor, stubber


def test_result_waits_for_an_output_written_later(s3: Any) -> None:
    predictor, stubber = _stubbed(s3, "async-output/late-1.out")
    invocation = predictor.submit(np.arange(4, dtype=np.float32), inference_id="late-1")
    stubber.assert_no_pending_responses()
    buffer = io.BytesIO()
    np.save(buffer, np.eye(2, dtype=np.float32))

    def write_later() -> None:
        time.sleep(0.7)
        s3.put_object(
            Bucket="io-bucket",
            Key="async-output/late-1.out",
            Body=buffer.getvalue(),
            ContentType="application/x-npy",
        )

    writer = threading.Thread(target=write_later)
    writer.start()
    started = time.monotonic()
    answer = predictor.result(invocation)
    writer.join()
    assert time.monotonic() - started >= 0.6
    np.testing.assert_array_equal(answer, np.eye(2, dtype=np.float32))
    assert isinstance(predictor.deserializer, NumpyDeserializer)


def test_the_wait_is_bounded_and_names_both_locations(s3: Any) -> None:
    predictor, _ = _stubbed(s3, "async-output/never.out")
    invocation = predictor.submit(np.zeros(1), inference_id="late-1")
    started = time.monotonic()
    with pytest.raises(AsyncInferenceError, match="neither s3://io-bucket/async-output/never"):
        predictor.result(invocation, timeout=0.8)
    assert 0.7 <= time.monotonic() - started < 3


def test_bad_locations_are_refused() -> None:
    with pytest.raises(ValueError, match="s3://bucket/key"):
        AsyncPredictor("e", input_location="io-bucket/async-input")

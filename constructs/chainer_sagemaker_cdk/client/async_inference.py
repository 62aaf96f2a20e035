"""``AsyncPredictor``: invoke an asynchronous endpoint and wait for its answer (boto3 only).

SageMaker's InvokeEndpointAsync takes the request from S3 and writes the response (or the
failure) to the endpoint's ``AsyncInferenceConfig`` output (or failure) path, returning both
locations at once. This client uploads the request, calls InvokeEndpointAsync, then polls the
two objects (``GetObject``) until one appears, for at most ``timeout`` seconds:
https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html

(SNS notifications are the push alternative; polling needs no subscription and works from a
laptop, which is why this client polls.)

Serverless endpoints need no client of their own: they answer the same InvokeEndpoint as
real-time ones, so :class:`~chainer_sagemaker_cdk.client.Predictor` works against them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from chainer_sagemaker_cdk.client.serializers import (
    Deserializer,
    NumpyDeserializer,
    NumpySerializer,
    Serializer,
)

__all__ = ["AsyncInferenceError", "AsyncInvocation", "AsyncPredictor", "split_s3_uri"]


class AsyncInferenceError(Exception):
    """The inference failed (its failure object's text is kept) or did not finish in time."""

    def __init__(self, message: str, *, failure: str | None = None) -> None:
        super().__init__(message)
        self.failure = failure


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``; a clear error for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected s3://bucket/key, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass(frozen=True)
class AsyncInvocation:
    """One accepted request: where its response or its failure will appear."""

    inference_id: str
    input_location: str
    output_location: str
    failure_location: str | None


class AsyncPredictor:
    """Send arrays to an async endpoint through S3 and get arrays back.

    :param endpoint_name: the endpoint (``ChainerEndpoint(async_inference=...)``).
    :param input_location: ``s3://bucket/prefix`` the requests are uploaded under (the
        construct's ``AsyncInference.input_prefix``, which the model's role may read).
    :param poll_interval: longest pause between two looks at the output; the first looks
        come sooner (0.2 s, doubling).
    :param timeout: seconds :meth:`result` waits at most, by default.
    """

    def __init__(
        self,
        endpoint_name: str,
        *,
        input_location: str,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        sagemaker_runtime_client: Any = None,
        s3_client: Any = None,
        poll_interval: float = 5.0,
        timeout: float = 900.0,
    ) -> None:
        self.endpoint_name = endpoint_name
        self._bucket, prefix = split_s3_uri(input_location)
        self._prefix = prefix.strip("/")
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive seconds")
        self.serializer: Serializer = serializer or NumpySerializer()
        self.deserializer: Deserializer = deserializer or NumpyDeserializer()
        self._runtime = sagemaker_runtime_client
        self._s3 = s3_client
        self.poll_interval = poll_interval
        self.timeout = timeout

    def _clients(self) -> tuple[Any, Any]:
        if self._runtime is None or self._s3 is None:
            import boto3

            self._runtime = self._runtime or boto3.client("sagemaker-runtime")
            self._s3 = self._s3 or boto3.client("s3")
        return self._runtime, self._s3

    def submit(self, data: Any, *, inference_id: str | None = None) -> AsyncInvocation:
        """Upload ``data`` and call InvokeEndpointAsync; returns at once."""
        runtime, s3 = self._clients()
        inference_id = inference_id or str(uuid.uuid4())
        key = f"{self._prefix}/{inference_id}" if self._prefix else inference_id
        s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=self.serializer.serialize(data),
            ContentType=self.serializer.content_type,
        )
        input_location = f"s3://{self._bucket}/{key}"
        response = runtime.invoke_endpoint_async(
            EndpointName=self.endpoint_name,
            InputLocation=input_location,
            ContentType=self.serializer.content_type,
            Accept=self.deserializer.accept,
            InferenceId=inference_id,
        )
        return AsyncInvocation(
            inference_id=response.get("InferenceId", inference_id),
            input_location=input_location,
            output_location=response["OutputLocation"],
            failure_location=response.get("FailureLocation"),
        )

    def result(self, invocation: AsyncInvocation, *, timeout: float | None = None) -> Any:
        """Wait for the response (deserialized) or raise :class:`AsyncInferenceError`.

        Bounded: at most ``timeout`` seconds (left out, the predictor's) and one look per
        pause, so a lost request ends with an error naming both locations.
        """
        _, s3 = self._clients()
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = min(0.2, self.poll_interval)
        while True:
            found = self._look(s3, invocation.output_location)
            if found is not None:
                body, content_type = found
                if content_type in ("", "binary/octet-stream", "application/octet-stream"):
                    # An object stored without a type: read it as the type asked for.
                    content_type = self.deserializer.accept
                return self.deserializer.deserialize(body, content_type)
            if invocation.failure_location is not None:
                failed = self._look(s3, invocation.failure_location)
                if failed is not None:
                    text = failed[0].decode("utf-8", "replace")[:4000]
                    raise AsyncInferenceError(
                        f"inference {invocation.inference_id} failed: {text}", failure=text
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsyncInferenceError(
                    f"inference {invocation.inference_id}: neither "
                    f"{invocation.output_location} nor {invocation.failure_location} "
                    f"appeared within {limit} s; raise timeout= or check the endpoint's logs"
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.poll_interval)

    def predict(self, data: Any, *, timeout: float | None = None) -> Any:
        """:meth:`submit` then :meth:`result`."""
        return self.result(self.submit(data), timeout=timeout)

    @staticmethod
    def _look(s3: Any, uri: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            response = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return response["Body"].read(), response.get("ContentType", "")

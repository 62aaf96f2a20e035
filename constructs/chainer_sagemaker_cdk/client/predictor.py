"""``Predictor``: invoke a Chainer endpoint, on SageMaker or at a local URL (boto3 only)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlparse

from chainer_sagemaker_cdk.client.serializers import (
    Deserializer,
    NumpyDeserializer,
    NumpySerializer,
    Serializer,
)

__all__ = ["Predictor", "PredictorError"]


class PredictorError(Exception):
    """The endpoint answered with an error; ``status`` and the server's message are kept."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the endpoint answered {status}: {message}")
        self.status = status
        self.message = message


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:2000]
    if isinstance(payload, dict):
        return str(payload.get("message") or payload.get("error") or payload)
    return str(payload)


class Predictor:
    """Send arrays to an endpoint and get arrays back.

    ``Predictor("my-endpoint")`` calls SageMaker's InvokeEndpoint through boto3;
    ``Predictor.local("http://127.0.0.1:8080")`` posts to a model server's ``/invocations``
    over one kept-alive connection. Serialization defaults to NPY both ways, as the SageMaker
    SDK's Chainer predictor does.
    """

    def __init__(
        self,
        endpoint_name: str | None = None,
        *,
        endpoint_url: str | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        sagemaker_runtime_client: Any = None,
        timeout: float = 60.0,
    ) -> None:
        if (endpoint_name is None) == (endpoint_url is None):
            raise ValueError(
                "give exactly one of endpoint_name (SageMaker) or endpoint_url (local)"
            )
        self.endpoint_name = endpoint_name
        self.endpoint_url = endpoint_url
        self.serializer: Serializer = serializer or NumpySerializer()
        self.deserializer: Deserializer = deserializer or NumpyDeserializer()
        self._client = sagemaker_runtime_client
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def local(cls, endpoint_url: str, **kwargs: Any) -> Predictor:
        return cls(endpoint_url=endpoint_url, **kwargs)

    def predict(self, data: Any) -> Any:
        body = self.serializer.serialize(data)
        if self.endpoint_url is not None:
            status, reply, content_type = self._post_local(body)
        else:
            status, reply, content_type = self._invoke_sagemaker(body)
        if status >= 400:
            raise PredictorError(status, _error_message(reply))
        return self.deserializer.deserialize(reply, content_type)

    def _invoke_sagemaker(self, body: bytes) -> tuple[int, bytes, str]:
        if self._client is None:
            import boto3

            self._client = boto3.client("sagemaker-runtime")
        from botocore.exceptions import ClientError

        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                Body=body,
                ContentType=self.serializer.content_type,
                Accept=self.deserializer.accept,
            )
        except ClientError as exc:
            # ModelError carries the container's own status; others the API's.
            reply: dict[str, Any] = dict(exc.response)
            status = reply.get("OriginalStatusCode") or reply.get("ResponseMetadata", {}).get(
                "HTTPStatusCode", 500
            )
            message = reply.get("OriginalMessage") or reply.get("Error", {}).get("Message", exc)
            return int(status), str(message).encode(), "text/plain"
        return 200, response["Body"].read(), response.get("ContentType", "")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            assert self.endpoint_url is not None
            url = urlparse(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    f"endpoint_url must be http(s)://host:port, got {self.endpoint_url!r}"
                )
            cls = (
                http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            )
            self._conn = cls(url.hostname, url.port, timeout=self._timeout)
        return self._conn

    def _post_local(self, body: bytes) -> tuple[int, bytes, str]:
        assert self.endpoint_url is not None
        path = urlparse(self.endpoint_url).path.rstrip("/") + "/invocations"
        headers = {"Content-Type": self.serializer.content_type, "Accept": self.deserializer.accept}
        for attempt in (1, 2):  # one retry when a kept-alive connection was closed by the server
            conn = self._connection()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read(), response.getheader("Content-Type", "")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

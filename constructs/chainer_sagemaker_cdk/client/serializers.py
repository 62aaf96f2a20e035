"""Request serializers and response deserializers, matching the SageMaker SDK's Chainer predictor.

NPY is the default both ways (``application/x-npy``): ``numpy.save`` bodies, read back without
pickle, dtype and shape kept. JSON and CSV are offered for clients that need text. The
deserializers read a reply by its *actual* content type, so a server that answers JSON to an
NPY request still decodes.
"""

from __future__ import annotations

import io
import json
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CSV",
    "JSON",
    "NPY",
    "CSVSerializer",
    "Deserializer",
    "JSONSerializer",
    "NumpyDeserializer",
    "NumpySerializer",
    "Serializer",
]

NPY = "application/x-npy"
JSON = "application/json"
CSV = "text/csv"


class Serializer(Protocol):
    content_type: str

    def serialize(self, data: Any) -> bytes: ...


class Deserializer(Protocol):
    accept: str

    def deserialize(self, body: bytes, content_type: str) -> Any: ...


class NumpySerializer:
    """``numpy.save`` of the array (object arrays refused: the server never unpickles)."""

    content_type = NPY

    def serialize(self, data: Any) -> bytes:
        array = np.asarray(data)
        if array.dtype == object:
            raise TypeError("cannot send an object array as NPY; convert it to a numeric dtype")
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()


class JSONSerializer:
    """A JSON list (nested for 2-D and more)."""

    content_type = JSON

    def serialize(self, data: Any) -> bytes:
        if isinstance(data, np.ndarray):
            data = data.tolist()
        return json.dumps(data, separators=(",", ":")).encode()


class CSVSerializer:
    """One line per row; a 1-D array is one line."""

    content_type = CSV

    def serialize(self, data: Any) -> bytes:
        array = np.asarray(data)
        rows = array.reshape(1, -1) if array.ndim <= 1 else array.reshape(len(array), -1)
        return "\n".join(",".join(repr(v.item()) for v in row) for row in rows).encode()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class NumpyDeserializer:
    """Any of NPY, JSON or CSV replies into an ``ndarray`` (NPY keeps dtype and shape)."""

    def __init__(self, accept: str = NPY, dtype: Any = None) -> None:
        self.accept = accept
        self.dtype = dtype

    def deserialize(self, body: bytes, content_type: str) -> np.ndarray:
        media = _media_type(content_type or self.accept)
        if media == NPY:
            return np.asarray(np.load(io.BytesIO(body), allow_pickle=False))
        if media == JSON:
            return np.array(json.loads(body), dtype=self.dtype)
        if media == CSV:
            rows = [line for line in body.decode().splitlines() if line.strip()]
            array = np.array([[float(v) for v in r.split(",")] for r in rows], dtype=self.dtype)
            return array[0] if len(array) == 1 else array
        raise ValueError(f"cannot decode a reply of content type {content_type!r}")

"""Array encoders and decoders with the old library's names.

NPY and CSV encoding are the model server's own codecs (NPY is never unpickled); JSON and CSV
decoding keep the old library's dtype rule (``dtype=None``: what the text holds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from chainer_sagemaker_runtime.serving import codecs
from sagemaker_containers.beta.framework import content_types

__all__ = [
    "UnsupportedFormatError",
    "array_to_csv",
    "array_to_json",
    "array_to_npy",
    "csv_to_numpy",
    "decode",
    "encode",
    "json_to_numpy",
    "npy_to_numpy",
]


class UnsupportedFormatError(Exception):
    def __init__(self, content_type: str) -> None:
        super().__init__(f"Content type {content_type} is not supported by this framework.")
        self.content_type = content_type


def array_to_npy(array_like: Any) -> bytes:
    return codecs.encode_npy(array_like)


def npy_to_numpy(npy_array: bytes) -> np.ndarray:
    return codecs.decode_npy(npy_array)


def array_to_json(array_like: Any) -> str:
    def default(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return json.dumps(array_like, default=default)


def json_to_numpy(string_like: str | bytes, dtype: Any = None) -> np.ndarray:
    return np.array(json.loads(string_like), dtype=dtype)


def csv_to_numpy(string_like: str | bytes, dtype: Any = None) -> np.ndarray:
    text = string_like.decode() if isinstance(string_like, bytes) else string_like
    rows = [[float(v) for v in line.split(",")] for line in text.splitlines() if line.strip()]
    array = np.array(rows, dtype=dtype)
    return array[0] if len(array) == 1 else array


def array_to_csv(array_like: Any) -> str:
    return codecs.encode_csv(array_like).decode()


_DECODERS: dict[str, Callable[[Any], np.ndarray]] = {
    content_types.NPY: npy_to_numpy,
    content_types.CSV: csv_to_numpy,
    content_types.JSON: json_to_numpy,
}
_ENCODERS: dict[str, Callable[[Any], bytes | str]] = {
    content_types.NPY: array_to_npy,
    content_types.CSV: array_to_csv,
    content_types.JSON: array_to_json,
}


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def decode(obj: bytes, content_type: str) -> np.ndarray:
    decoder = _DECODERS.get(_media(content_type))
    if decoder is None:
        raise UnsupportedFormatError(content_type)
    return decoder(obj)


def encode(array_like: Any, content_type: str) -> bytes | str:
    encoder = _ENCODERS.get(_media(content_type))
    if encoder is None:
        raise UnsupportedFormatError(content_type)
    return encoder(array_like)

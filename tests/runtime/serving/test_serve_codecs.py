"""Codecs in process: NPY/JSON/CSV round trips and the bad-input corpus at the decoder level."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from chainer_sagemaker_runtime.serving import codecs
from chainer_sagemaker_runtime.serving.errors import (
    BadRequest,
    NotAcceptable,
    UnsupportedMediaType,
)

pytestmark = pytest.mark.compat


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=np.int64).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.array(3.5, dtype=np.float16),
        np.zeros((0, 784), dtype=np.float32),
        np.arange(4, dtype=">i4"),
        np.array([True, False]),
    ],
)
def test_npy_decode_matches_numpy_load_and_keeps_dtype(array: np.ndarray) -> None:
    decoded = codecs.decode_npy(_npy(array))
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    decoded[...] = 0 if decoded.size else decoded  # writable, not a view of the request


def test_npy_encode_is_what_numpy_save_writes() -> None:
    for array in (np.ones((2, 10), np.float32), np.arange(3, dtype=np.int8), np.float64(2)):
        assert codecs.encode_npy(array) == _npy(np.asarray(array))


def test_npy_version_2_header_is_read() -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ones((2, 2), np.float32), version=(2, 0))
    np.testing.assert_array_equal(codecs.decode_npy(buf.getvalue()), np.ones((2, 2)))


def _with_header(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


BAD_NPY = {
    "empty": b"",
    "wrong magic": b"\x93NUMPX\x01\x00" + b"\x00" * 100,
    "pickle": b"\x80\x04\x95" + b"\x00" * 50,
    "object dtype": _with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\x00" * 16
    ),
    "truncated data": _npy(np.ones((4, 784), np.float32))[:-10],
    "trailing data": _npy(np.ones(3, np.float32)) + b"junk",
    "truncated header": _npy(np.ones(3, np.float32))[:20],
    "huge header": b"\x93NUMPY\x02\x00" + struct.pack("<I", 10**9) + b"{",
    "code in header": _with_header("__import__('os').system('true')"),
    "structured dtype": _with_header(
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", b"\x00" * 4
    ),
    "negative shape": _with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"),
    "bad version": b"\x93NUMPY\x09\x00" + b"\x00" * 20,
    "missing keys": _with_header("{'descr': '<f4'}"),
}


@pytest.mark.parametrize("name", sorted(BAD_NPY))
def test_bad_npy_is_a_bad_request(name: str) -> None:
    with pytest.raises(BadRequest):
        codecs.decode_npy(BAD_NPY[name])


def test_json_and_csv_decode_to_float32() -> None:
    assert codecs.decode_json(b"[[1, 2], [3, 4]]").dtype == np.float32
    np.testing.assert_array_equal(codecs.decode_csv("1,2\n3,4\n"), [[1, 2], [3, 4]])
    assert codecs.decode_csv(b"1,2,3").shape == (3,)  # one line gives 1-D
    assert codecs.decode_csv("1.5, 2e3 ,nan\r\n4,5,6\r\n").shape == (2, 3)


@pytest.mark.parametrize(
    ("decoder", "body"),
    [
        (codecs.decode_json, b"[[1, 2], [3]]"),
        (codecs.decode_json, b'{"instances": [1]}'),
        (codecs.decode_json, b"[1, 2"),
        (codecs.decode_json, b'["a", "b"]'),
        (codecs.decode_json, b""),
        (codecs.decode_json, b"\xff\xfe"),
        (codecs.decode_csv, b"a,b\n1,2"),
        (codecs.decode_csv, b"1,2\n3"),
        (codecs.decode_csv, b"1,,2"),
        (codecs.decode_csv, b""),
        (codecs.decode_csv, b"[1],[2]"),
        (codecs.decode_csv, b"\xff"),
    ],
)
def test_bad_text_bodies_are_bad_requests(decoder: object, body: bytes) -> None:
    with pytest.raises(BadRequest):
        decoder(body)  # type: ignore[operator]


def test_encoders_round_trip() -> None:
    y = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    np.testing.assert_array_equal(codecs.decode_json(codecs.encode_json(y)), y)
    np.testing.assert_array_equal(codecs.decode_csv(codecs.encode_csv(y)), y)
    np.testing.assert_array_equal(codecs.decode_npy(codecs.encode_npy(y)), y)
    assert codecs.encode_csv(np.array([1.0, 2.0])) == b"1.0,2.0\n"
    assert json.loads(codecs.encode_json({"a": np.float32(1.5), "b": [np.int64(2)]})) == {
        "a": 1.5,
        "b": [2],
    }


def test_unknown_types_are_415_and_406() -> None:
    with pytest.raises(UnsupportedMediaType):
        codecs.decode(b"x", "application/xml")
    with pytest.raises(NotAcceptable):
        codecs.encode(np.ones(2), "image/png")

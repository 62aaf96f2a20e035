"""Request decoders and response encoders for NPY, JSON and CSV (docs/contract.md §3.3 defaults).

NPY is parsed by hand (magic, header, ``np.frombuffer``) instead of ``numpy.load``: that is
faster for small bodies and, above all, can never unpickle. Object dtypes, structured dtypes,
bad magic, oversized headers and truncated or over-long data are all refused as
:class:`BadRequest`. JSON uses ``orjson`` when it is installed (several times faster on numeric
lists) and the standard library otherwise.
"""

from __future__ import annotations

import ast
import json
import math
import struct
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from chainer_sagemaker_runtime.serving.errors import BadRequest, NotAcceptable, UnsupportedMediaType

_orjson: Any
try:  # an optional accelerator, not a requirement
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = [
    "CSV",
    "DECODERS",
    "ENCODERS",
    "JSON",
    "JSONLINES",
    "NPY",
    "TEXT_TYPES",
    "decode",
    "decode_npy",
    "encode",
    "encode_npy",
]

NPY = "application/x-npy"
JSON = "application/json"
JSONLINES = "application/jsonlines"  # one JSON list per line: batch transform's Line split
CSV = "text/csv"
#: Types whose bodies user ``input_fn`` hooks receive as ``str`` (as the old server did).
TEXT_TYPES = frozenset({JSON, JSONLINES, CSV, "text/plain"})

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 16 * 1024  # numpy itself refuses headers over 10 000 bytes by default
_REQUIRED_KEYS = {"descr", "fortran_order", "shape"}
_MAX_DIMS = 64  # numpy's own limit (NPY_MAXDIMS)

Body = bytes | str
Decoder = Callable[[Body], Any]
Encoder = Callable[[Any], bytes]


def _as_bytes(body: Body) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _as_text(body: Body) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc}") from None


def _npy_header(data: bytes) -> tuple[bytes, int, int]:
    """(raw header, format major version, offset of the data) after checking the framing."""
    if len(data) < 10 or not data.startswith(_NPY_MAGIC):
        raise BadRequest("the body is not an NPY array: it does not start with b'\\x93NUMPY'")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack_from("<H", data, 8), 10
    elif major in (2, 3):
        if len(data) < 12:
            raise BadRequest("the NPY body is truncated inside its header")
        (hlen,), start = struct.unpack_from("<I", data, 8), 12
    else:
        raise BadRequest(f"unsupported NPY format version {major}.{data[7]}")
    if hlen > _MAX_HEADER:
        raise BadRequest(f"the NPY header is {hlen} bytes; at most {_MAX_HEADER} are accepted")
    if len(data) < start + hlen:
        raise BadRequest("the NPY body is truncated inside its header")
    return data[start : start + hlen], major, start + hlen


_Layout = tuple[np.dtype[Any], bool, tuple[int, ...]]
# Clients send the same few headers over and over; literal_eval is most of the decode cost.
_LAYOUTS: dict[bytes, _Layout] = {}
_MAX_LAYOUTS = 256


def _layout(raw: bytes, major: int) -> _Layout:
    cached = _LAYOUTS.get(raw)
    if cached is not None:
        return cached
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise BadRequest("the NPY header is not a Python literal dictionary") from None
    if not isinstance(header, dict) or set(header) != _REQUIRED_KEYS:
        raise BadRequest("the NPY header must have exactly the keys descr, fortran_order, shape")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str):
        raise BadRequest("structured NPY dtypes are not accepted; send a plain numeric array")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise BadRequest(f"unknown NPY dtype {descr!r}") from None
    if dtype.hasobject:
        raise BadRequest(f"NPY dtype {descr!r} is not accepted (object arrays would need pickle)")
    if dtype.subdtype is not None or dtype.fields is not None or dtype.itemsize == 0:
        raise BadRequest(
            f"NPY dtype {descr!r} is not accepted: send a plain array (its shape in 'shape')"
        )
    if not isinstance(fortran, bool):
        raise BadRequest("the NPY header's fortran_order must be True or False")
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"the NPY header's shape {shape!r} is not a tuple of sizes")
    if len(shape) > _MAX_DIMS:
        raise BadRequest(f"the NPY array has {len(shape)} dimensions; at most {_MAX_DIMS}")
    # numpy keeps sizes in a signed machine word, each dimension and their product alike,
    # even when another dimension is 0
    if math.prod(d for d in shape if d) * dtype.itemsize > sys.maxsize:
        raise BadRequest(f"the NPY header's shape {shape!r} is larger than any array can be")
    layout: _Layout = (dtype, fortran, shape)
    if len(_LAYOUTS) >= _MAX_LAYOUTS:
        _LAYOUTS.clear()
    _LAYOUTS[raw] = layout
    return layout


def decode_npy(body: Body) -> npt.NDArray[Any]:
    """An NPY body as an array, dtype and shape kept; never unpickles."""
    data = _as_bytes(body)
    raw, major, offset = _npy_header(data)
    dtype, fortran, shape = _layout(raw, major)
    count = math.prod(shape)
    expected = count * dtype.itemsize
    got = len(data) - offset
    if got != expected:
        raise BadRequest(
            f"the NPY body holds {got} data bytes; shape {shape} of {dtype} needs {expected}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    try:
        return flat.reshape(shape, order="F" if fortran else "C")
    except (ValueError, MemoryError) as exc:  # anything numpy still refuses is the body's fault
        raise BadRequest(f"the NPY array of shape {shape!r} cannot be built: {exc}") from None


def encode_npy(value: Any) -> bytes:
    """``numpy.save`` bytes of ``value`` (format 1.0, dtype kept), without a file object."""
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise TypeError("cannot encode an object array as NPY")
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {arr.shape!r}, }}".encode()
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return _NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(header)) + header + arr.tobytes()


def _json_loads(body: Body) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _to_float32(obj: Any, what: str) -> npt.NDArray[np.float32]:
    try:
        arr = np.asarray(obj, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"{what} is not a rectangular array of numbers: {exc}") from None
    return arr


def decode_json(body: Body) -> npt.NDArray[np.float32]:
    """One JSON list (nested lists for more dimensions) as a float32 array; several lines of
    one list each (JSON Lines, as batch transform's MultiRecord sends them) as rows."""
    try:
        obj = _json_loads(body)
    except BadRequest:
        if not is_json_lines(body):
            raise
        return decode_jsonlines(body)
    if not isinstance(obj, list):
        raise BadRequest(f"the JSON body must be a list of numbers, not {type(obj).__name__}")
    return _to_float32(obj, "the JSON body")


def is_json_lines(body: Body) -> bool:
    """Whether a JSON body is several records, one list per line (``[1, 2]\n[3, 4]``), rather
    than one document (possibly pretty-printed over several lines)."""
    text = _as_bytes(body).strip()
    first, sep, rest = text.partition(b"\n")
    return bool(sep) and first.rstrip().endswith(b"]") and rest.lstrip().startswith(b"[")


def decode_jsonlines(body: Body) -> npt.NDArray[np.float32]:
    """JSON Lines: one JSON list per line, each a record (a row of the result)."""
    lines = [line for line in _as_bytes(body).splitlines() if line.strip()]
    if not lines:
        raise BadRequest("the JSON Lines body has no records")
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(_json_loads(line))
        except BadRequest as exc:
            raise BadRequest(f"record {number} of the JSON Lines body: {exc.message}") from None
    return _to_float32(rows, "the JSON Lines records")


def encode_jsonlines(value: Any) -> bytes:
    """One JSON line per row (per record of a JSON Lines or multi-line request)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1:
        return encode_json(arr) + b"\n"
    return b"".join(encode_json(row) + b"\n" for row in arr)


def decode_csv(body: Body) -> npt.NDArray[np.float32]:
    """One row per line as a float32 2-D array; a single line gives a 1-D array."""
    text = _as_text(body).strip()
    if not text:
        raise BadRequest("the CSV body has no rows")
    rows: Any = None
    if "[" not in text and "]" not in text and "\r" not in text:
        # Fast path: numeric CSV is a JSON array once rows are bracketed; the JSON parser reads
        # floats several times faster than float() per field. Anything it refuses (empty fields,
        # "nan", "1.") takes the general path below, which also words the error.
        try:
            rows = _json_loads("[[" + text.replace("\n", "],[") + "]]")
        except BadRequest:
            rows = None
    if rows is None:
        lines = [line for line in text.splitlines() if line.strip()]
        rows = [line.split(",") for line in lines]
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            raise BadRequest("the CSV rows do not all have the same number of columns")
    arr = _to_float32(rows, "the CSV body")
    return arr[0] if len(rows) == 1 else arr


def _plain(value: Any) -> Any:
    """Something JSON can hold: arrays and NumPy scalars become lists and Python numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def encode_json(value: Any) -> bytes:
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(value, option=_orjson.OPT_SERIALIZE_NUMPY, default=_plain)
            return out
        except TypeError:
            pass  # e.g. a non-contiguous array: fall through to the general path
    return json.dumps(_plain(value), default=_plain).encode()


def encode_csv(value: Any) -> bytes:
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1:
        return (",".join(map(repr, arr.tolist())) + "\n").encode()
    if arr.ndim != 2:
        raise TypeError(f"cannot encode a {arr.ndim}-D array as CSV rows")
    return ("\n".join(",".join(map(repr, row)) for row in arr.tolist()) + "\n").encode()


DECODERS: dict[str, Decoder] = {
    NPY: decode_npy,
    JSON: decode_json,
    CSV: decode_csv,
    JSONLINES: decode_jsonlines,
}
ENCODERS: dict[str, Encoder] = {
    NPY: encode_npy,
    JSON: encode_json,
    CSV: encode_csv,
    JSONLINES: encode_jsonlines,
}


def decode(body: Body, content_type: str) -> Any:
    """The default ``input_fn``: decode by media type, 415 for a type with no decoder."""
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not supported; send one of {sorted(DECODERS)}"
        )
    return decoder(body)


def encode(value: Any, accept: str) -> bytes:
    """The default ``output_fn`` body: encode by media type, 406 for a type with no encoder."""
    encoder = ENCODERS.get(accept)
    if encoder is None:
        raise NotAcceptable(
            f"accept type {accept!r} is not supported; ask for one of {sorted(ENCODERS)}"
        )
    return encoder(value)

"""The handler core: the user's hooks and their defaults (docs/contract.md §3.3). Knows no HTTP.

:meth:`Handler.invoke` takes a body, a ``Content-Type`` and an ``Accept`` value and returns the
reply body and its type, or raises :class:`ServingError`. The steps are also exposed one by one
(:meth:`Handler.decode`, :meth:`Handler.predict`, :meth:`Handler.encode`) so that the worker can
stack the inputs of several requests into one ``predict`` call when the user kept the default
``predict_fn`` (:attr:`Handler.batchable`).
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from chainer_sagemaker_runtime.errors import CodeError
from chainer_sagemaker_runtime.serving import codecs
from chainer_sagemaker_runtime.serving.errors import (
    BadRequest,
    InternalError,
    NotAcceptable,
    ServingError,
)

__all__ = [
    "Handler",
    "Hooks",
    "Reply",
    "column_major_linear_weights",
    "default_predict_fn",
    "media_type",
]

log = logging.getLogger(__name__)

_HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"  # noqa: S105 - an RFC 9110 token, no secret
_MEDIA_RANGE = re.compile(f"{_TOKEN}/{_TOKEN}")  # what an output_fn may be handed as accept


@dataclass(frozen=True)
class Hooks:
    """The hooks a user module defines (``None`` where it kept the default)."""

    model_fn: Callable[[str], Any]
    input_fn: Callable[[Any, str], Any] | None = None
    predict_fn: Callable[[Any, Any], Any] | None = None
    output_fn: Callable[[Any, str], Any] | None = None
    transform_fn: Callable[[Any, Any, str, str], Any] | None = None

    @classmethod
    def from_module(cls, module: ModuleType) -> Hooks:
        found = {name: getattr(module, name, None) for name in _HOOKS}
        for name, fn in found.items():
            if fn is not None and not callable(fn):
                raise CodeError(f"{module.__name__}.{name} is not a function")
        model_fn = found.pop("model_fn")
        if model_fn is None:
            raise CodeError(
                f"the inference module {getattr(module, '__file__', module.__name__)} defines no "
                "model_fn(model_dir); add one that loads and returns the model"
            )
        if found["transform_fn"] is not None:
            shadowed = [n for n in ("input_fn", "predict_fn", "output_fn") if found[n] is not None]
            if shadowed:
                log.warning(
                    "transform_fn is defined, so %s will not be called", ", ".join(shadowed)
                )
        return cls(model_fn=model_fn, **found)


@dataclass(frozen=True)
class Reply:
    body: bytes
    content_type: str


def media_type(header: str | None, default: str) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``; empty -> ``default``."""
    if not header:
        return default
    value = header.split(";", 1)[0].strip().lower()
    return value or default


def default_predict_fn(data: Any, model: Any, *, type_check: bool = True) -> Any:
    """Run the model in inference mode and return a host (NumPy) array.

    ``type_check=False`` skips Chainer's per-function argument checks (about 35 us of the
    480 us a one-row forward pass of the benchmark MLP takes); NumPy still refuses inputs of
    the wrong shape, only the error message is NumPy's instead of Chainer's.
    """
    chainer: Any = importlib.import_module("chainer")  # untyped; imported on first use
    device = getattr(model, "device", None)
    if device is not None and getattr(device, "xp", None) not in (None, numpy):
        data = device.send(data)
    with (
        chainer.using_config("train", False),
        chainer.using_config("type_check", type_check),
        chainer.no_backprop_mode(),
    ):
        result = model(data)
    if isinstance(result, chainer.Variable):
        result = result.array
    if type(result).__module__.startswith("cupy"):
        result = result.get()
    return result


def column_major_linear_weights(model: Any) -> int:
    """Store the weights of the model's ``chainer.links.Linear`` layers column-major.

    Chainer computes ``x.dot(W.T)``; with a row-major ``W`` that makes OpenBLAS repack the whole
    weight matrix on every call with more than one row, which costs more than the product itself
    at the batch sizes a model server sees (2-32 rows: 30-40 % of the forward pass of the
    784-1000-1000-10 MLP on this project's benchmark machine). A column-major ``W`` holds the
    same values, so ``W.T`` is a plain row-major matrix and the product runs without the copy.
    Results can differ from the row-major ones only by float rounding order. Returns how many
    matrices were converted (CPU arrays only; GPU arrays are left alone).
    """
    links = getattr(model, "links", None)
    if not callable(links):
        return 0
    linear = importlib.import_module("chainer.links").Linear
    converted = 0
    for link in links():
        weight = getattr(link, "W", None) if isinstance(link, linear) else None
        array = getattr(weight, "array", None)
        if isinstance(array, numpy.ndarray) and array.ndim == 2 and not array.flags.f_contiguous:
            weight.array = numpy.asfortranarray(array)  # type: ignore[union-attr]
            converted += 1
    return converted


def _payload(body: bytes, content_type: str) -> bytes | str:
    """Text types reach user hooks as ``str`` and the rest as ``bytes``, as in the old server."""
    if content_type not in codecs.TEXT_TYPES:
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the {content_type} body is not valid UTF-8: {exc}") from None


def _user_failure(hook: str, exc: BaseException) -> InternalError:
    log.error("%s raised:\n%s", hook, "".join(traceback.format_exception(exc)).rstrip())
    return InternalError(f"{hook} raised {type(exc).__name__}: {exc}")


def _as_reply(result: Any, accept: str, hook: str) -> Reply:
    content_type = accept
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    elif callable(getattr(result, "get_data", None)):
        # a response object, as old scripts built with sagemaker_containers' worker.Response
        content_type = getattr(result, "mimetype", None) or accept
        result = result.get_data()
    if isinstance(result, str):
        result = result.encode()
    if not isinstance(result, bytes | bytearray | memoryview):
        raise InternalError(
            f"{hook} returned {type(result).__name__}; it must return bytes or str, "
            "or a (body, content_type) pair"
        )
    return Reply(bytes(result), str(content_type))


class Handler:
    """One loaded model plus the hooks that serve it."""

    def __init__(
        self, hooks: Hooks, model: Any, default_accept: str, *, optimize: bool = False
    ) -> None:
        self.hooks = hooks
        self.model = model
        self.default_accept = default_accept
        self._custom_output = hooks.output_fn is not None or hooks.transform_fn is not None
        self._row_shape: tuple[int, ...] | None = None  # shape[1:] of an input that worked
        self._features: int | bool | None = False  # False: not looked for yet
        #: True when requests may share one predict call (default predict_fn, no transform_fn).
        self.batchable = hooks.predict_fn is None and hooks.transform_fn is None
        #: Chainer's type checks in the default predict_fn (off when optimizing).
        self.type_check = not (optimize and self.batchable)
        if optimize and self.batchable:  # only where the server owns the call into the model
            converted = column_major_linear_weights(model)
            if converted:
                log.debug("stored %d Linear weight matrices column-major", converted)

    def negotiate(self, accept_header: str | None) -> str:
        """The reply type: the first supported entry of ``Accept``, ``*/*`` meaning the default."""
        if not accept_header or not accept_header.strip():
            return self.default_accept
        listed = [media_type(part, "") for part in accept_header.split(",")]
        listed = [t for t in listed if t == "*" or _MEDIA_RANGE.fullmatch(t)]
        for wanted in listed:
            if wanted in ("*/*", "*"):
                return self.default_accept
            if wanted in codecs.ENCODERS:
                return wanted
            if wanted.endswith("/*"):
                family = wanted[:-1]
                if self.default_accept.startswith(family):
                    return self.default_accept
                for known in codecs.ENCODERS:
                    if known.startswith(family):
                        return known
        if self._custom_output and listed:
            return listed[0]  # the user's output_fn decides what it can produce
        raise NotAcceptable(
            f"none of the accept types {accept_header!r} is supported; "
            f"ask for one of {sorted(codecs.ENCODERS)} (or */*)"
        )

    def decode(self, body: bytes, content_type: str) -> Any:
        """``input_fn`` (or the default decoder) -> the model's input."""
        if self.hooks.input_fn is None:
            try:
                return codecs.decode(body, content_type)
            except ServingError:
                raise
            except Exception as exc:  # whatever a decoder still trips over is the body's fault
                raise BadRequest(
                    f"the {content_type} body cannot be decoded: {type(exc).__name__}: {exc}"
                ) from None
        try:
            return self.hooks.input_fn(_payload(body, content_type), content_type)
        except ServingError:
            raise
        except Exception as exc:
            raise _user_failure("input_fn", exc) from exc

    def predict(self, data: Any) -> Any:
        fn = self.hooks.predict_fn
        try:
            if fn is not None:
                return fn(data, self.model)
            result = default_predict_fn(data, self.model, type_check=self.type_check)
        except ServingError:
            raise
        except Exception as exc:
            if fn is None:
                if isinstance(data, numpy.ndarray) and data.ndim == 1 and self._takes_rows(data):
                    return self.predict(data[None])[0]  # one record (a CSV line) as one row
                mismatch = self._shape_mismatch(data)
                if mismatch is not None:
                    raise BadRequest(mismatch) from None
            raise _user_failure("predict_fn", exc) from exc
        if self._row_shape is None and isinstance(data, numpy.ndarray) and data.ndim >= 2:
            self._row_shape = data.shape[1:]  # what the model is known to take
        return result

    def _takes_rows(self, row: numpy.ndarray[Any, Any]) -> bool:
        """Whether ``row`` is one row of what the model is known to take."""
        if self._row_shape is not None:
            return tuple(row.shape) == self._row_shape
        return bool(self._input_features() == row.size)

    def records(self, body: bytes, content_type: str) -> bool:
        """Whether the request is several JSON records, one per line (batch transform's
        MultiRecord with SplitType Line): the default output_fn then answers a line each."""
        if content_type == codecs.JSONLINES:
            return True
        return content_type == codecs.JSON and b"\n" in body and codecs.is_json_lines(body)

    def _shape_mismatch(self, data: Any) -> str | None:
        """Why the default predict failed, when it is the input's shape and that can be known:
        from an input the model took before, or from the first layer of a Linear-only model."""
        if not isinstance(data, numpy.ndarray):
            return None
        rows = data.shape[1:] if data.ndim >= 1 else ()
        if self._row_shape is not None:
            if rows == self._row_shape:
                return None
            expected = ", ".join(["N", *map(str, self._row_shape)])
        else:
            features = self._input_features()
            if features is None or math.prod(rows) == features:
                return None
            expected = f"N, {features}"
        return (
            f"the input has shape {data.shape}; the model takes ({expected}) "
            "(N rows, one per example); reshape the input"
        )

    def _input_features(self) -> int | None:
        """The input width of a model made of ``Linear`` layers only (an MLP): the one input
        size that is no layer's output size; None when that cannot be told."""
        if self._features is not False:
            return self._features
        self._features = None
        links = getattr(self.model, "links", None)
        if not callable(links):
            return None
        try:
            linear = importlib.import_module("chainer.links").Linear
            sizes: list[tuple[int, int]] = []
            for link in links():
                params = list(link.params(include_uninit=False))
                if isinstance(link, linear):
                    array = getattr(link.W, "array", None)
                    if array is None:
                        return None
                    sizes.append((int(array.shape[1]), int(array.shape[0])))
                elif params and not list(link.children()):
                    return None  # another kind of layer: the shapes say nothing reliable
        except Exception:
            return None
        inputs = {i for i, _ in sizes} - {o for _, o in sizes}
        if len(inputs) == 1:
            self._features = inputs.pop()
        return self._features

    def encode(self, prediction: Any, accept: str, *, records: bool = False) -> Reply:
        """``output_fn`` (or the default encoder); ``records``: answer one JSON line per row."""
        if self.hooks.output_fn is None:
            if records and accept in (codecs.JSON, codecs.JSONLINES):
                accept = codecs.JSONLINES
            try:
                return Reply(codecs.encode(prediction, accept), accept)
            except ServingError:
                raise
            except Exception as exc:
                raise _user_failure("the default output_fn", exc) from exc
        try:
            result = self.hooks.output_fn(prediction, accept)
        except ServingError:
            raise
        except Exception as exc:
            raise _user_failure("output_fn", exc) from exc
        return _as_reply(result, accept, "output_fn")

    def invoke(
        self, body: bytes, content_type_header: str | None, accept_header: str | None
    ) -> Reply:
        """Serve one request end to end."""
        content_type = media_type(content_type_header, codecs.JSON)
        accept = self.negotiate(accept_header)
        if self.hooks.transform_fn is not None:
            try:
                result = self.hooks.transform_fn(
                    self.model, _payload(body, content_type), content_type, accept
                )
            except ServingError:
                raise
            except Exception as exc:
                raise _user_failure("transform_fn", exc) from exc
            return _as_reply(result, accept, "transform_fn")
        data = self.decode(body, content_type)
        records = self.records(body, content_type)
        return self.encode(self.predict(data), accept, records=records)

"""The one error type of the serving path: what went wrong, for whom, with which HTTP status.

The handler core raises these without knowing about HTTP; :func:`error_body` is the single place
that turns one into the JSON a client sees (docs/contract.md §3.2), so every status code has the
same shape: ``{"error": "<short code>", "message": "<what to fix>"}``.
"""

from __future__ import annotations

import json

__all__ = [
    "BadRequest",
    "InternalError",
    "NotAcceptable",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServingError",
    "UnsupportedMediaType",
    "error_body",
]


class ServingError(Exception):
    """A request failed; ``status`` is the HTTP status, ``error`` a stable machine-readable code."""

    status = 500
    error = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """The body could not be decoded as the declared content type (client's fault)."""

    status = 400
    error = "bad_request"


class NotAcceptable(ServingError):
    """No type in the ``Accept`` header can be produced."""

    status = 406
    error = "not_acceptable"


class PayloadTooLarge(ServingError):
    """The body is larger than ``SAGEMAKER_MAX_PAYLOAD_IN_MB``."""

    status = 413
    error = "payload_too_large"


class UnsupportedMediaType(ServingError):
    """The request's ``Content-Type`` cannot be decoded."""

    status = 415
    error = "unsupported_content_type"


class InternalError(ServingError):
    """The user's code (or the model) raised; the worker carries on."""

    status = 500
    error = "model_error"


class RequestTimeout(ServingError):
    """The request ran longer than ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds."""

    status = 504
    error = "timeout"


def error_body(exc: ServingError) -> bytes:
    """The JSON body for ``exc`` (the only place the error shape is defined)."""
    return json.dumps({"error": exc.error, "message": exc.message}).encode()

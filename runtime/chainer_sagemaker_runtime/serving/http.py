"""HTTP/1.1 framing for one worker: requests in, responses out, nothing about models.

A hand-written :class:`asyncio.Protocol` rather than a framework: the server only ever sees three
routes and small bodies, and the per-request cost of a general WSGI/ASGI stack is several times
that of the codecs. Keep-alive, pipelining and chunked request bodies are supported.
Bodies over the limit are answered 413 straight after the headers and then read and dropped, so
the client sees the answer rather than a reset, and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from chainer_sagemaker_runtime.serving.errors import (
    PayloadTooLarge,
    ServingError,
    error_body,
)

__all__ = ["Connection", "Request", "http_date"]

_MAX_HEAD = 64 * 1024
_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()
}

_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The ``Date`` header value, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


@dataclass(slots=True)
class Request:
    """One parsed request; ``error`` is set when framing already decided the answer (413)."""

    conn: Connection
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    error: ServingError | None = None
    done: bool = field(default=False)


class Connection(asyncio.Protocol):
    """One client connection; hands complete requests to ``on_request``."""

    def __init__(
        self,
        on_request: Callable[[Request], None],
        max_body: int,
        registry: set[Connection],
    ) -> None:
        self._on_request = on_request
        self._max_body = max_body
        self._registry = registry
        self._buf = bytearray()
        self._pending: Request | None = None  # headers read, body still arriving
        self._need = 0  # body bytes still expected for _pending
        self._chunks: list[bytes] | None = None  # the body so far of a chunked _pending
        self._chunked_size = 0
        self._discard = 0  # bytes of an oversized body still to drop
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0  # requests handed over and not yet answered
        self.closing = False  # answer with Connection: close from now on (draining)
        self.last_active = time.monotonic()

    # asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._discard:
            dropped = min(self._discard, len(data))
            self._discard -= dropped
            data = data[dropped:]
        self._buf += data
        while self.transport is not None and not self._discard and self._next_request():
            pass

    # state -------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing in flight and no partial request: safe to close while draining."""
        return self.in_flight == 0 and self._pending is None and not self._buf and not self._discard

    @property
    def partial(self) -> bool:
        """A request has started arriving but is not complete."""
        return self._pending is not None or bool(self._buf) or bool(self._discard)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def respond(
        self, request: Request, status: int, body: bytes = b"", content_type: str | None = None
    ) -> None:
        """Write the response for ``request`` (requests are answered in the order they came)."""
        if request.done:
            return
        request.done = True
        self.in_flight -= 1
        if self.transport is None:
            return
        keep = request.keep_alive and not self.closing
        head = [
            _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(),
            b"Date: ",
            http_date(),
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        if content_type:
            head += [b"Content-Type: ", content_type.encode("latin1", "replace"), b"\r\n"]
        if not keep:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + body)
        self.last_active = time.monotonic()
        if not keep:
            self.transport.close()
            self.transport = None

    def respond_error(self, request: Request, exc: ServingError) -> None:
        self.respond(request, exc.status, error_body(exc), "application/json")

    # parsing -----------------------------------------------------------------------------
    def _next_request(self) -> bool:
        """Consume one request (or its body) from the buffer; False when more data is needed."""
        if self._chunks is not None:
            return self._next_chunk()
        if self._pending is not None:
            if len(self._buf) < self._need:
                return False
            request, self._pending = self._pending, None
            request.body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._hand_over(request)
            return True
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._fail(431, "request headers are larger than 64 KiB")
            return False
        head = bytes(self._buf[:end]).decode("latin1")
        del self._buf[: end + 4]
        lines = head.split("\r\n")
        while lines and not lines[0]:  # tolerate stray CRLFs between requests
            lines.pop(0)
        if not lines:
            return True
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400, f"malformed request line {lines[0][:100]!r}")
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(400, f"malformed header line {line[:100]!r}")
                return False
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        request = Request(self, method, target.split("?", 1)[0], headers, keep_alive=keep_alive)
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding != "chunked":
                self._fail(501, f"Transfer-Encoding {encoding!r} is not supported")
                return False
            if headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(_STATUS_LINES[100] + b"\r\n")
            self._pending, self._chunks, self._chunked_size = request, [], 0
            return True
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._fail(400, "Content-Length is not a non-negative integer")
            return False
        if length > self._max_body:
            request.error = PayloadTooLarge(
                f"the body is {length} bytes; the limit is {self._max_body} bytes "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB); split the request"
            )
            dropped = min(length, len(self._buf))
            del self._buf[:dropped]
            self._discard = length - dropped
            if headers.get("expect", "").lower() == "100-continue":
                request.keep_alive = False  # the client will not send the body
                self._discard = 0
            self._hand_over(request)
            return True
        if length and headers.get("expect", "").lower() == "100-continue":
            assert self.transport is not None
            self.transport.write(_STATUS_LINES[100] + b"\r\n")
        if len(self._buf) >= length:
            request.body = bytes(self._buf[:length])
            del self._buf[:length]
            self._hand_over(request)
            return True
        self._pending, self._need = request, length
        return False

    def _next_chunk(self) -> bool:
        """Consume one chunk of a ``Transfer-Encoding: chunked`` body (RFC 9112 section 7.1)."""
        assert self._pending is not None
        assert self._chunks is not None
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > 1024:
                self._fail(400, "a chunk-size line is longer than 1024 bytes")
            return False
        try:
            size = int(bytes(self._buf[:end]).split(b";", 1)[0].strip(), 16)
            if size < 0:
                raise ValueError
        except ValueError:
            self._fail(400, "malformed chunk-size line in a chunked body")
            return False
        if size == 0:  # last chunk, then optional trailer fields and an empty line
            trailer_end = self._buf.find(b"\r\n", end + 2)
            if trailer_end < 0:
                return False
            if trailer_end != end + 2:
                trailer_end = self._buf.find(b"\r\n\r\n", end)
                if trailer_end < 0:
                    return False
                trailer_end += 2
            del self._buf[: trailer_end + 2]
            request, self._pending = self._pending, None
            request.body, self._chunks = b"".join(self._chunks), None
            if request.error is None:  # an oversized one was answered already
                self._hand_over(request)
            return True
        if len(self._buf) < end + 2 + size + 2:
            return False
        self._chunked_size += size
        if self._chunked_size <= self._max_body:
            self._chunks.append(bytes(self._buf[end + 2 : end + 2 + size]))
        elif self._pending.error is None:
            # Answer 413 now, then keep reading (and dropping) chunks so the connection
            # stays in step and the client sees the answer rather than a reset.
            self._chunks.clear()
            self._pending.error = PayloadTooLarge(
                f"the chunked body is over the limit of {self._max_body} bytes "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB); split the request"
            )
            self._hand_over(self._pending)
        del self._buf[: end + 2 + size + 2]
        return True

    def _hand_over(self, request: Request) -> None:
        self.in_flight += 1
        self._on_request(request)

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we could not even frame, then close (the stream is out of sync)."""
        if self.transport is None:
            return
        error = ServingError(message)
        error.status, error.error = status, "bad_request"
        request = Request(self, "", "", {}, keep_alive=False)
        self.in_flight += 1
        self.respond_error(request, error)
        self._buf.clear()

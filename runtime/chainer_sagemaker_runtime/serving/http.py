"""HTTP/1.1 framing for one worker: requests in, responses out, nothing about models.

Requests are framed by llhttp (through ``httptools``, from the uvloop maintainers): a maintained,
fuzzed parser that rejects what RFC 9112 says a server must reject (obs-fold, bare CR or LF,
NUL and other controls in fields, whitespace before a colon, a second ``Content-Length``,
``Content-Length`` with ``Transfer-Encoding``, malformed chunk sizes, chunk data not ending in
CRLF). On top of it this module adds what a parser cannot know: our limits (head size, header
count, body size checked on ``Content-Length`` and on every piece of a chunked body as it
arrives, trailer size), the checks RFC 9112 leaves to the server (``Host``, the HTTP version,
the request target), flow control, and the timing rules (header deadline, minimum body rate,
idle keep-alive, lingering close), applied by :meth:`Connection.tick` once a second.

Answers always leave in request order: every request gets a slot in a per-connection queue,
and a slot is written only when all earlier ones have been; a framing error is answered after
the requests queued before it, then the connection lingers (write side shut, input read and
dropped for a few seconds) so that a client still sending its body reads the answer instead of
a reset.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

import httptools

from chainer_sagemaker_runtime.serving.errors import ServingError, error_body

__all__ = ["Connection", "Limits", "Request", "framing_error", "http_date", "valid_media_type"]

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
_STATUS_LINES = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SLICE = 16 * 1024  # bytes handed to the parser at a time (bounds what it buffers unchecked)
_CHUNK_OVERHEAD = 1024  # framing bytes allowed per chunk (size line, extensions, CRLFs)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - an RFC 9110 token, no secret
_MEDIA_TYPE = re.compile(
    rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\x00-\x1f\x7f]|\\[ -~])*"))*'
)


def valid_media_type(value: str) -> bool:
    """``type/subtype`` with optional ``; name=value`` parameters (RFC 9110 section 8.3.1)."""
    return _MEDIA_TYPE.fullmatch(value) is not None


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The ``Date`` header value, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


@dataclass(frozen=True)
class Limits:
    """What one connection may cost; every number is bounded so one client cannot hold a
    worker's memory or sockets."""

    max_body: int  # bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB)
    max_head: int = 64 * 1024  # request line plus header fields
    max_headers: int = 100
    max_trailer: int = 16 * 1024
    max_queued: int = 32  # requests read ahead on one connection before it stops reading
    header_timeout: float = 10.0  # the whole head must arrive within this from its first byte
    body_grace: float = 5.0  # then the body must keep arriving at body_min_rate at least
    body_min_rate: float = 1024.0  # bytes per second
    keepalive: float = 20.0  # an idle keep-alive connection is closed after this
    linger: float = 5.0  # after the last answer: read and drop input this long at most
    linger_quiet: float = 1.0  # ... or until the client has been quiet this long
    drain_limit: int = 64 * 1024 * 1024  # body bytes read and dropped after an early answer
    write_stall: float = 60.0  # a client that reads nothing for this long is dropped


class _Stop(Exception):
    """Raised inside a parser callback: stop reading this connection (already answered)."""


class _Reject(Exception):
    """Raised inside a parser callback: answer ``status`` and stop reading this connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def framing_error(status: int, message: str) -> ServingError:
    """The error for a request the HTTP layer answers itself (its status and a stable code)."""
    error = ServingError(message)
    error.status = status
    error.error = {408: "request_timeout", 413: "payload_too_large", 431: "headers_too_large"}.get(
        status, "bad_request"
    )
    return error


class Request:
    """One request; ``error`` is set when framing already decided the answer (e.g. 413)."""

    __slots__ = (
        "body",
        "conn",
        "continue_sent",
        "error",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "path",
        "response",
        "version",
    )

    def __init__(
        self,
        conn: Connection,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        version: str = "1.1",
        keep_alive: bool = True,
    ) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.body = b""
        self.error: ServingError | None = None
        self.expect_continue = False
        self.continue_sent = False
        self.response: bytes | None = None  # the encoded answer, once there is one


_IDLE, _HEAD, _BODY = 0, 1, 2


class Connection(asyncio.Protocol):
    """One client connection; hands complete, well-framed requests to ``on_request``.

    ``on_request`` runs on the event loop and must eventually call :meth:`respond` (from the
    loop thread) for every request it receives.
    """

    def __init__(
        self,
        on_request: Callable[[Request], None],
        limits: Limits,
        registry: set[Connection],
    ) -> None:
        self._on_request = on_request
        self._limits = limits
        self._registry = registry
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()  # requests not yet answered on the wire, in order
        self._state = _IDLE
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_size = 0  # bytes of the complete fields of the current head
        self._head_fed = 0  # bytes fed while inside one head (catches a field never ending)
        self._trailer_size = 0
        self._feeding = False
        self._eof = False
        self._header_count = 0
        self._current: Request | None = None  # headers read, body arriving
        self._body: list[bytes] = []
        self._body_size = 0
        self._framing = 0  # non-body bytes seen while in a chunked body (sizes, trailers)
        self._chunks = 0
        self._discard = False  # the current body is read and dropped (answered early)
        self._head_started = 0.0
        self._body_started = 0.0
        self._body_checked = 0  # body bytes when the body clock last (re)started
        self._backlog = b""  # input held back while reading is paused for the queue cap
        self._paused: set[str] = set()
        self._write_paused_at = 0.0
        self._lingering = False
        self._linger_until = 0.0
        self._dead = False  # no more requests are read from this connection
        self.transport: asyncio.Transport | None = None
        self.closing = False  # answer with Connection: close from now on (draining)
        self.last_active = time.monotonic()

    # asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        self.transport = None
        # break the parser <-> protocol cycle and drop buffers now, not at the next full GC
        self._parser = None
        self._queue.clear()
        self._body = []
        self._backlog = b""
        self._current = None

    def pause_writing(self) -> None:
        self._write_paused_at = time.monotonic()
        self._pause("write")

    def resume_writing(self) -> None:
        self._write_paused_at = 0.0
        self._resume("write")

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._lingering or not self._queue:
            return None  # close
        self._dead = True  # half-closed: answer what was asked, then close
        self._queue[-1].keep_alive = False
        return True

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._lingering or self._dead:
            return  # read and dropped
        if self._backlog:
            self._backlog += data
            return
        self._feed(data)

    # state -------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing queued and no partial request: safe to close while draining."""
        return not self._queue and self._state == _IDLE and not self._backlog

    @property
    def busy(self) -> bool:
        """Requests of this connection are being served or answered (never cut by draining);
        a request whose body is still arriving does not count."""
        current = self._current
        return any(r is not current or r.response is not None for r in self._queue)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # responses ---------------------------------------------------------------------------
    def respond(
        self,
        request: Request,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        extra: bytes = b"",
    ) -> None:
        """Set the answer of ``request``; answers are written in the order requests came."""
        if request.response is not None:
            return
        keep = request.keep_alive and not self.closing
        request.keep_alive = keep
        head = [
            _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(),
            b"Date: ",
            http_date(),
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        if content_type:
            head += [b"Content-Type: ", content_type.encode("latin1"), b"\r\n"]
        if extra:
            head.append(extra)
        if not keep:
            head.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(body)
        request.response = b"".join(head)
        if self._queue and self._queue[0] is request:
            self._write_ready()

    def refuse(self, error: ServingError) -> None:
        """Answer ``error`` before any request was read (e.g. over the connection cap), close."""
        self._dead = True
        request = Request(self, "", "", {}, keep_alive=False)
        self._queue.append(request)
        self.respond_error(request, error)

    def respond_error(self, request: Request, exc: ServingError) -> None:
        extra = b"Allow: POST\r\n" if exc.status == 405 and request.path == "/invocations" else b""
        if exc.status == 405 and request.path != "/invocations":
            extra = b"Allow: GET, HEAD\r\n"
        self.respond(request, exc.status, error_body(exc), "application/json", extra)

    def _write_ready(self) -> None:
        transport = self.transport
        queue = self._queue
        while queue and queue[0].response is not None and transport is not None:
            request = queue.popleft()
            assert request.response is not None
            transport.write(request.response)
            self.last_active = time.monotonic()
            if not request.keep_alive:
                self._start_linger()
                return
        if transport is None:
            return
        if queue:
            head = queue[0]
            if head.expect_continue and not head.continue_sent and head is self._current:
                head.continue_sent = True
                transport.write(_CONTINUE)
                self._body_started = time.monotonic()  # the body clock starts now
        if "queue" in self._paused and len(queue) < self._limits.max_queued:
            self._resume("queue")
            if self._backlog and not self._dead and not self._lingering:
                backlog, self._backlog = self._backlog, b""
                self._feed(backlog)

    def _start_linger(self) -> None:
        """The last answer is written: shut our side, read and drop input for a while, close."""
        if self._lingering:
            return
        self._dead = True
        self._lingering = True
        self._queue.clear()
        self._backlog = b""
        self._body = []
        self._linger_until = time.monotonic() + self._limits.linger
        transport = self.transport
        if transport is None:
            return
        if self._eof:  # the client has closed its side: nothing more will come
            transport.close()
            return
        if self._paused:
            self._paused.clear()
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            transport.close()

    # flow control ------------------------------------------------------------------------
    def _pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self._lingering:
            self.transport.resume_reading()
            if self._state == _BODY:  # the body clock restarts: we were not reading
                self._body_started = time.monotonic()
                self._body_checked = self._body_size

    # timers ------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Apply the time limits (called about once a second by the worker)."""
        if self.transport is None:
            return
        limits = self._limits
        if self._lingering:
            if now > self._linger_until or now - self.last_active > limits.linger_quiet:
                self.transport.close()
            return
        if self._write_paused_at and now - self._write_paused_at > limits.write_stall:
            self.transport.abort()  # the client reads nothing: nothing more can be said
            return
        if self._paused or self._dead:
            return
        if self._state == _HEAD and now - self._head_started > limits.header_timeout:
            self._fail(408, f"the request head did not arrive within {limits.header_timeout:g} s")
        elif (
            self._state == _BODY
            and now - self._body_started > limits.body_grace
            and not self._awaiting_continue()
        ):
            received = self._body_size - self._body_checked
            if received < limits.body_min_rate * (now - self._body_started):
                self._fail(
                    408,
                    f"the request body arrived slower than {limits.body_min_rate:g} bytes/s",
                )
        elif self.idle and now - self.last_active > limits.keepalive:
            self.transport.close()

    # parsing -----------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        """Hand ``data`` to the parser a slice at a time, checking the limits in between."""
        if self._feeding:  # re-entered from a callback: the running loop will get to it
            self._backlog += data
            return
        self._feeding = True
        try:
            self._feed_slices(data)
        finally:
            self._feeding = False

    def _feed_slices(self, data: bytes) -> None:
        limits = self._limits
        view = memoryview(data)
        pos = 0
        while pos < len(data) or self._backlog:
            if pos >= len(data):  # bytes that arrived while a callback ran
                data, self._backlog, pos = self._backlog, b"", 0
                view = memoryview(data)
            if self._dead or self._lingering or self._parser is None:
                return
            if "queue" in self._paused:
                self._backlog = bytes(view[pos:]) + self._backlog
                return
            piece = view[pos : pos + _SLICE]
            pos += len(piece)
            before = self._state
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                # Upgrade (h2c, websocket) is not offered: the request was served as plain
                # HTTP/1.1 and the connection carries on; CONNECT gets its answer and closes.
                if self._queue and self._queue[-1].method == "CONNECT":
                    self._stop_reading()
                    return
                pos = pos - len(piece) + int(upgrade.args[0])
                continue
            except httptools.HttpParserCallbackError as exc:
                reason = exc.__context__
                if isinstance(reason, _Reject):
                    self._fail(reason.status, reason.message)
                elif not isinstance(reason, _Stop):
                    raise
                return
            except httptools.HttpParserError as exc:
                if not self._dead:  # e.g. bytes after a `Connection: close` request: ignored
                    self._fail(400, f"malformed request: {exc}")
                return
            state = self._state
            if state == _HEAD and before == _HEAD:
                # the whole slice was head: what the parser holds in a field not yet complete
                self._head_fed += len(piece)
                if self._head_fed > limits.max_head:
                    self._fail(431, f"the request head is larger than {limits.max_head} bytes")
                    return
            elif state == _BODY and before == _BODY and self._chunks:
                self._framing += len(piece)
                allowed = (
                    self._body_size + self._chunks * _CHUNK_OVERHEAD + limits.max_trailer + _SLICE
                )
                if self._framing > allowed:
                    self._fail(431, "the chunk framing or trailer section is too large")
                    return

    def _awaiting_continue(self) -> bool:
        """The client waits for our 100 Continue (sent when its turn comes) before the body."""
        current = self._current
        return current is not None and current.expect_continue and not current.continue_sent

    def _stop_reading(self) -> None:
        """Read no further requests: close after the answers already queued."""
        self._dead = True
        if self._queue:
            self._queue[-1].keep_alive = False
        else:
            self._start_linger()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we cannot frame (after the ones queued before it), then linger."""
        if self.transport is None:
            return
        self._dead = True
        self._state = _IDLE
        self._body = []
        if self._current is not None and self._current.response is None:
            request = self._current  # its answer is the error (it is queued already)
        else:
            request = Request(self, "", "", {}, keep_alive=False)
            self._queue.append(request)
        self._current = None
        request.keep_alive = False
        self.respond_error(request, framing_error(status, message))

    # httptools callbacks (names fixed by httptools) -----------------------------------------
    def on_message_begin(self) -> None:
        self._state = _HEAD
        self._head_started = time.monotonic()
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._head_fed = 0
        self._trailer_size = 0
        self._header_count = 0
        self._body = []
        self._body_size = 0
        self._framing = 0
        self._chunks = 0
        self._discard = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        limits = self._limits
        if self._state == _BODY:  # a trailer field: read, bounded, not used
            self._trailer_size += len(name) + len(value) + 4
            if self._trailer_size > limits.max_trailer:
                raise _Reject(431, f"the trailer section is larger than {limits.max_trailer} bytes")
            if self._header_count > limits.max_headers:
                raise _Reject(431, f"more than {limits.max_headers} header and trailer fields")
            return
        self._head_size += len(name) + len(value) + 4
        if self._header_count > limits.max_headers:
            raise _Reject(431, f"more than {limits.max_headers} header fields")
        if self._head_size > limits.max_head:
            raise _Reject(431, f"the request head is larger than {limits.max_head} bytes")
        key = name.decode("latin1").lower()
        text = value.decode("latin1")
        previous = self._headers.get(key)
        if previous is None:
            self._headers[key] = text
        elif key in ("host", "content-type"):
            raise _Reject(400, f"more than one {name.decode('latin1')} header field")
        else:
            self._headers[key] = f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Reject(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        headers = self._headers
        if version == "1.1" and "host" not in headers:
            raise _Reject(400, "an HTTP/1.1 request must have a Host header field")
        method = parser.get_method().decode("ascii")
        url = self._url.decode("latin1")
        if url.startswith("/"):
            path = url.split("?", 1)[0]
        elif url.startswith(("http://", "https://")):  # absolute-form (RFC 9112 section 3.2.2)
            path = urlsplit(url).path or "/"
        elif url == "*" and method == "OPTIONS":
            path = "*"
        else:
            path = ""
        keep_alive = parser.should_keep_alive() and not self.closing
        request = Request(self, method, path, headers, version=version, keep_alive=keep_alive)
        self._queue.append(request)
        self._current = request
        self._state = _BODY
        self._body_started = time.monotonic()
        self._body_checked = 0
        if not path:
            raise _Reject(400, f"the request target {url[:100]!r} is not a path")
        limits = self._limits
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            codings = [c.strip().lower() for c in encoding.split(",")]
            if codings[-1] != "chunked":  # RFC 9112 section 6.3: the length is unknowable
                raise _Reject(400, f"Transfer-Encoding {encoding!r} does not end in chunked")
            if len(codings) > 1:
                raise _Reject(501, f"Transfer-Encoding {encoding!r} is not supported; send chunked")
        length_header = headers.get("content-length")
        length = int(length_header) if length_header is not None else 0  # llhttp checked it
        expects = headers.get("expect")
        if expects is not None:
            if expects.lower() != "100-continue":
                raise _Reject(400, f"Expect {expects!r} is not supported")
            # HTTP/1.0 clients do not understand 100 Continue (RFC 9110 section 10.1.1)
            request.expect_continue = version == "1.1" and (length > 0 or encoding is not None)
        if length > limits.max_body:
            # Answered now; the body is then read and dropped so that the connection stays in
            # step, unless the client waits for 100 Continue (it will not send the body) or
            # the body is too large to be worth reading: then the connection lingers, closes.
            if request.expect_continue or length > limits.drain_limit:
                request.keep_alive = False
                self._dead = True
            self._answer_early(request, self._too_large(f"the body is {length} bytes,"))
            return
        if request.expect_continue and self._queue[0] is request:
            request.continue_sent = True
            assert self.transport is not None
            self.transport.write(_CONTINUE)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        size = self._body_size + len(body)
        self._body_size = size
        if self._discard:
            if size > self._limits.drain_limit:
                self._stop_reading()
                raise _Stop  # the answer was given already
            return
        if size > self._limits.max_body:
            assert self._current is not None
            self._body = []
            self._answer_early(self._current, self._too_large("the chunked body is"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        self._state = _IDLE
        self._current = None
        if request is None:
            return
        if not request.keep_alive:
            self._dead = True  # whatever follows is not read
        if self._discard:
            self._discard = False
            return
        body = self._body
        request.body = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        if len(self._queue) >= self._limits.max_queued:
            self._pause("queue")
        self._on_request(request)

    # helpers -----------------------------------------------------------------------------
    def _too_large(self, what: str) -> ServingError:
        limit = self._limits.max_body
        return framing_error(
            413,
            f"{what} over the limit of {limit} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB); "
            "split the request",
        )

    def _answer_early(self, request: Request, error: ServingError) -> None:
        """Answer before the body has arrived; the body is then read and dropped."""
        self._discard = True
        request.error = error
        self.respond_error(request, error)

"""One worker process: its own listening socket, event loop, and the model (DESIGN.md "serving").

Requests are not served the moment they are parsed: they are queued and the queue is flushed
once per event-loop turn. Everything that arrived together is thereby handled together, which
lets invocations share one ``predict`` call when the user kept the default ``predict_fn`` (one
matrix product for eight rows costs little more than for one). Inference runs inline on the
loop thread, because the worker is one core's worth of compute; a ``SIGALRM`` timer bounds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import signal
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from chainer_sagemaker_runtime.serving.config import ServingConfig
from chainer_sagemaker_runtime.serving.errors import (
    InternalError,
    RequestTimeout,
    ServingError,
)
from chainer_sagemaker_runtime.serving.handler import Handler, Reply, media_type
from chainer_sagemaker_runtime.serving.http import Connection, Request

__all__ = ["Worker", "listen_socket"]

log = logging.getLogger(__name__)

_DRAIN_POLL = 0.05
_SWEEP_EVERY = 5.0
_IDLE_KEEPALIVE = 300.0  # an idle keep-alive connection is closed after this many seconds
_NOT_READY = ServingError("the model server is starting: not every worker has loaded the model")
_NOT_READY.status = 503


class _Deadline(BaseException):
    """Raised by SIGALRM in the middle of user code; BaseException so ``except Exception`` in a
    user's hook cannot swallow it."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that every worker can open for itself (SO_REUSEPORT),
    so the kernel spreads connections over workers without a proxy hop."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass(slots=True)
class _Job:
    request: Request
    reply: Reply | None = None
    error: ServingError | None = None
    accept: str = ""
    data: Any = None


class Worker:
    """Serves requests for one loaded model on one listening socket."""

    def __init__(self, config: ServingConfig, handler: Handler, ready_flag: mmap.mmap) -> None:
        self.config = config
        self.handler = handler
        self._ready = ready_flag
        self._queue: list[Request] = []
        self._flush_scheduled = False
        self._connections: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False
        self._stopping = False
        params = {
            "MaxConcurrentTransforms": config.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": max(1, config.max_payload_bytes // (1024 * 1024)),
        }
        self._execution_parameters = json.dumps(params).encode()

    # lifecycle ---------------------------------------------------------------------------
    def run(self, sock: socket.socket) -> None:
        """Serve on ``sock`` until SIGTERM, then drain and return."""
        loop = _new_event_loop()
        self._loop = loop
        signal.signal(signal.SIGALRM, self._on_alarm)
        loop.add_signal_handler(signal.SIGTERM, self._begin_drain)
        loop.add_signal_handler(signal.SIGINT, self._begin_drain)
        server = loop.run_until_complete(
            loop.create_server(
                lambda: Connection(self._submit, self.config.max_payload_bytes, self._connections),
                sock=sock,
            )
        )
        self._server = server
        loop.call_later(_SWEEP_EVERY, self._sweep)
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()

    def _begin_drain(self) -> None:
        """Stop accepting, finish what is in flight, close idle connections, then stop."""
        if self._stopping:
            return
        self._stopping = True
        self._server.close()
        deadline = time.monotonic() + self.config.timeout + 5
        assert self._loop is not None
        loop = self._loop

        def check() -> None:
            for conn in list(self._connections):
                conn.closing = True
                if conn.idle:
                    conn.close()
            if not self._connections or time.monotonic() > deadline:
                loop.stop()
            else:
                loop.call_later(_DRAIN_POLL, check)

        check()

    def _sweep(self) -> None:
        """Close connections that stalled mid-request (slow clients holding a worker's sockets)
        or sat idle for a long time; a request being served is never cut."""
        now = time.monotonic()
        stalled_after = max(self.config.timeout, 60.0)
        for conn in list(self._connections):
            quiet = now - conn.last_active
            if conn.in_flight:
                continue
            if (conn.partial and quiet > stalled_after) or quiet > _IDLE_KEEPALIVE:
                conn.close()
        assert self._loop is not None
        if not self._stopping:
            self._loop.call_later(_SWEEP_EVERY, self._sweep)

    # request queue -----------------------------------------------------------------------
    def _submit(self, request: Request) -> None:
        self._queue.append(request)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        requests, self._queue = self._queue, []
        jobs = [_Job(r) for r in requests]
        invocations: list[_Job] = []
        for job in jobs:
            self._route(job, invocations)
        if invocations:
            self._invoke_all(invocations)
        for job in jobs:
            conn = job.request.conn
            if job.error is not None:
                conn.respond_error(job.request, job.error)
            elif job.reply is not None:
                conn.respond(job.request, 200, job.reply.body, job.reply.content_type)
            else:
                conn.respond(job.request, 200)

    def _route(self, job: _Job, invocations: list[_Job]) -> None:
        req = job.request
        if req.error is not None:
            job.error = req.error
        elif req.path == "/invocations":
            if req.method != "POST":
                job.error = _status(405, "use POST /invocations")
            else:
                invocations.append(job)
        elif req.path == "/ping":
            if req.method not in ("GET", "HEAD"):
                job.error = _status(405, "use GET /ping")
            elif not self._ready[0]:
                job.error = _NOT_READY
        elif req.path == "/execution-parameters":
            job.reply = Reply(self._execution_parameters, "application/json")
        else:
            job.error = _status(404, f"no route {req.path!r}; use /ping or /invocations")

    # inference ---------------------------------------------------------------------------
    def _invoke_all(self, jobs: list[_Job]) -> None:
        try:
            with self._deadline():
                if self.handler.batchable and self.config.batching and len(jobs) > 1:
                    self._invoke_batched(jobs)
                else:
                    for job in jobs:
                        self._invoke_one(job)
        except _Deadline:
            for job in jobs:
                if job.reply is None and job.error is None:
                    job.error = RequestTimeout(
                        f"the request took longer than {self.config.timeout:g} s "
                        "(SAGEMAKER_MODEL_SERVER_TIMEOUT)"
                    )

    def _invoke_one(self, job: _Job) -> None:
        req = job.request
        try:
            job.reply = self.handler.invoke(
                req.body,
                req.headers.get("content-type") or req.headers.get("contenttype"),
                req.headers.get("accept"),
            )
        except ServingError as exc:
            job.error = exc
        except Exception as exc:  # a bug of ours must not take the worker down either
            log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc)))
            job.error = InternalError(f"{type(exc).__name__}: {exc}")

    def _invoke_batched(self, jobs: list[_Job]) -> None:
        """Decode each request, predict stacks of compatible arrays at once, encode each."""
        groups: dict[tuple[Any, ...], list[_Job]] = {}
        for job in jobs:
            req = job.request
            try:
                job.accept = self.handler.negotiate(req.headers.get("accept"))
                ctype = req.headers.get("content-type") or req.headers.get("contenttype")
                job.data = self.handler.decode(req.body, media_type(ctype, "application/json"))
            except ServingError as exc:
                job.error = exc
                continue
            data = job.data
            if isinstance(data, np.ndarray) and data.ndim >= 2 and len(data):
                key: tuple[Any, ...] = (data.dtype, data.shape[1:])
            else:
                key = ("single", id(job))
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            if len(group) > 1 and self._predict_group(group):
                continue
            for job in group:
                try:
                    self._finish(job, self.handler.predict(job.data))
                except ServingError as exc:
                    job.error = exc

    def _predict_group(self, group: list[_Job]) -> bool:
        """One predict for the whole group; False (nothing set) if it must be done one by one."""
        for start in range(0, len(group), self.config.max_batch_rows):
            chunk = group[start : start + self.config.max_batch_rows]
            sizes = [len(job.data) for job in chunk]
            try:
                out = self.handler.predict(np.concatenate([job.data for job in chunk]))
            except ServingError:
                return False  # maybe one bad input: the per-request path isolates it
            if not isinstance(out, np.ndarray) or len(out) != sum(sizes):
                return False
            offset = 0
            for job, size in zip(chunk, sizes, strict=True):
                self._finish(job, out[offset : offset + size])
                offset += size
        return True

    def _finish(self, job: _Job, prediction: Any) -> None:
        try:
            job.reply = self.handler.encode(prediction, job.accept)
        except ServingError as exc:
            job.error = exc

    # timeout -----------------------------------------------------------------------------
    @contextmanager
    def _deadline(self) -> Iterator[None]:
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.config.timeout)
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: object) -> None:
        if self._armed:
            self._armed = False
            raise _Deadline


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (about half the per-request cost of the standard loop's
    socket handling), the standard event loop otherwise; ``CHAINER_SAGEMAKER_UVLOOP=0`` opts out."""
    if os.environ.get("CHAINER_SAGEMAKER_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def _status(status: int, message: str) -> ServingError:
    error = ServingError(message)
    error.status = status
    error.error = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
    return error

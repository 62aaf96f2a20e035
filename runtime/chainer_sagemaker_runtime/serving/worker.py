"""One worker process: its own listening socket, the model, two threads (docs/design.md, serving).

The event loop runs on an I/O thread: it accepts connections, frames requests
(:mod:`.http`), answers ``/ping``, ``/execution-parameters`` and every framing error at once,
and applies the per-connection limits and timers. Invocations go to the main thread, which runs
the model: it takes everything queued when it becomes free (requests that arrived together are
served together, which lets them share one ``predict`` call when the user kept the default
``predict_fn``: one matrix product for eight rows costs little more than for one), and hands
each answer back to the loop as soon as it is ready. So a health check never waits behind
inference, and a slow request never holds back finished ones of other clients.

Inference stays on the main thread because only the main thread receives signals: a
``SIGALRM`` timer bounds every call into the user's code (decode, a ``predict`` call, encode)
by ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` and interrupts it, so the worker recovers from a request
that runs too long. Every request taken for inference is answered, whatever is raised
(``try``/``finally``); an exception is that one request's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import mmap
import os
import queue
import resource
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from chainer_sagemaker_runtime.serving.config import ServingConfig
from chainer_sagemaker_runtime.serving.errors import (
    InternalError,
    RequestTimeout,
    ServingError,
)
from chainer_sagemaker_runtime.serving.handler import Handler, Reply, media_type
from chainer_sagemaker_runtime.serving.http import (
    Connection,
    Limits,
    Request,
    framing_error,
    valid_media_type,
)

__all__ = ["Worker", "listen_socket"]

log = logging.getLogger(__name__)

_DRAIN_POLL = 0.05
_TICK = 1.0  # the connection timers' resolution
_LOG_EVERY = 10.0  # a repeated resource warning is logged at most this often
_FALLBACK_TYPE = "application/octet-stream"
_NOT_READY = ServingError("the model server is starting: not every worker has loaded the model")
_NOT_READY.status = 503
_BUSY = framing_error(503, "this worker has too many open connections; retry")
_BUSY.error = "busy"

T = TypeVar("T")


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
    records: bool = False  # several JSON records, one per line: answered a line each
    sent: bool = False


class Worker:
    """Serves requests for one loaded model on one listening socket."""

    def __init__(self, config: ServingConfig, handler: Handler, ready_flag: mmap.mmap) -> None:
        self.config = config
        self.handler = handler
        self._ready = ready_flag
        self.limits = Limits(
            max_body=config.max_payload_bytes,
            keepalive=config.keepalive,
            header_timeout=config.header_timeout,
            body_grace=config.header_timeout,
        )
        self._jobs: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._connections: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._armed = False
        self._stopping = False
        self._logged: dict[str, float] = {}
        self._opening: set[asyncio.Task[None]] = set()
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._fd_limit = soft
        # leave file descriptors for the model's own files, logs and pipes
        self.max_connections = max(1, min(config.max_connections, soft - 64))
        params = {
            "MaxConcurrentTransforms": config.max_concurrent_transforms or config.workers,
            "BatchStrategy": config.batch_strategy,
            "MaxPayloadInMB": max(1, config.max_payload_bytes // (1024 * 1024)),
        }
        self._execution_parameters = json.dumps(params).encode()
        self._timeout_message = (
            f"the request took longer than {config.timeout:g} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)"
        )

    # lifecycle ---------------------------------------------------------------------------
    def run(self, sock: socket.socket) -> None:
        """Serve on ``sock`` until SIGTERM, then drain and return."""
        loop = _new_event_loop()
        self._loop = loop
        self._listener = sock
        signal.signal(signal.SIGALRM, self._on_alarm)

        def on_stop(signum: int, frame: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._begin_drain)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_stop)
        io = threading.Thread(target=self._io_main, name="serve-io", daemon=True)
        io.start()
        try:
            self._inference_loop()
        except BaseException:
            loop.call_soon_threadsafe(self._begin_drain)  # answer what was answered, then go
            io.join(self.config.timeout + 10)
            raise
        io.join(self.config.timeout + 10)

    def _io_main(self) -> None:
        # Signals go to the main thread only: SIGALRM must interrupt the user's code there.
        signal.pthread_sigmask(
            signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        )
        loop = self._loop
        assert loop is not None
        assert self._listener is not None
        asyncio.set_event_loop(loop)
        loop.add_reader(self._listener.fileno(), self._accept)
        loop.call_later(_TICK, self._tick)
        try:
            loop.run_forever()
        finally:
            for conn in list(self._connections):
                conn.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
            self._jobs.put(None)  # the inference loop stops

    def _begin_drain(self) -> None:
        """Stop accepting, finish what is queued, close every other connection, then stop."""
        if self._stopping:
            return
        self._stopping = True
        assert self._loop is not None
        assert self._listener is not None
        loop = self._loop
        loop.remove_reader(self._listener.fileno())
        self._listener.close()
        deadline = time.monotonic() + self.config.timeout + 5

        def check() -> None:
            for conn in list(self._connections):
                conn.closing = True
                if not conn.busy:  # idle, or a request only partly received: closed now
                    conn.close()
            if not self._connections or time.monotonic() > deadline:
                loop.stop()
            else:
                loop.call_later(_DRAIN_POLL, check)

        check()

    def _tick(self) -> None:
        now = time.monotonic()
        for conn in list(self._connections):
            conn.tick(now)
        if not self._stopping:
            assert self._loop is not None
            self._loop.call_later(_TICK, self._tick)

    def _warn(self, key: str, message: str, *args: object) -> None:
        """Log a resource warning, at most once per ``_LOG_EVERY`` seconds per kind."""
        now = time.monotonic()
        if now - self._logged.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._logged[key] = now
            log.warning(message, *args)

    # connections -------------------------------------------------------------------------
    def _accept(self) -> None:
        """Accept what is waiting (our own accept loop: resource errors are logged, the
        connection cap is applied, and draining stops it)."""
        loop, listener = self._loop, self._listener
        assert loop is not None
        assert listener is not None
        for _ in range(64):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                self._warn(
                    "accept",
                    "cannot accept connections: %s (%d open on this worker, file descriptor "
                    "limit %d); pausing accepts for 1 s",
                    exc,
                    len(self._connections),
                    self._fd_limit,
                )
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    fd = listener.fileno()
                    loop.remove_reader(fd)
                    loop.call_later(1.0, self._resume_accepting)
                return
            sock.setblocking(False)
            refuse = len(self._connections) >= self.max_connections
            if refuse:
                self._warn(
                    "cap",
                    "connection cap reached: %d open connections on this worker "
                    "(CHAINER_SAGEMAKER_MAX_CONNECTIONS=%d); new connections get 503",
                    len(self._connections),
                    self.max_connections,
                )
            task = loop.create_task(self._open(sock, refuse))
            self._opening.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._opening.discard)

    def _resume_accepting(self) -> None:
        if not self._stopping and self._loop is not None and self._listener is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    async def _open(self, sock: socket.socket, refuse: bool) -> None:
        assert self._loop is not None
        try:
            _, conn = await self._loop.connect_accepted_socket(
                lambda: Connection(self._on_request, self.limits, self._connections), sock
            )
        except OSError:
            sock.close()
            return
        if refuse:
            conn.refuse(_BUSY)

    # routing (event loop thread) ---------------------------------------------------------
    def _on_request(self, req: Request) -> None:
        path, method = req.path, req.method
        if path == "/invocations":
            if method == "POST":
                self._jobs.put(req)
                return
            error = _status(405, "use POST /invocations")
        elif path == "/ping":
            if method in ("GET", "HEAD"):
                if self._ready[0]:
                    req.conn.respond(req, 200)
                else:
                    req.conn.respond_error(req, _NOT_READY)
                return
            error = _status(405, "use GET /ping")
        elif path == "/execution-parameters":
            if method in ("GET", "HEAD"):
                req.conn.respond(req, 200, self._execution_parameters, "application/json")
                return
            error = _status(405, "use GET /execution-parameters")
        else:
            error = _status(404, f"no route {path!r}; use /ping or /invocations")
        req.conn.respond_error(req, error)

    def _write_replies(self, jobs: list[_Job]) -> None:
        for job in jobs:
            req = job.request
            if job.error is not None:
                req.conn.respond_error(req, job.error)
            elif job.reply is not None:
                req.conn.respond(req, 200, job.reply.body, job.reply.content_type)
            else:  # pragma: no cover - _serve_batch gives every job a reply or an error
                req.conn.respond_error(req, InternalError("no answer was produced"))

    # inference (main thread) -------------------------------------------------------------
    def _inference_loop(self) -> None:
        jobs = self._jobs
        cap = max(1, self.config.max_batch_rows)
        while True:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < cap:
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            # a client that went away needs no answer
            self._serve_batch([_Job(r) for r in batch if r.conn.transport is not None])
            if stop:
                return

    def _deliver(self, jobs: list[_Job]) -> None:
        """Hand finished jobs to the event loop, which writes them (in each connection's order)."""
        ready = [job for job in jobs if not job.sent]
        if not ready:
            return
        for job in ready:
            job.sent = True
            reply = job.reply
            if reply is not None and not valid_media_type(reply.content_type):
                log.warning(
                    "the reply's content type %r is not a valid media type; sending %s",
                    reply.content_type[:100],
                    _FALLBACK_TYPE,
                )
                job.reply = Reply(reply.body, _FALLBACK_TYPE)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._write_replies, ready)

    def _serve_batch(self, jobs: list[_Job]) -> None:
        try:
            if self.handler.batchable and self.config.batching and len(jobs) > 1:
                self._invoke_batched(jobs)
            else:
                for job in jobs:
                    self._invoke_one(job)
                    self._deliver([job])
        except _Deadline:  # the timer fired between two calls: whatever is left timed out
            for job in jobs:
                if job.reply is None and job.error is None:
                    job.error = RequestTimeout(self._timeout_message)
        except Exception as exc:  # a bug of ours: these requests fail, the worker carries on
            log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc)))
            for job in jobs:
                if job.reply is None and job.error is None:
                    job.error = InternalError(f"{type(exc).__name__}: {exc}")
        finally:  # every job taken is answered, whatever happened above
            for job in jobs:
                if job.reply is None and job.error is None:
                    job.error = InternalError("the request was interrupted")
            self._deliver(jobs)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` bounded by SAGEMAKER_MODEL_SERVER_TIMEOUT (RequestTimeout after it)."""
        try:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.config.timeout)
            try:
                return fn(*args)
            finally:
                self._armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:
            raise RequestTimeout(self._timeout_message) from None

    def _invoke_one(self, job: _Job) -> None:
        req = job.request
        headers = req.headers
        try:
            job.reply = self._call(
                self.handler.invoke,
                req.body,
                headers.get("content-type") or headers.get("contenttype"),
                headers.get("accept"),
            )
        except ServingError as exc:
            job.error = exc
        except Exception as exc:  # a bug of ours must not take the worker down either
            log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc)))
            job.error = InternalError(f"{type(exc).__name__}: {exc}")

    def _invoke_batched(self, jobs: list[_Job]) -> None:
        """Decode each request, predict stacks of compatible arrays at once, encode each."""
        groups: dict[tuple[Any, ...], list[_Job]] = {}
        handler = self.handler
        for job in jobs:
            headers = job.request.headers
            try:
                job.accept = handler.negotiate(headers.get("accept"))
                ctype = media_type(
                    headers.get("content-type") or headers.get("contenttype"), "application/json"
                )
                job.data = self._call(handler.decode, job.request.body, ctype)
                job.records = handler.records(job.request.body, ctype)
            except ServingError as exc:
                job.error = exc
                self._deliver([job])
                continue
            data = job.data
            if isinstance(data, np.ndarray) and data.ndim >= 2 and len(data):
                key: tuple[Any, ...] = (data.dtype, data.shape[1:])
            else:
                key = ("single", id(job))
            groups.setdefault(key, []).append(job)
        for group in groups.values():
            self._predict_group(group)

    def _predict_group(self, group: list[_Job]) -> None:
        """Predict ``group`` in calls of at most CHAINER_SAGEMAKER_MAX_BATCH_ROWS rows."""
        limit = self.config.max_batch_rows
        chunks: list[list[_Job]] = [[]]
        rows = 0
        for job in group:
            size = len(job.data) if isinstance(job.data, np.ndarray) and job.data.ndim else 1
            if chunks[-1] and rows + size > limit:
                chunks.append([])
                rows = 0
            chunks[-1].append(job)
            rows += size
        for chunk in chunks:
            if len(chunk) > 1 and self._predict_together(chunk):
                continue
            for job in chunk:  # alone: one bad input cannot fail the others
                try:
                    self._finish(job, self._call(self.handler.predict, job.data))
                except ServingError as exc:
                    job.error = exc
                self._deliver([job])

    def _predict_together(self, chunk: list[_Job]) -> bool:
        """One predict call for ``chunk``; False (nothing set) if it must be done one by one."""
        sizes = [len(job.data) for job in chunk]
        try:
            out = self._call(self.handler.predict, np.concatenate([job.data for job in chunk]))
        except RequestTimeout as exc:
            for job in chunk:  # predicting each alone would take longer still
                job.error = exc
            self._deliver(chunk)
            return True
        except ServingError:
            return False  # maybe one bad input: the per-request path isolates it
        if not isinstance(out, np.ndarray) or len(out) != sum(sizes):
            return False
        offset = 0
        for job, size in zip(chunk, sizes, strict=True):
            self._finish(job, out[offset : offset + size])
            offset += size
        self._deliver(chunk)
        return True

    def _finish(self, job: _Job, prediction: Any) -> None:
        try:
            job.reply = self._call(self._encode, prediction, job)
        except ServingError as exc:
            job.error = exc

    def _encode(self, prediction: Any, job: _Job) -> Reply:
        return self.handler.encode(prediction, job.accept, records=job.records)

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

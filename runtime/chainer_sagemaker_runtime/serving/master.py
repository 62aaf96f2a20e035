"""The parent process: pre-forks the workers, reports readiness, replaces crashes, drains.

The user module is imported once here (after ``requirements.txt`` was installed), then each
worker is forked and calls ``model_fn`` itself, so heavy imports such as Chainer are paid once
and a model never crosses a fork. Each worker tells the parent over a pipe whether its model
loaded; ``/ping`` answers 200 only after every worker has said so (a shared byte the workers
read). A worker whose ``model_fn`` fails at start-up stops the whole server with that error. A
worker that dies later is replaced, with back-off if replacements keep dying.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import mmap
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field

from chainer_sagemaker_runtime.errors import RuntimeFailure
from chainer_sagemaker_runtime.serving.config import ServingConfig
from chainer_sagemaker_runtime.serving.handler import Handler, Hooks

__all__ = ["ModelLoadError", "PortInUse", "claim_port", "serve"]

log = logging.getLogger(__name__)

_READY = b"R"
_FAILED = b"F"
_MODEL_LOAD_EXIT = 3


class ModelLoadError(RuntimeFailure):
    """``model_fn`` raised (or the socket could not be opened) in a worker at start-up."""

    exit_code = 3


@dataclass
class _Child:
    pid: int
    pipe: int
    started: float
    ready: bool = False
    watched: bool = True  # registered with the selector
    message: bytearray = field(default_factory=bytearray)


def _worker_main(config: ServingConfig, hooks: Hooks, pipe: int, ready: mmap.mmap) -> int:
    """Runs in the forked child: load the model, open the socket, serve."""
    from chainer_sagemaker_runtime.serving.worker import Worker, listen_socket

    try:
        model = hooks.model_fn(str(config.model_dir))
        handler = Handler(hooks, model, config.default_accept, optimize=config.optimize_model)
    except BaseException as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        os.write(pipe, _FAILED + f"model_fn({str(config.model_dir)!r}) raised:\n{detail}".encode())
        return _MODEL_LOAD_EXIT
    try:
        sock = listen_socket(config.host, config.port)
    except OSError as exc:
        os.write(pipe, _FAILED + f"cannot listen on {config.host}:{config.port}: {exc}".encode())
        return _MODEL_LOAD_EXIT
    # Everything alive now (Chainer's modules, the model) lives as long as the worker: move it
    # out of the collector's sight, so that full collections stay short (p99 latency).
    gc.collect()
    gc.freeze()
    os.write(pipe, _READY)
    Worker(config, handler, ready).run(sock)
    return 0


class _Master:
    def __init__(self, config: ServingConfig, hooks: Hooks) -> None:
        self.config = config
        self.hooks = hooks
        self.children: dict[int, _Child] = {}
        self.ready = mmap.mmap(-1, 1)  # shared with every child: 1 once all have loaded
        self.selector = selectors.DefaultSelector()
        self.stop_requested = False
        self.failures_in_a_row = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ)

    # process management ------------------------------------------------------------------
    def spawn(self) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(read_end)
                self._become_child()
                code = _worker_main(self.config, self.hooks, write_end, self.ready)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.children[pid] = _Child(pid, read_end, time.monotonic())
        self.selector.register(read_end, selectors.EVENT_READ, pid)

    def _become_child(self) -> None:
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        for fd in [self._wake_r, self._wake_w, *(c.pipe for c in self.children.values())]:
            os.close(fd)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

        def on_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _reap(self) -> list[tuple[_Child, int]]:
        dead = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._read_pipe(child)
            if child.watched:
                self.selector.unregister(child.pipe)
            os.close(child.pipe)
            dead.append((child, os.waitstatus_to_exitcode(status)))
        return dead

    def _read_pipe(self, child: _Child) -> None:
        while True:
            try:
                chunk = os.read(child.pipe, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return
                raise
            if not chunk:  # the worker is gone; stop watching until it is reaped
                if child.watched:
                    self.selector.unregister(child.pipe)
                    child.watched = False
                return
            if not child.ready and chunk.startswith(_READY):
                child.ready = True
                chunk = chunk[1:]
            child.message += chunk
            if len(chunk) < 65536:
                return

    # main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        for _ in range(self.config.workers):
            self.spawn()
        starting = True
        respawn_at: float | None = None
        while not self.stop_requested:
            for key, _ in self.selector.select(timeout=1.0):
                if key.fd == self._wake_r:
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif key.data in self.children:
                    self._read_pipe(self.children[key.data])
            for child, code in self._reap():
                reason = bytes(child.message[1:]).decode(errors="replace") if child.message else ""
                if starting or (child.message[:1] == _FAILED and not self.ready[0]):
                    self._shutdown(grace=5)
                    raise ModelLoadError(
                        reason or f"a model server worker exited with code {code} during start-up"
                    )
                lived = time.monotonic() - child.started
                self.failures_in_a_row = self.failures_in_a_row + 1 if lived < 10 else 0
                delay = min(0.1 * 2**self.failures_in_a_row, 10.0) if self.failures_in_a_row else 0
                log.error(
                    "worker %d exited with code %d%s; starting a replacement in %.1f s",
                    child.pid,
                    code,
                    f": {reason}" if reason else "",
                    delay,
                )
                respawn_at = time.monotonic() + delay
            if respawn_at is not None and time.monotonic() >= respawn_at:
                while len(self.children) < self.config.workers:
                    self.spawn()
                respawn_at = None
            if starting and all(c.ready for c in self.children.values()):
                starting = False
                self.ready[0] = 1
                log.info(
                    "model server ready: %d workers on %s:%d",
                    len(self.children),
                    self.config.host,
                    self.config.port,
                )
        log.info("stopping: draining %d workers", len(self.children))
        self._shutdown(grace=self.config.timeout + 10)
        return 0

    def _shutdown(self, grace: float) -> None:
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
        while self.children:
            self._reap()
            time.sleep(0.01)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the parent dies (even by SIGKILL): no orphan keeps
    serving on the port after ``serve`` is gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM is all there is
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _resolve_port(config: ServingConfig) -> tuple[ServingConfig, socket.socket | None]:
    """Port 0 means "any": pick one now so that every worker binds the same port."""
    if config.port:
        return config, None
    from dataclasses import replace

    from chainer_sagemaker_runtime.serving.worker import listen_socket

    probe = listen_socket(config.host, 0)
    port = probe.getsockname()[1]
    return replace(config, port=port), probe


class PortInUse(RuntimeFailure):
    """Another process (another ``serve`` included) listens on the port."""

    exit_code = 4


def claim_port(config: ServingConfig) -> socket.socket:
    """Make sure the port is ours alone before any worker opens it.

    The workers share the port with ``SO_REUSEPORT``, which would just as well let a second
    ``serve`` (or any process of the same user) join in and answer part of the traffic. Two
    checks keep it ours: an abstract Unix socket named after the port, held for as long as
    ``serve`` runs, which a second ``serve`` in the same network namespace cannot bind (it
    also closes the window between the next check and the workers' binds); and a bind of the
    port *without* ``SO_REUSEPORT``, which fails while any other socket listens there.
    Returns the held socket; raises :class:`PortInUse`.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0chainer-sagemaker-serve:{config.port}")
    except OSError:
        lock.close()
        raise PortInUse(
            f"another serve is already running on port {config.port}; stop it first, or set "
            "SAGEMAKER_BIND_TO_PORT (or --port) to a free port"
        ) from None
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            lock.close()
            raise PortInUse(
                f"port {config.port} on {config.host} is in use by another process ({exc}); "
                "stop it, or set SAGEMAKER_BIND_TO_PORT (or --port) to a free port"
            ) from None
    return lock


def serve(config: ServingConfig, hooks: Hooks) -> int:
    """Run the model server until SIGTERM; the exit code of ``serve``."""
    config, probe = _resolve_port(config)
    if probe is not None:
        probe.close()
    lock = claim_port(config)
    try:
        print(f"serve: {config.workers} workers on {config.host}:{config.port}", flush=True)
        return _Master(config, hooks).run()
    finally:
        lock.close()

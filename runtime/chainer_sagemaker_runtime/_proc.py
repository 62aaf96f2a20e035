"""The one way the runtime starts processes: argv lists, never a shell.

Three things live here because every phase of ``train`` needs them:

* :data:`stops`, the stop controller. ``train`` installs its SIGTERM/SIGINT handler on the first
  line of ``main()`` (as PID 1 the kernel drops a signal that has no handler). The handler never
  raises in the middle of a spawn: it records the signal and the phase, wakes the waits, and asks
  every running :class:`Child` to stop; only inside a phase marked ``interruptible`` (pure Python
  work such as downloading or extracting) does it raise :class:`Stopped` at once.
* :class:`Child`: a command in its own process group whose stderr (and optionally stdout) is
  pumped in chunks with ``os.read``, byte for byte (``\\r`` progress bars pass at once), into a
  bounded tail buffer and on to our own stream. A broken sink (EPIPE) never blocks the child: the
  pump keeps draining and drops the bytes (a slow one slows it, as a direct write would). Its
  wait escalates SIGTERM to SIGKILL after the grace, and when the group leader exits the rest of
  its group is ended.
* :func:`reap_orphans`: as PID 1, ``train`` is the parent of every orphan (Open MPI's daemon
  that sshd leaves behind, a script's daemonised helpers) and reaps them, never its own children.

Hand-written rather than a library: the standard library's subprocess has no phase-aware stop
and its line-based pipes are what broke ``\\r`` output and memory on long lines.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Child",
    "Stopped",
    "Stops",
    "format_command",
    "proc_children",
    "reap_orphans",
    "run_checked",
    "stops",
]

TAIL_BYTES = 64 * 1024
CHUNK = 64 * 1024
# What the pump holds for a slow sink before the child has to wait for it.
QUEUE_LIMIT = 4 * 1024 * 1024
# How long a setup-phase child (pip) gets between SIGTERM and SIGKILL, at most.
SETUP_GRACE_SECONDS = 10.0
# After SIGKILL of the ranks, how long mpirun gets before its whole group is killed.
AFTER_KILL_SECONDS = 5.0


def format_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _raw_log(message: str) -> None:
    """Write to fd 2 without Python's buffered stream (safe inside a signal handler)."""
    with contextlib.suppress(OSError):
        os.write(2, f"[train] {message}\n".encode("utf-8", "replace"))


class Stopped(BaseException):
    """SIGTERM/SIGINT asked ``train`` to stop during ``phase``; a BaseException so that no
    ``except Exception`` in fetch or extraction code swallows it."""

    def __init__(self, signum: int, phase: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} during {phase}")
        self.signum = signum
        self.phase = phase


class Stops:
    """The stop controller of one ``train`` process (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: float | None = None
        self.stop_phase: str | None = None
        self.current = "start-up"
        self.grace = 115.0
        self.limit_at: float | None = None
        self.limit_name: str | None = None
        self.timed_out: str | None = None
        # Set when the master tells this worker host that the job's MPI run has ended
        # (SIGUSR1, sent over SSH by ``ranks.job_ended_argv``): the worker's waits end at once.
        self.master_ended = False
        self._interruptible = False
        self._children: dict[int, Child] = {}
        self._rfd = -1
        self._wfd = -1

    # ------------------------------------------------------------------ signals
    def install(self) -> None:
        """Start afresh and install the handlers; call on the first line of ``main()``."""
        self.signum = self.stopped_at = self.stop_phase = self.timed_out = None
        self.master_ended = False
        self.current = "start-up"
        if self._wfd < 0:
            self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)
        signal.signal(signal.SIGUSR1, self._handle_master_ended)

    def deliver(self, signum: int) -> None:
        """Act on ``signum`` as if it arrived now (one held since before :meth:`install`)."""
        self._handle(signum, None)

    def _handle_master_ended(self, _signum: int, _frame: object) -> None:
        self.master_ended = True
        self.wake()

    def _handle(self, signum: int, _frame: object) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
            self.stopped_at = time.monotonic()
            self.stop_phase = self.current
            _raw_log(
                f"received {signal.Signals(signum).name} during {self.current}; stopping "
                f"(grace {self.grace:g} s)"
            )
        self.wake()
        if first:
            for child in list(self._children.values()):
                with contextlib.suppress(Exception):
                    child.request_stop()
            if self._interruptible:
                raise Stopped(signum, self.current)

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Stopped` when a stop was requested (call between steps)."""
        if self.signum is not None:
            raise Stopped(self.signum, self.stop_phase or self.current)

    def wake(self) -> None:
        if self._wfd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wfd, b"x")

    def _drain(self) -> None:
        if self._rfd >= 0:
            with contextlib.suppress(OSError):
                while os.read(self._rfd, 4096):
                    pass

    def wait_readable(self, fds: Sequence[int], timeout: float) -> None:
        """Sleep up to ``timeout`` s, returning early when ``fds`` or a signal need attention."""
        watch = [fd for fd in fds if fd >= 0]
        if self._rfd >= 0:
            watch.append(self._rfd)
        if watch:
            with contextlib.suppress(OSError, ValueError):
                select.select(watch, [], [], max(timeout, 0.0))
        else:
            time.sleep(max(timeout, 0.0))
        self._drain()

    def sleep(self, seconds: float) -> None:
        """Sleep, returning early on a stop request (then raising :class:`Stopped`)."""
        self.check()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.wait_readable([], min(left, 0.5))
            reap_orphans()
            self.check()

    # ------------------------------------------------------------------ phases
    @contextlib.contextmanager
    def phase(
        self,
        name: str,
        *,
        interruptible: bool = False,
        time_limit: float | None = None,
        limit_name: str | None = None,
        announce: bool = False,
    ) -> Iterator[None]:
        """Run a phase: its name goes into the stop message; ``interruptible`` lets the handler
        raise in it; ``time_limit`` (named by ``limit_name``) stops its children when exceeded.
        A phase does not start once a stop was requested (raises :class:`Stopped`)."""
        self.check()
        if announce:
            _raw_log(f"{name}")
        previous = (self.current, self._interruptible, self.limit_at, self.limit_name)
        self.current = name
        self.limit_at = None if time_limit is None else time.monotonic() + time_limit
        self.limit_name = limit_name
        self._interruptible = interruptible
        try:
            yield
        finally:
            self._interruptible = previous[1]
            self.current, self.limit_at, self.limit_name = previous[0], previous[2], previous[3]

    # ------------------------------------------------------------------ children
    def register(self, child: Child) -> None:
        self._children[child.pid] = child
        if self.signum is not None:  # the signal came while this child was being spawned
            child.request_stop()

    def unregister(self, child: Child) -> None:
        self._children.pop(child.pid, None)

    def known_pids(self) -> set[int]:
        return set(self._children)


stops = Stops()


# ---------------------------------------------------------------------- process table
def _stat(pid: str) -> tuple[int, str, str] | None:
    """(ppid, state, comm) of a process, from /proc/<pid>/stat; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    head, _, rest = raw.rpartition(b")")
    fields = rest.split()
    if len(fields) < 2:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    return int(fields[1]), fields[0].decode(), comm


def proc_children(parent: int | None = None) -> list[tuple[int, int, str, str]]:
    """(pid, ppid, state, comm) of every process (whose parent is ``parent``, when given)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        info = _stat(name)
        if info is None or (parent is not None and info[0] != parent):
            continue
        found.append((int(name), *info))
    return found


def reap_orphans() -> int:
    """As PID 1, reap zombie children that are not ours to wait for; return how many."""
    if os.getpid() != 1:
        return 0
    known = stops.known_pids()
    reaped = 0
    for pid, _ppid, state, _comm in proc_children(1):
        if state == "Z" and pid not in known:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped


def signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


# ---------------------------------------------------------------------- the pump
class Pump:
    """Copy one pipe to one fd in chunks, keeping the last ``tail_bytes`` bytes.

    A reader thread queues chunks for a writer thread. A slow sink slows the child down once
    ``QUEUE_LIMIT`` bytes wait (back-pressure, as if it wrote to the sink itself); a broken
    sink (EPIPE, EBADF, EIO) never does: from then on the reader keeps draining the child's
    pipe and drops the bytes. ``on_data`` sees every chunk (tails, line observers).
    """

    def __init__(
        self,
        source: int,
        sink: int,
        *,
        tail_bytes: int = TAIL_BYTES,
        on_data: Callable[[bytes], None] | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._tail_bytes = tail_bytes
        self._tail = bytearray()
        self._on_data = on_data
        self._queue: collections.deque[bytes | None] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self.dropped = 0
        self.broken = False
        self.last_data = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True, name="pump-read")
        self._writer = threading.Thread(target=self._write, daemon=True, name="pump-write")
        self._reader.start()
        self._writer.start()

    def _read(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._source, CHUNK)
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.last_data = time.monotonic()
                self._tail += data
                if len(self._tail) > 2 * self._tail_bytes:
                    del self._tail[: -self._tail_bytes]
                if self._on_data is not None:
                    with contextlib.suppress(Exception):
                        self._on_data(data)
                with self._cond:
                    if self._sink < 0:
                        continue
                    # A slow sink slows the child (as writing to it directly would); a broken
                    # one never does: its bytes are dropped.
                    while (
                        not self.broken and self._queued and self._queued + len(data) > QUEUE_LIMIT
                    ):
                        self._cond.wait(1.0)
                    if self.broken:
                        self.dropped += len(data)
                        continue
                    self._queue.append(data)
                    self._queued += len(data)
                    self._cond.notify()
        finally:
            with contextlib.suppress(OSError):
                os.close(self._source)
            with self._cond:
                self._queue.append(None)
                self._cond.notify()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                data = self._queue.popleft()
                if data is not None:
                    self._queued -= len(data)
                    self._cond.notify_all()
            if data is None:
                return
            view = memoryview(data)
            while view and not self.broken:
                try:
                    view = view[os.write(self._sink, view) :]
                except InterruptedError:  # pragma: no cover
                    continue
                except OSError:
                    with self._cond:
                        self.broken = True
                        self.dropped += len(view) + self._queued
                        self._queue = collections.deque(
                            item for item in self._queue if item is None
                        )
                        self._queued = 0
                        self._cond.notify_all()

    def tail(self) -> bytes:
        return bytes(self._tail[-self._tail_bytes :])

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._reader.join(max(deadline - time.monotonic(), 0))
        self._writer.join(max(deadline - time.monotonic(), 0))


# ---------------------------------------------------------------------- Child
class Child:
    """A running command in its own process group, registered with :data:`stops`.

    ``on_stop`` is called (repeatedly, while the child runs, so that processes it starts later
    are reached too) once a stop is requested; the default sends SIGTERM to the group once.
    ``on_kill`` runs when ``grace`` seconds have passed since the stop; the default SIGKILLs
    the group. ``on_tick`` runs on every turn of the wait loop (watchdogs).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        grace: float | None = None,
        pump_stdout: bool = False,
        on_stderr: Callable[[bytes], None] | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stop: Callable[[Child], None] | None = None,
        on_kill: Callable[[Child], None] | None = None,
        on_tick: Callable[[Child], None] | None = None,
        tail_bytes: int = TAIL_BYTES,
        echo: bool = True,
    ) -> None:
        self.argv = list(argv)
        self.grace = min(stops.grace, SETUP_GRACE_SECONDS) if grace is None else grace
        self._on_stop = on_stop
        self._on_kill = on_kill
        self._on_tick = on_tick
        self._stop_sent = False
        self.killed = False
        self._killed_at: float | None = None
        self._stop_started: float | None = None
        self.extra: dict[str, Any] = {}
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC) if pump_stdout else (-1, -1)
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out_w if pump_stdout else None,
                stderr=err_w,
                start_new_session=True,
            )
        except BaseException:
            for fd in (err_r, err_w, out_r, out_w):
                if fd >= 0:
                    os.close(fd)
            raise
        os.close(err_w)
        if out_w >= 0:
            os.close(out_w)
        stops.register(self)  # a stop that came during the spawn is applied here
        self.err = Pump(err_r, 2 if echo else -1, tail_bytes=tail_bytes, on_data=on_stderr)
        self.out = Pump(out_r, 1, tail_bytes=4096, on_data=on_stdout) if out_r >= 0 else None
        self._pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def last_output(self) -> float:
        return max(self.err.last_data, self.out.last_data if self.out else 0.0)

    def stderr_tail(self) -> str:
        return self.err.tail().decode("utf-8", "replace")

    def signal_group(self, signum: int) -> None:
        signal_group(self._proc.pid, signum)

    def request_stop(self) -> None:
        """Ask the child to stop (from the signal handler or the wait loop)."""
        if self._on_stop is not None:
            self._on_stop(self)
        elif not self._stop_sent:
            self.signal_group(signal.SIGTERM)
        self._stop_sent = True

    def stop_alone(self, grace: float) -> None:
        """Stop this child as a stop request would (``on_stop`` now and on every turn of the
        wait loop, ``on_kill`` ``grace`` seconds later), without stopping the job: for
        watchdogs, which must not signal a launcher that handles SIGTERM badly (mpirun)."""
        if self._stop_started is None:
            self._stop_started = time.monotonic()
            self.grace = min(self.grace, grace)
        self.request_stop()

    def kill(self) -> None:
        if self._on_kill is not None and not self.killed:
            self._on_kill(self)
        else:
            self.signal_group(signal.SIGKILL)
        self.killed = True
        self._killed_at = time.monotonic()

    def _escalate(self, now: float) -> float:
        """Apply the stop, time-limit and kill rules; return how long the loop may sleep."""
        delay = 0.5
        if self._stop_started is None:
            if stops.signum is not None:
                self._stop_started = stops.stopped_at or now
            elif stops.limit_at is not None and now >= stops.limit_at:
                stops.timed_out = stops.limit_name or stops.current
                _raw_log(f"{stops.timed_out}: time limit exceeded; stopping it")
                self.signal_group(signal.SIGTERM)
                self._stop_started = now
            elif stops.limit_at is not None:
                delay = min(delay, stops.limit_at - now)
        if self._stop_started is None:
            return max(delay, 0.01)
        if stops.signum is not None or self._stop_sent:  # the job's stop, or stop_alone
            self.request_stop()
        if not self.killed:
            kill_at = self._stop_started + self.grace
            if now >= kill_at:
                _raw_log(
                    f"{os.path.basename(self.argv[0])} did not exit {self.grace:g} s after the "
                    "stop request; killing it"
                )
                self.kill()
            else:
                delay = min(delay, kill_at - now)
        elif self._killed_at is not None and now >= self._killed_at + AFTER_KILL_SECONDS:
            self.signal_group(signal.SIGKILL)
        return max(delay, 0.01)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child (stop-aware; see the class docstring); return its returncode."""
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while self._proc.poll() is None:
                now = time.monotonic()
                delay = self._escalate(now)
                if self._on_tick is not None:
                    self._on_tick(self)
                if end is not None:
                    if now >= end:
                        raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
                    delay = min(delay, end - now)
                if self._pidfd < 0:  # no pidfd (old kernel): poll
                    delay = min(delay, 0.05)
                stops.wait_readable([self._pidfd] if self._pidfd >= 0 else [], delay)
                reap_orphans()
        finally:
            if self._proc.returncode is not None:
                self._finish()
        return self._proc.returncode

    def _finish(self) -> None:
        # The leader is gone: end the rest of its group, so nothing outlives the job's step.
        signal_group(self._proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while _group_alive(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        signal_group(self._proc.pid, signal.SIGKILL)
        self.err.join(5.0)
        if self.out is not None:
            self.out.join(5.0)
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = -1
        stops.unregister(self)
        reap_orphans()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    # Zombies still count for kill(0); look for a live member.
    return any(state != "Z" and _pgid(pid) == pgid for pid, _, state, _ in proc_children())


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def run_checked(
    argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run to completion (stop-aware and time-limited by the current phase); return
    (exit code, stderr tail)."""
    child = Child(argv, cwd=cwd, env=env)
    code = child.wait()
    return code, child.stderr_tail()

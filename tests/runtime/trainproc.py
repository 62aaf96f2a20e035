"""Running the real `train` as a live process for signal tests: plainly, or as PID 1.

`unshare --pid --fork --mount-proc` runs `train` as PID 1 of a new PID namespace, as
`docker run IMAGE train` does, without Docker. ``--net`` also gives it its own network
namespace (only loopback, brought up here), so an sshd it starts binds port 22 there only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from jobtree import BIN

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


class TrainProc:
    """A running `train` whose stderr is collected as bytes by a thread."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        pid1: bool = False,
        net: bool = False,
        cwd: Path | None = None,
        stderr: int | None = None,
    ) -> None:
        train = str(BIN / "train")
        if pid1:
            inner = f"exec {train}"
            if net:
                inner = f"ip link set lo up && {inner}"
            argv = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]
            argv += ["--net"] if net else []
            argv += ["sh", "-c", inner]
        else:
            argv = [train]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if stderr is None else stderr,
        )
        self.pid1 = pid1
        self.err = bytearray()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        if self.proc.stderr is not None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while data := os.read(fd, 65536):
            with self._lock:
                self.err += data

    @property
    def stderr(self) -> str:
        with self._lock:
            return self.err.decode("utf-8", "replace")

    def train_pid(self, timeout: float = 10) -> int:
        """The pid (in our namespace) of `train` itself: unshare's child when PID 1."""
        if not self.pid1:
            return self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = children_of(self.proc.pid)
            for pid in kids:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "train":
                    return pid
            time.sleep(0.02)
        raise AssertionError("train never started inside its PID namespace")

    def wait_for(self, text: str, timeout: float = 30) -> float:
        """Wait until ``text`` is in stderr; return the time it took since start."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                time.sleep(0.2)
                if text in self.stderr:
                    break
                raise AssertionError(f"{text!r} never appeared; stderr:\n{self.stderr[-3000:]}")
            time.sleep(0.01)
        return time.monotonic() - self.started

    def signal(self, signum: int = signal.SIGTERM) -> None:
        os.kill(self.train_pid(), signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.pid1:
                os.kill(self.train_pid(timeout=1), signal.SIGKILL)
            self.proc.kill()
        self.proc.wait(10)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(b")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line mentions ``text``."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != b"Z":
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode("utf-8", "replace")))
    return found


def assert_nothing_left(text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


@contextlib.contextmanager
def hanging_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback TCP server that accepts connections and never answers (a dead index)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        done.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)

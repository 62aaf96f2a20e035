"""The multi-host side of MPI jobs (docs/contract.md §2): sshd, reachability waits, the worker.

Every host runs ``train``. The master (``hosts[0]``) starts sshd, waits until it can reach
every worker over SSH, then runs mpirun. A worker starts sshd, waits for the master, then waits
while MPI's daemon (``orted``, or ``prted`` on Open MPI 5) runs on it, and exits 0: the master's
result is the job's result. Only multi-host jobs come here; a single-host job never needs its
own host name to resolve.

When its mpirun has ended, the master tells every worker so over SSH (SIGUSR1 to the worker's
``train``, see ``ranks.job_ended_argv``), and the worker ends at once: a run shorter than the
worker's poll interval leaves no daemon for it to see, and without that notice the worker could
not tell a finished master from one that died before starting MPI.

The worker's wait is bounded by the master: it holds one TCP connection to the master's sshd
(a connection per probe would put two log lines a second into the master's sshd log) and, when
that connection ends and a new one is refused, the master is gone; the worker then ends its
local ranks and exits within seconds instead of waiting out Open MPI. Zombie daemons (as PID 1
``train`` adopts the ``orted`` that sshd leaves behind) do not count as running.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chainer_sagemaker_runtime._proc import Child, reap_orphans, stops
from chainer_sagemaker_runtime.errors import RuntimeFailure
from chainer_sagemaker_runtime.training.ranks import RankStopper, under_daemon

__all__ = [
    "ClusterError",
    "MasterWatch",
    "mpi_daemon_running",
    "start_sshd",
    "wait_for_hosts",
    "wait_for_mpi_daemon",
    "wait_seconds",
]

SSH_PORT = 22
_DAEMON_NAMES = frozenset({"orted", "prted"})


class ClusterError(RuntimeFailure):
    """Hosts of a multi-host job could not reach each other."""


def _log(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"[train] {message}", file=sys.stderr, flush=True)


def start_sshd(sshd: str = "/usr/sbin/sshd") -> Child:
    """Start sshd in the foreground, in its own process group (stopped with the job).

    A stop request leaves it running: the ranks' connections go through it until they end.
    """
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    if not Path(sshd).exists():
        raise ClusterError(
            f"{sshd} does not exist: multi-host MPI needs OpenSSH's server in the image "
            "(runtime/docker/install.sh installs openssh-server)"
        )
    # Its parent, `train`, is what a stop relayed over SSH reaches (ranks.stop_this_host).
    return Child([sshd, "-D", "-e"], on_stop=lambda _c: None, grace=5.0)


def stop_sshd(sshd: Child | None) -> None:
    if sshd is None or sshd.returncode is not None:
        return
    sshd.signal_group(signal.SIGTERM)
    try:
        sshd.wait(timeout=5)
    except subprocess.TimeoutExpired:
        sshd.signal_group(signal.SIGKILL)
        sshd.wait(timeout=5)


def can_connect(host: str, port: int = SSH_PORT, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def can_ssh(host: str, timeout: float = 10.0) -> bool:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host, "true"]
    try:
        child = Child(argv, echo=False, grace=1.0)
    except OSError:
        return False
    try:
        return child.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        child.signal_group(signal.SIGKILL)
        child.wait(timeout=5)
        return False


def wait_for_hosts(
    hosts: Iterable[str],
    *,
    timeout: float,
    port: int = SSH_PORT,
    check: Callable[[str], bool] | None = None,
    interval: float = 1.0,
    until: Callable[[], bool] | None = None,
) -> None:
    """Wait until every host answers on ``port`` (and passes ``check``), or until ``until()``
    is true; else name the hosts that did not answer."""
    pending = list(hosts)
    deadline = time.monotonic() + timeout
    while pending:
        if until is not None and until():
            return
        pending = [h for h in pending if not (can_connect(h, port) and (check is None or check(h)))]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"hosts {pending} did not answer on port {port} within {timeout:.0f} s; every host "
                "of a multi-host job must run this image's `train` (which starts sshd) on the "
                "same network"
            )
        stops.sleep(interval)


def mpi_daemon_running(proc: Path = Path("/proc")) -> bool:
    """True while a live (not zombie) Open MPI daemon process runs on this host."""
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in _DAEMON_NAMES:
                continue
            stat = entry / "stat"
            if stat.exists() and stat.read_bytes().rpartition(b")")[2].split()[:1] == [b"Z"]:
                continue
            return True
        except OSError:
            continue
    return False


class MasterWatch:
    """Is the master still there? One held TCP connection to its sshd (see the module doc)."""

    def __init__(self, host: str, port: int = SSH_PORT, timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> bool:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            return True
        except OSError:
            self._sock = None
            return False

    def alive(self) -> bool:
        if self._sock is None:
            return self._connect()
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            closed = bool(readable) and not self._sock.recv(4096)
        except OSError:
            closed = True
        if closed:
            self.close()
            return self._connect()
        return True

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def wait_for_mpi_daemon(
    master: str,
    *,
    start_timeout: float,
    interval: float = 1.0,
    running: Callable[[], bool] = mpi_daemon_running,
    master_alive: Callable[[], bool] | None = None,
    grace: float | None = None,
) -> str:
    """Worker side: wait for the MPI daemon to start, then until it has finished.

    Raises when no daemon starts within ``start_timeout`` or the master goes away before one
    does (or :class:`Stopped` on SIGTERM then). Once MPI runs here, returns ``"finished"`` when
    the daemon ends, ``"master-gone"`` when the master went away (local ranks ended), and
    ``"stopped"`` after a stop request (local ranks got SIGTERM and up to ``grace`` seconds).
    """
    watch = MasterWatch(master) if master_alive is None else None
    alive = master_alive or (watch.alive if watch is not None else (lambda: True))
    try:
        deadline = time.monotonic() + start_timeout
        while not running():
            # A stop before MPI reached this host ends the wait; once the daemon runs (checked
            # first, so a signal that races its start still reaches the ranks) it is phase two.
            stops.check()
            if stops.master_ended:  # a run too short to see here, announced by the master
                return "finished"
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no MPI process was started on this host by {master} within "
                    f"{start_timeout:.0f} s; see the master host's log for its failure"
                )
            if not alive():
                raise ClusterError(f"the master host {master} went away before starting MPI")
            stops.wait_readable([], interval)
            reap_orphans()
        return _while_daemon_runs(master, running, alive, interval, grace)
    finally:
        if watch is not None:
            watch.close()


def _while_daemon_runs(
    master: str,
    running: Callable[[], bool],
    alive: Callable[[], bool],
    interval: float,
    grace: float | None,
) -> str:
    ranks = RankStopper(under_daemon)
    grace = stops.grace if grace is None else grace
    ending: str | None = None
    end_by: float | None = None
    killed = False
    while running():
        now = time.monotonic()
        if ending is None and stops.stopping:
            ending, end_by = "stopped", (stops.stopped_at or now) + grace
            _log(f"stopping the MPI processes on this host (grace {grace:g} s)")
        elif ending is None and not alive():
            ending, end_by = "master-gone", now + 2.0
            _log(f"the master host {master} went away; ending the MPI processes on this host")
        if ending is not None:
            ranks()
            if end_by is not None and now >= end_by and not killed:
                ranks.kill()
                for pid, _ppid, _state, _comm in _daemons():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
        stops.wait_readable([], min(interval, 0.25) if ending else interval)
        reap_orphans()
    reap_orphans()
    return ending or "finished"


def _daemons() -> list[tuple[int, int, str, str]]:
    from chainer_sagemaker_runtime._proc import proc_children

    return [p for p in proc_children() if p[3] in _DAEMON_NAMES and p[2] != "Z"]


def wait_seconds(name: str, default: float, *, allow_zero: bool = True) -> float:
    """A number of seconds from the environment: finite and >= 0 (> 0 unless ``allow_zero``),
    else ``default`` and a log line naming the value."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        _log(f"{name}={raw!r} is not a finite number of seconds >= 0; using {default:g}")
        return default
    return value

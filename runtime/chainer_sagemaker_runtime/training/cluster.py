"""The multi-host side of MPI jobs (CONTRACT.md §2): sshd, reachability waits, the worker wait.

Every host runs ``train``. The master (``hosts[0]``) starts sshd, waits until it can reach
every worker over SSH, then runs mpirun. A worker starts sshd, waits for the master, then waits
while MPI's daemon (``orted``, or ``prted`` on Open MPI 5) runs on it, and exits 0: the master's
result is the job's result. Only multi-host jobs come here; a single-host job never needs its
own host name to resolve.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chainer_sagemaker_runtime.errors import RuntimeFailure

__all__ = [
    "ClusterError",
    "mpi_daemon_running",
    "start_sshd",
    "wait_for_hosts",
    "wait_for_mpi_daemon",
]

SSH_PORT = 22
_DAEMON_NAMES = frozenset({"orted", "prted"})


class ClusterError(RuntimeFailure):
    """Hosts of a multi-host job could not reach each other."""


def start_sshd(sshd: str = "/usr/sbin/sshd") -> subprocess.Popen[bytes]:
    """Start sshd in the foreground of a child process (so it ends with us)."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    if not Path(sshd).exists():
        raise ClusterError(
            f"{sshd} not found: multi-host MPI needs OpenSSH's server in the image "
            "(runtime/docker/install.sh installs openssh-server)"
        )
    return subprocess.Popen([sshd, "-D", "-e"], stdin=subprocess.DEVNULL)


def can_connect(host: str, port: int = SSH_PORT, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def can_ssh(host: str, timeout: float = 10.0) -> bool:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host, "true"]
    try:
        return (
            subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_for_hosts(
    hosts: Iterable[str],
    *,
    timeout: float,
    port: int = SSH_PORT,
    check: Callable[[str], bool] | None = None,
    interval: float = 1.0,
) -> None:
    """Wait until every host answers on ``port`` (and passes ``check``); else name the rest."""
    pending = list(hosts)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [h for h in pending if not (can_connect(h, port) and (check is None or check(h)))]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"hosts {pending} did not answer on port {port} within {timeout:.0f} s; every host "
                "of a multi-host job must run this image's `train` (which starts sshd) on the "
                "same network"
            )
        time.sleep(interval)


def mpi_daemon_running(proc: Path = Path("/proc")) -> bool:
    """True while an Open MPI daemon process runs on this host."""
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in _DAEMON_NAMES:
                return True
        except OSError:
            continue
    return False


def wait_for_mpi_daemon(
    master: str,
    *,
    start_timeout: float,
    interval: float = 1.0,
    running: Callable[[], bool] = mpi_daemon_running,
    master_alive: Callable[[], bool] | None = None,
) -> None:
    """Worker side: wait for the MPI daemon to start, then until it has finished.

    Gives up (raising) when no daemon starts within ``start_timeout`` or the master goes away
    before one does, so a worker never outlives a failed master by long.
    """
    alive = master_alive or (lambda: can_connect(master))
    deadline = time.monotonic() + start_timeout
    while not running():
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"no MPI process was started on this host by {master} within "
                f"{start_timeout:.0f} s; see the master host's log for its failure"
            )
        if not alive():
            raise ClusterError(f"the master host {master} went away before starting MPI")
        time.sleep(interval)
    while running():
        time.sleep(interval)


def wait_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default

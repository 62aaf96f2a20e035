"""The multi-host waits of MPI jobs, against real sockets and a process table laid out on disk."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from chainer_sagemaker_runtime.training.cluster import (
    ClusterError,
    MasterWatch,
    mpi_daemon_running,
    wait_for_hosts,
    wait_for_mpi_daemon,
    wait_seconds,
)


def test_waits_until_a_host_starts_listening() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    timer = threading.Timer(0.5, server.listen)
    timer.start()
    try:
        started = time.monotonic()
        wait_for_hosts(["127.0.0.1"], port=port, timeout=10, interval=0.1)
        assert time.monotonic() - started >= 0.4
    finally:
        timer.cancel()
        server.close()


def test_names_the_hosts_that_never_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=r"hosts \['127.0.0.1'\] did not answer on port"):
        wait_for_hosts(["127.0.0.1"], port=port, timeout=0.3, interval=0.1)


def _proc(root: Path, names: list[str]) -> Path:
    """A /proc-like table: one numbered directory with `comm` and `stat` files per process;
    a name ending in ':Z' is a zombie."""
    for pid, entry in enumerate(names, start=100):
        name, _, state = entry.partition(":")
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "comm").write_text(name + "\n")
        (root / str(pid) / "stat").write_text(f"{pid} ({name}) {state or 'S'} 1 {pid} {pid}\n")
    (root / "self").mkdir()
    return root


@pytest.mark.parametrize(
    ("names", "running"),
    [
        (["bash", "python"], False),
        (["bash", "orted"], True),
        (["prted"], True),
        (["orted:Z"], False),  # the zombie PID 1 adopted from sshd is not a running daemon
        (["orted:Z", "orted"], True),
    ],
)
def test_recognises_open_mpi_daemons(tmp_path: Path, names: list[str], running: bool) -> None:
    assert mpi_daemon_running(_proc(tmp_path, names)) is running


def test_worker_waits_for_the_daemon_to_start_and_finish() -> None:
    states = iter([False, False, True, True, False])
    wait_for_mpi_daemon(
        "algo-1",
        start_timeout=5,
        interval=0.01,
        running=lambda: next(states),
        master_alive=lambda: True,
    )


def test_worker_gives_up_when_the_master_goes_away() -> None:
    with pytest.raises(ClusterError, match="master host algo-1 went away"):
        wait_for_mpi_daemon(
            "algo-1",
            start_timeout=5,
            interval=0.01,
            running=lambda: False,
            master_alive=lambda: False,
        )


def test_worker_gives_up_when_no_daemon_starts_in_time() -> None:
    with pytest.raises(ClusterError, match="no MPI process was started"):
        wait_for_mpi_daemon(
            "algo-1",
            start_timeout=0.05,
            interval=0.01,
            running=lambda: False,
            master_alive=lambda: True,
        )


def test_master_watch_holds_one_connection_and_sees_the_master_go() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    watch = MasterWatch("127.0.0.1", port)
    try:
        assert watch.alive()
        conn, _ = server.accept()
        conn.sendall(b"SSH-2.0-test\r\n")
        for _ in range(5):  # probing again reuses the held connection: no new accept
            assert watch.alive()
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
        conn.close()
        server.close()  # the master's sshd is gone: connection ended, reconnect refused
        time.sleep(0.1)
        assert not watch.alive()
    finally:
        watch.close()
        server.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("7.5", 7.5), ("0", 0.0), ("nan", 115.0), ("inf", 115.0), ("-1", 115.0), ("x", 115.0)],
)
def test_grace_values_must_be_finite_and_not_negative(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: float, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGEMAKER_SIGTERM_GRACE_SECONDS", raw)
    assert wait_seconds("SAGEMAKER_SIGTERM_GRACE_SECONDS", 115.0) == expected
    if expected == 115.0:
        assert f"SAGEMAKER_SIGTERM_GRACE_SECONDS={raw!r} is not a finite number" in (
            capsys.readouterr().err
        )

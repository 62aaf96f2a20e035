"""Hosts of a multi-host local job as Linux namespaces: one "instance" per host, on one bridge.

Each host is one process tree started by ``unshare --net --pid --fork --mount-proc --uts --ipc
--mount``: its own network namespace (loopback, and ``eth0``, one end of a veth pair whose
other end is on the job's bridge), its own PID namespace (the runtime's ``train`` is PID 1, as
in a container), its own hostname, and a private mount namespace in which the host's own files
(:mod:`.hosts`) are bound over ``/opt/ml``, ``/etc/hosts``, ``/etc/hostname``, ``/etc/ssh``,
``/root/.ssh`` and root's ``.bashrc``/``.profile``, with fresh ``/run`` and ``/dev/shm``.
Where ``/opt/ml`` (or ``/root/.ssh``) does not exist on this machine, its parent is covered by
an overlay inside the host's mount namespace, so nothing is created on the machine's own file
system.

The bridge lives in a network namespace of its own, held open by a ``sleep`` process: nothing
is added to this machine's network, and every run can use the same subnet. Nothing is named
either (no ``ip netns`` entries): the namespaces exist only as long as their processes, and
every process started here dies with local mode (``PR_SET_PDEATHSIG``; ``unshare
--kill-child``), so even a run killed with SIGKILL leaves no namespace, veth, bridge, mount or
process behind.

This is written against the ``unshare``/``nsenter``/``ip`` commands (util-linux, iproute2)
rather than a Python library: they are on every Linux machine the runtime's image needs, and no
maintained Python package wraps network namespaces, veths and mounts together.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chainer_sagemaker_cdk.local._commands import LocalModeError
from chainer_sagemaker_cdk.local.hosts import PREFIX_LENGTH, HostLayout

__all__ = ["HostRun", "NamespaceCluster", "NamespacesUnavailable", "namespaces_unavailable"]

_TOOLS = ("unshare", "nsenter", "ip", "mount", "hostname", "ssh", "ssh-keygen")
_SSHD = "/usr/sbin/sshd"
_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT = 10.0


class NamespacesUnavailable(LocalModeError):
    """This machine cannot run a job's hosts as namespaces; the message says why and what to do."""


def namespaces_unavailable() -> str | None:
    """Why hosts cannot be namespaces here, or None when they can (root, the tools, a probe)."""
    if sys.platform != "linux":
        return "hosts as namespaces need Linux"
    if os.geteuid() != 0:
        return (
            "hosts as namespaces need root (network namespaces, a veth pair per host, a bridge "
            "and bind mounts); run local mode as root"
        )
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if not Path(_SSHD).exists():
        missing.append(_SSHD)
    if missing:
        return f"missing commands {missing} (util-linux, iproute2, openssh-server/-client)"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--uts", "--ipc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"creating namespaces failed here: {probe.stderr.strip() or probe.returncode}"
    return None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _net_ns(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _wait_unshared(pid: int, what: str) -> None:
    """Wait until process ``pid`` (an ``unshare``) is in its own network namespace."""
    mine = _net_ns(os.getpid())
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            if _net_ns(pid) != mine:
                return
        if time.monotonic() > deadline:
            raise LocalModeError(f"{what} did not get its own network namespace in time")
        time.sleep(0.005)


def _host_script(host: HostLayout) -> str:
    """What runs as PID 1 of a host before it becomes ``train``: network, hostname, mounts."""
    sources: list[tuple[Path, str]] = [
        (host.root / "etc" / "hosts", "/etc/hosts"),
        (host.root / "etc" / "ssh", "/etc/ssh"),
        (host.root / "root-ssh", "/root/.ssh"),
        (host.root / "root-home" / ".bashrc", "/root/.bashrc"),
        (host.root / "root-home" / ".profile", "/root/.profile"),
        (host.tree, "/opt/ml"),
    ]
    if Path("/etc/hostname").exists():
        sources.insert(1, (host.root / "etc" / "hostname", "/etc/hostname"))
    q = shlex.quote
    lines = [
        "set -eu",
        'read -r go && [ "$go" = go ] || exit 70',  # the parent has wired eth0
        "ip link set lo up",
        f"ip addr add {host.address}/{PREFIX_LENGTH} dev eth0",
        "ip link set eth0 up",
        f"hostname {q(host.name)}",
        "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
        "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm",
        "S=/run/local-mode; mkdir $S",
        # Stage every source first: an overlay over a source's parent would hide its writes.
        'stage() { if [ -d "$2" ]; then mkdir "$S/s$1"; else : >"$S/s$1"; fi; '
        'mount --bind "$2" "$S/s$1"; }',
        'place() { src="$S/s$1"; dst=$2; if [ ! -e "$dst" ]; then parent=${dst%/*}; '
        'o="$S/o$(printf %s "$parent" | tr / _)"; if [ ! -d "$o" ]; then mkdir -p "$o/u" "$o/w"; '
        'mount -t overlay overlay -o "lowerdir=$parent,upperdir=$o/u,workdir=$o/w" "$parent" '
        '|| echo "[local] no overlay for $parent: creating $dst on the machine" >&2; fi; '
        'if [ -d "$src" ]; then mkdir -p "$dst"; else : >"$dst"; fi; fi; '
        'mount --bind "$src" "$dst"; }',
    ]
    lines += [f"stage {i} {q(str(src))}" for i, (src, _) in enumerate(sources)]
    lines += [f"place {i} {q(dst)}" for i, (_, dst) in enumerate(sources)]
    lines.append('cd /; exec "$@" </dev/null')
    return "\n".join(lines)


@dataclass
class HostRun:
    """One host's process tree and how it ended."""

    layout: HostLayout
    proc: subprocess.Popen[bytes] | None = None
    pid1: int | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    exit_code: int | None = None
    killed: bool = False
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def running(self) -> bool:
        return self.proc is not None and self.ended_at is None


class NamespaceCluster:
    """The hosts of one job, each running ``argv`` (the runtime's ``train``) as its PID 1.

    Use as a context manager: leaving it kills whatever still runs and so removes every
    namespace. ``log`` receives each host's output lines with an ``[algo-N] `` prefix.
    """

    def __init__(
        self,
        layouts: Sequence[HostLayout],
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        log: Callable[[str], None],
        quiet_after: float = 15.0,
    ) -> None:
        self.hosts = {h.name: HostRun(h) for h in layouts}
        self._argv = list(argv)
        self._env = dict(env)
        self._log_lock = threading.Lock()
        self._log = log
        self._quiet_after = quiet_after
        self._last_line = time.monotonic()
        self._switch: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ logging
    def log(self, line: str) -> None:
        with self._log_lock:
            self._log(line)

    def _read(self, host: HostRun) -> None:
        assert host.proc is not None
        assert host.proc.stdout is not None
        prefix = f"[{host.name}] "
        for raw in iter(host.proc.stdout.readline, b""):
            self._last_line = time.monotonic()
            self.log(prefix + raw.decode("utf-8", "replace").rstrip("\n").replace("\x1b[J", ""))
        code = host.proc.wait()
        if host.killed:  # unshare reports a SIGKILLed child as 1
            code = -signal.SIGKILL
        host.exit_code = 128 - code if code < 0 else code
        host.ended_at = time.monotonic()

    def _beat(self) -> None:
        started = time.monotonic()
        while not self._done.wait(1.0):
            now = time.monotonic()
            if now - self._last_line >= self._quiet_after:
                self.log(f"[local] ... still running, {now - started:.0f} s elapsed")
                self._last_line = now

    # ------------------------------------------------------------------ start
    def _popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            list(argv), preexec_fn=_die_with_parent, start_new_session=True, **kwargs
        )

    def _ip_batch(self, commands: Sequence[str]) -> None:
        assert self._switch is not None
        result = subprocess.run(
            ["nsenter", f"--net=/proc/{self._switch.pid}/ns/net", "ip", "-batch", "-"],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LocalModeError(f"wiring the hosts' network failed: {result.stderr.strip()}")

    def start(self, absent: Collection[str] = ()) -> None:
        """Create the bridge and every host but ``absent`` ones (instances that never boot)."""
        self._switch = self._popen(
            ["unshare", "--net", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        _wait_unshared(self._switch.pid, "the job's bridge")
        wiring = ["link add br0 type bridge", "link set br0 up"]
        starting = [h for h in self.hosts.values() if h.name not in absent]
        for index, host in enumerate(starting):
            host.proc = self._popen(
                [
                    "unshare", "--net", "--pid", "--fork", "--kill-child=SIGKILL",
                    "--mount-proc", "--uts", "--ipc", "--mount", "--propagation", "private",
                    "sh", "-c", _host_script(host.layout), host.name, *self._argv,
                ],
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            host.started_at = time.monotonic()
            _wait_unshared(host.proc.pid, host.name)
            veth = f"veth{index}"
            wiring += [
                f"link add {veth} type veth peer name eth0 netns {host.proc.pid}",
                f"link set {veth} master br0",
                f"link set {veth} up",
            ]
        self._ip_batch(wiring)
        for host in starting:
            assert host.proc is not None
            assert host.proc.stdin is not None
            host.proc.stdin.write(b"go\n")
            host.proc.stdin.close()
            host.reader = threading.Thread(target=self._read, args=(host,), daemon=True)
            host.reader.start()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    # ------------------------------------------------------------------ control
    def pid1(self, name: str) -> int | None:
        """The real PID of ``name``'s PID 1 (``train``), or None when it is not running."""
        host = self.hosts[name]
        if host.pid1 is None and host.running:
            assert host.proc is not None
            deadline = time.monotonic() + _READY_TIMEOUT
            while host.pid1 is None and host.running and time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    path = f"/proc/{host.proc.pid}/task/{host.proc.pid}/children"
                    host.pid1 = int(Path(path).read_text().split()[0])
                    break
                time.sleep(0.005)
        return host.pid1 if host.running else None

    def signal(self, name: str, signum: int) -> None:
        """Send ``signum`` to host ``name``'s PID 1, as Docker does to a container's."""
        pid = self.pid1(name)
        if pid is None:
            return
        if signum == signal.SIGKILL:
            self.hosts[name].killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def stop(self, grace: float) -> None:
        """StopTrainingJob: SIGTERM to every host, SIGKILL to those still running ``grace`` s on."""
        for name in self.hosts:
            self.signal(name, signal.SIGTERM)
        if not self.wait(timeout=grace):
            for name, host in self.hosts.items():
                if host.running:
                    self.log(f"[local] {name} did not end {grace:.0f} s after SIGTERM; killing it")
                    self.signal(name, signal.SIGKILL)
            self.wait(timeout=10)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every started host has ended; False when ``timeout`` s passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for host in self.hosts.values():
            if host.reader is None:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            host.reader.join(remaining)
            if host.reader.is_alive():
                return False
        return True

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Kill whatever still runs; with the processes go the namespaces, veths and bridge."""
        self._done.set()
        for name, host in self.hosts.items():
            if host.running:
                self.signal(name, signal.SIGKILL)
                assert host.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    host.proc.kill()
        self.wait(timeout=10)
        if self._switch is not None:
            self._switch.kill()
            self._switch.wait()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)

    def __enter__(self) -> NamespaceCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

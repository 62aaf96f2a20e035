"""Two SageMaker hosts on one machine, each `train` as PID 1 of its own namespaces.

Until multi-host local mode gives every host its own network namespace, this is the stand-in
the issue allows: two PID namespaces (`train` is PID 1 in each, as in a container) over
loopback; the loopback of one network namespace made for the pair (so their sshds on port 22
never meet this machine's). Each host also gets its own UTS namespace (hostname algo-N, so
Open MPI knows which host it is on) and mount namespace, in which are bind-mounted:

* its own job tree onto one shared path (``SAGEMAKER_BASE_DIR`` is the same on both, as
  ``/opt/ml`` is on SageMaker);
* ``/etc/hosts`` mapping algo-1 and algo-2 to 127.0.0.11 / 127.0.0.12;
* ``/etc/ssh/sshd_config`` making its sshd listen on its own address only, with a test key;
* ``/etc/ssh/ssh_config`` giving the ssh client (mpirun's and `train`'s) that key.

What it does not model: separate network stacks (both hosts share loopback), separate root
file systems, SageMaker's own container start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobtree import BIN, JobTree
from trainproc import UNSHARE, children_of

ADDRESSES = {"algo-1": "127.0.0.11", "algo-2": "127.0.0.12"}


@dataclass
class Host:
    name: str
    job: JobTree
    proc: subprocess.Popen[bytes] | None = None
    err: bytearray = field(default_factory=bytearray)
    ended_at: float | None = None

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    def train_pid(self, timeout: float = 10) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in children_of(self.proc.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "train":
                        return pid
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: train never started")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


def _ssh_material(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("hostkey", "id_ed25519"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    (root / "ssh_config").write_text(
        "Host algo-*\n"
        f"  IdentityFile {root / 'id_ed25519'}\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  BatchMode yes\n"
    )
    hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for h, a in ADDRESSES.items())
    (root / "hosts").write_text(hosts)
    for host, address in ADDRESSES.items():
        (root / f"sshd_config-{host}").write_text(
            f"Port 22\nListenAddress {address}\nHostKey {root / 'hostkey'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root}/sshd-{host}.pid\n"
            "StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\n"
        )


class TwoHosts:
    """Build the two hosts' trees under ``root`` and run `train` on each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ssh = root / "ssh"
        _ssh_material(self.ssh)
        self.base = root / "ml"  # the shared mount point: SAGEMAKER_BASE_DIR on both hosts
        self.base.mkdir()
        self.hosts = {h: Host(h, JobTree(root / h)) for h in ADDRESSES}
        # One network namespace for both hosts, held open by a sleeping process.
        self.net = subprocess.Popen(
            [UNSHARE, "--net", "--kill-child", "--fork", "sleep", "3600"],
            stdin=subprocess.DEVNULL,
        )
        self.net_path = f"/proc/{self._net_pid()}/ns/net"
        subprocess.run(
            ["nsenter", f"--net={self.net_path}", "ip", "link", "set", "lo", "up"], check=True
        )

    def _net_pid(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for pid in children_of(self.net.pid):
                ns = os.readlink(f"/proc/{pid}/ns/net")
                if ns != os.readlink("/proc/self/ns/net"):
                    return pid
            time.sleep(0.01)
        raise AssertionError("the network namespace for the two hosts never came up")

    def configure(self, hyperparameters: Mapping[str, Any]) -> None:
        names = list(self.hosts)
        for name, host in self.hosts.items():
            host.job.configure(hyperparameters, hosts=names, current_host=name)
            cfg = host.job.base / "input" / "config" / "resourceconfig.json"
            resource = json.loads(cfg.read_text())
            resource["network_interface_name"] = "lo"
            cfg.write_text(json.dumps(resource))

    def _inner(self, name: str) -> str:
        ssh = self.ssh
        steps = [
            f"hostname {name}",
            f"mount --bind {shlex.quote(str(self.hosts[name].job.base))} {self.base}",
            f"mount --bind {ssh / 'hosts'} /etc/hosts",
            f"mount --bind {ssh / f'sshd_config-{name}'} /etc/ssh/sshd_config",
            f"mount --bind {ssh / 'ssh_config'} /etc/ssh/ssh_config",
            f"exec {BIN / 'train'}",
        ]
        return " && ".join(steps)

    def start(self, name: str, **extra: str) -> Host:
        host = self.hosts[name]
        env = dict(os.environ)
        env.pop("SM_TRAINING_ENV", None)
        env.update(SAGEMAKER_BASE_DIR=str(self.base), **extra)
        argv = ["nsenter", f"--net={self.net_path}"]
        argv += [UNSHARE, "--pid", "--fork", "--mount-proc", "--uts", "--kill-child"]
        host.proc = subprocess.Popen(
            [*argv, "sh", "-c", self._inner(name)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._pump, args=(host,), daemon=True).start()
        return host

    @staticmethod
    def _pump(host: Host) -> None:
        assert host.proc is not None
        assert host.proc.stderr is not None
        fd = host.proc.stderr.fileno()
        while data := os.read(fd, 65536):
            host.err += data
        host.ended_at = time.monotonic()

    def stop_all(self) -> None:
        for host in self.hosts.values():
            if host.proc is not None and host.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, AssertionError):
                    os.kill(host.train_pid(timeout=1), signal.SIGKILL)
                host.proc.kill()
                host.proc.wait(10)
        self.net.kill()
        self.net.wait(10)


@contextlib.contextmanager
def two_hosts(root: Path) -> Iterator[TwoHosts]:
    cluster = TwoHosts(root)
    try:
        yield cluster
    finally:
        cluster.stop_all()

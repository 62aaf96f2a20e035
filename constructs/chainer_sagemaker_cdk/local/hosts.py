"""The files each host of a multi-host local job sees as its own, as a SageMaker container does.

Each host ``algo-N`` gets a directory under the job's work dir holding what its mount namespace
binds over the machine's own paths (see :mod:`.netns`):

- ``ml/``: its ``/opt/ml`` tree (``resourceconfig.json`` names it as ``current_host``);
- ``etc/hosts`` and ``etc/hostname``: ``algo-1..algo-N`` at their bridge addresses;
- ``etc/ssh/``: its own ``sshd_config`` and host key, and an ``ssh_config`` that trusts the
  cluster's hosts; ``root-ssh/``: root's key pair and ``authorized_keys``, the same on every
  host, as the image bakes one key into every container;
- ``root-home/``: root's ``.bashrc`` and ``.profile`` as a plain image has them, so the shells
  sshd starts for Open MPI do not run this machine's own start-up files (a ``pyenv init`` there
  took seconds per SSH command under load, and held a lock the hosts then queued on).

The addresses come from :data:`SUBNET` (``10.213.0.0/24``), which exists only inside the job's
own network namespaces: nothing is added to this machine's network.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chainer_sagemaker_cdk.local._commands import LocalModeError

__all__ = ["MAX_HOSTS", "PREFIX_LENGTH", "SUBNET", "HostLayout", "host_layouts", "write_host_files"]

SUBNET = "10.213.0.0"
PREFIX_LENGTH = 24
MAX_HOSTS = 250  # algo-N is 10.213.0.N

_SSHD_CONFIG = """\
# sshd of one local-mode host (chainer_sagemaker_cdk.local): the runtime's `train` starts it.
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""

# The same trust the image's install script gives root (runtime/docker/install.sh): the hosts
# of a job are new every job, so their keys are not checked.
_ROOT_STARTUP = """\
# root's shell start-up on a local-mode host (chainer_sagemaker_cdk.local): the image's, not
# the machine's own. sshd's shells for Open MPI's daemons read this.
"""

_CLIENT_CONFIG = """\
Host algo-*
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
"""


@dataclass(frozen=True)
class HostLayout:
    """One host of the job: its name, bridge address and directory of its own files."""

    name: str
    address: str
    root: Path

    @property
    def tree(self) -> Path:
        """What the host sees as ``/opt/ml``."""
        return self.root / "ml"


def host_layouts(count: int, work_dir: Path) -> list[HostLayout]:
    if not 1 <= count <= MAX_HOSTS:
        raise LocalModeError(
            f"a local multi-host job runs 1 to {MAX_HOSTS} hosts, not {count}; "
            "lower instance_count for local runs"
        )
    prefix = SUBNET.rsplit(".", 1)[0]
    return [
        HostLayout(f"algo-{i}", f"{prefix}.{i}", work_dir / "hosts" / f"algo-{i}")
        for i in range(1, count + 1)
    ]


def _keygen(path: Path, comment: str) -> None:
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LocalModeError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")


def write_host_files(layouts: list[HostLayout], work_dir: Path) -> None:
    """Write every host's ``etc/`` and ``root-ssh/``; the ``ml/`` trees are laid out apart."""
    cluster_key = work_dir / "hosts" / "cluster-key"
    shutil.rmtree(cluster_key, ignore_errors=True)
    cluster_key.mkdir(parents=True)
    _keygen(cluster_key / "id_ed25519", "local-mode cluster key")
    public = (cluster_key / "id_ed25519.pub").read_text()
    hosts_file = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + "".join(
        f"{h.address} {h.name}\n" for h in layouts
    )
    for host in layouts:
        etc = host.root / "etc"
        ssh = etc / "ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts_file)
        (etc / "hostname").write_text(host.name + "\n")
        (ssh / "sshd_config").write_text(_SSHD_CONFIG)
        (ssh / "ssh_config").write_text(_CLIENT_CONFIG)
        key = ssh / "ssh_host_ed25519_key"
        if not key.exists():
            _keygen(key, f"{host.name} host key")
        root_ssh = host.root / "root-ssh"
        root_ssh.mkdir(mode=0o700, exist_ok=True)
        root_ssh.chmod(0o700)
        for name in ("id_ed25519", "id_ed25519.pub"):
            shutil.copyfile(cluster_key / name, root_ssh / name)
        (root_ssh / "id_ed25519").chmod(0o600)
        (root_ssh / "authorized_keys").write_text(public)
        (root_ssh / "authorized_keys").chmod(0o600)
        (root_ssh / "config").write_text(_CLIENT_CONFIG)
        (root_ssh / "config").chmod(0o600)
        home = host.root / "root-home"
        home.mkdir(exist_ok=True)
        for name in (".bashrc", ".profile"):
            (home / name).write_text(_ROOT_STARTUP)

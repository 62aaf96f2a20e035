"""The image recipe outside Docker: runtime/docker/install.sh and runtime/Dockerfile.

`make setup` runs the script's system and python steps for .venv; here its SSH step prepares a
temporary root, and a real sshd started with that result accepts the generated key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "runtime" / "docker" / "install.sh"
DOCKERFILE = REPO / "runtime" / "Dockerfile"


@pytest.fixture(scope="module")
def ssh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sshroot")
    env = {**os.environ, "STEPS": "ssh", "SSH_ROOT": str(root)}
    out = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return root


def test_ssh_step_creates_host_keys_a_trusted_root_key_and_relaxed_cluster_checking(
    ssh_root: Path,
) -> None:
    for kind in ("rsa", "ecdsa", "ed25519"):
        assert (ssh_root / f"etc/ssh/ssh_host_{kind}_key").exists()
    ssh = ssh_root / "root/.ssh"
    assert (ssh / "authorized_keys").read_text() == (ssh / "id_rsa.pub").read_text()
    assert oct((ssh / "id_rsa").stat().st_mode & 0o777) == "0o600"
    config = (ssh / "config").read_text()
    assert "Host algo-*" in config
    assert "StrictHostKeyChecking no" in config
    assert (
        "PasswordAuthentication no"
        in (ssh_root / "etc/ssh/sshd_config.d/chainer-sagemaker.conf").read_text()
    )


@pytest.mark.timeout(60)
def test_a_real_sshd_accepts_the_generated_key(ssh_root: Path, tmp_path: Path) -> None:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(sshd).exists(), "openssh-server must be installed (scripts/setup.sh does it)"
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\n"
        f"HostKey {ssh_root}/etc/ssh/ssh_host_ed25519_key\n"
        f"AuthorizedKeysFile {ssh_root}/root/.ssh/authorized_keys\n"
        f"Include {ssh_root}/etc/ssh/sshd_config.d/*.conf\n"
        f"PidFile {tmp_path}/sshd.pid\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=20)
        out = subprocess.run(
            [
                "ssh", "-F", f"{ssh_root}/root/.ssh/config", "-i", f"{ssh_root}/root/.ssh/id_rsa",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-p", str(port), "root@127.0.0.1",
                "echo", "reached",
            ],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "reached"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dockerfile_runs_the_install_script_with_every_build_arg() -> None:
    text = DOCKERFILE.read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, flags=re.M))
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= declared, f"build args used but not declared: {used - declared}"
    run = text[text.index("PYTHON=python") :]
    for name in ("VARIANT", "CHAINER_VERSION", "CUPY_PACKAGE", "NUMPY_SPEC"):
        assert f"{name}=" in run
    assert "SSH_ROOT=/" in run
    assert "docker/install.sh" in run
    assert "FROM base-${VARIANT}" in text


_RECORDING_PYTHON = """#!/bin/sh
# Stands in for the interpreter: records each pip call and the constraint files it was given.
{
  echo "CALL $*"
  for var in PIP_CONSTRAINT PIP_BUILD_CONSTRAINT; do
    eval "file=\\${$var:-}"
    echo "$var=$( [ -n "$file" ] && cat "$file" )"
  done
} >>"$RECORD"
cat >/dev/null  # the script's closing import check arrives on stdin
"""


def test_every_pip_install_constrains_build_environments_for_old_and_new_pip(
    tmp_path: Path,
) -> None:
    """pip < 26.2 takes build constraints from PIP_CONSTRAINT, pip >= 26.2 only from
    PIP_BUILD_CONSTRAINT: Chainer's source build needs setuptools<70 from both (setup.sh also
    runs the real install with the newest pip)."""
    python = tmp_path / "python"
    python.write_text(_RECORDING_PYTHON)
    python.chmod(0o755)
    record = tmp_path / "record"
    env = {
        **os.environ,
        "STEPS": "python",
        "SYSTEM_PACKAGES": "0",
        "PYTHON": str(python),
        "RECORD": str(record),
    }
    out = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calls = record.read_text().split("CALL ")[1:]
    installs = [c for c in calls if c.startswith("-m pip install")]
    assert len(installs) == 2, calls  # the packages, then the runtime
    for call in installs:
        assert "PIP_CONSTRAINT=setuptools<70" in call
        assert "PIP_BUILD_CONSTRAINT=setuptools<70" in call
    assert "chainer==7.8.1" in installs[0]


def test_install_script_refuses_an_unknown_variant() -> None:
    out = subprocess.run(
        ["bash", str(INSTALL)],
        env={**os.environ, "VARIANT": "tpu", "STEPS": "ssh"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "VARIANT must be cpu or gpu, got 'tpu'" in out.stderr

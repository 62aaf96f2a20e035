"""A multi-host local run leaves nothing behind: not when it ends, not on Ctrl-C, not even when
local mode itself is killed with SIGKILL (no namespaces, veths, bridge, mounts or processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hosttools import (
    STACK,
    Log,
    descendants,
    mounts_mentioning,
    named_netns,
    net_namespaces,
    processes_in,
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gone_within(seconds: float, check: Callable[[], list[int]]) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_an_interrupted_or_killed_run_leaves_nothing_behind(
    assembly: Path, tmp_path: Path, how: signal.Signals
) -> None:
    netns_before = named_netns()
    work = tmp_path / "run"
    cli = subprocess.Popen(
        [
            sys.executable, "-m", "chainer_sagemaker_cdk.local", "--cdk-out", str(assembly),
            "--stack", STACK, "train", "--job", "Probe2", "--work-dir", str(work),
            "--hyperparameter", "mode=sleep",
            "--env", "SAGEMAKER_SIGTERM_GRACE_SECONDS=5",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As from a terminal: a run started in the background by a non-interactive shell (as CI
        # may be) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=_sigint_default,
    )  # fmt: skip
    log = Log()
    assert cli.stdout is not None
    lines = cli.stdout
    reader = threading.Thread(target=lambda: [log(line.rstrip()) for line in lines], daemon=True)
    reader.start()
    try:
        log.wait_for(r"rank \d of 2 on algo-\d ready", count=2, timeout=120)
        tree = descendants(cli.pid)
        namespaces = net_namespaces(tree) - net_namespaces([cli.pid])
        assert len(namespaces) == 3, (namespaces, log.text)  # the bridge's and two hosts'
        assert processes_in(namespaces)
        cli.send_signal(how)
        code = cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    reader.join(timeout=10)
    if how == signal.SIGINT:
        assert code == 130, log.text[-3000:]
        assert "[local] interrupted: stopping every host" in log.text
    else:
        assert code == -signal.SIGKILL
    assert _gone_within(15, lambda: sorted(filter(_alive, tree))) == []
    assert _gone_within(5, lambda: processes_in(namespaces)) == []
    assert named_netns() == netns_before
    assert mounts_mentioning(work) == []

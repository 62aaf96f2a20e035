"""Finding the runtime's commands and streaming a child's output with a progress line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["LocalModeError", "runtime_command", "stream"]


class LocalModeError(Exception):
    """Local mode cannot go on; the message names the problem and the fix."""


def runtime_command(name: str) -> str:
    """The runtime's ``train`` or ``serve`` command, from this interpreter's environment first."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise LocalModeError(
            f"the runtime's `{name}` command is not installed; local mode runs the container "
            "runtime on this machine: pip install ./runtime (chainer-sagemaker-runtime)"
        )
    return found


def stream(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    prefix: str,
    log: Callable[[str], None],
    quiet_after: float = 15.0,
    stop_grace: float = 40.0,
) -> int:
    """Run ``argv``, passing each output line to ``log`` with ``prefix``; while the child is
    silent for ``quiet_after`` seconds, log a progress line with the elapsed time. Interrupted,
    it sends the child SIGTERM, and SIGKILL ``stop_grace`` seconds later."""
    started = time.monotonic()
    last = [started]
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(1.0):
            now = time.monotonic()
            if now - last[0] >= quiet_after:
                log(f"{prefix}... still running, {now - started:.0f} s elapsed")
                last[0] = now

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    assert proc.stdout is not None
    try:
        for raw in iter(proc.stdout.readline, b""):
            last[0] = time.monotonic()
            log(prefix + raw.decode("utf-8", "replace").rstrip("\n").replace("\x1b[J", ""))
        return proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM here: stop the child as StopTrainingJob would
        proc.terminate()
        try:
            proc.wait(timeout=stop_grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        done.set()
        beat.join(timeout=2)

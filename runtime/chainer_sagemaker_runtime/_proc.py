"""The one way the runtime starts processes: argv lists, no shell (DESIGN.md principle 9).

A :class:`Child` streams its output straight through to ours (so it reaches CloudWatch) while
keeping the last lines of stderr for the failure reason, runs in its own process group, and
can be asked to stop: SIGTERM to the whole group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Child", "format_command"]

TAIL_LINES = 20


def format_command(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


class Child:
    """A running command in its own process group."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self.argv = list(argv)
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._proc.stderr is not None
        self._pump = threading.Thread(
            target=self._copy_stderr, args=(self._proc.stderr,), daemon=True
        )
        self._pump.start()
        self.terminated_by: int | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _copy_stderr(self, stream: object) -> None:
        out = sys.stderr.buffer
        for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
            out.write(line)
            out.flush()
            self._tail.append(line.decode("utf-8", "replace").rstrip("\n"))

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self._proc.wait(timeout)
        self._pump.join(timeout=5)
        return code

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)

    def stop(self, grace: float) -> int:
        """SIGTERM the process group, SIGKILL it if still running after ``grace`` seconds."""
        self.terminated_by = signal.SIGTERM
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._proc.poll() is None:
            self.signal_group(signal.SIGKILL)
        return self.wait()


def run_checked(
    argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run to completion; return (exit code, stderr tail)."""
    child = Child(argv, cwd=cwd, env=env)
    return child.wait(), child.stderr_tail()

"""The one way the runtime starts processes: argv lists, no shell (DESIGN.md principle 9).

A :class:`Child` streams its output straight through to ours (so it reaches CloudWatch) while
keeping the last lines of stderr for the failure reason, and runs in its own process group so
that a signal reaches everything it started.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import threading
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

    def wait(self, timeout: float | None = None) -> int:
        code = self._proc.wait(timeout)
        self._pump.join(timeout=5)
        return code

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)


def run_checked(
    argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run to completion; return (exit code, stderr tail)."""
    child = Child(argv, cwd=cwd, env=env)
    return child.wait(), child.stderr_tail()

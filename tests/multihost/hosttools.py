"""Helpers of the multi-host tests: a timestamped log, and what a run leaves behind."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "STACK",
    "Log",
    "descendants",
    "left_behind",
    "mounts_mentioning",
    "named_netns",
    "net_namespaces",
    "processes_in",
]


STACK = "Multi"  # the stack of every job the multi-host tests run (conftest.assembly)


# mpirun --tag-output tags each chunk a rank writes, not each line: two ranks' prints can share
# one line of mpirun's output ("[1,0]<stdout>:rank 0 ready[1,1]<stdout>:rank 1 ready"), and a
# print whose newline came in a second write leaves a bare tag behind.
_TAG = re.compile(r"\[\d+,\d+\]<(?:stdout|stderr)>:")
_HOST = re.compile(r"^(\[[^\]]+\] )")


def _untagged(line: str) -> list[str]:
    """``line`` split at mpirun's chunk tags into one line per chunk, host prefix kept."""
    host = m.group(1) if (m := _HOST.match(line)) and _TAG.search(line) else ""
    if not host:
        return [line]
    chunks = [c for c in _TAG.split(line[len(host) :]) if c.strip()]
    return [host + c for c in chunks]


class Log:
    """A ``log`` callback that keeps each line with the time it arrived, and can wait for one.

    A line of mpirun's tagged output is kept as one line per chunk (see ``_TAG``).
    """

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        with self._cond:
            self.lines.extend((now, chunk) for chunk in _untagged(line))
            self._cond.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def matching(self, pattern: str) -> list[tuple[float, str]]:
        return [(t, line) for t, line in self.lines if re.search(pattern, line)]

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 120.0) -> float:
        """Wait until ``count`` lines match ``pattern``; the time the last of them arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := self.matching(pattern)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{count} line(s) matching {pattern!r} did not come within {timeout} s:\n"
                        + self.text[-4000:]
                    )
                self._cond.wait(min(left, 1.0))
            return found[count - 1][0]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    """Every living process below ``root``."""
    parents = {int(p.name): _ppid(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def net_namespaces(pids: Iterable[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            continue
    return inodes


def processes_in(namespaces: set[int]) -> list[int]:
    """Living processes in any of the network namespaces ``namespaces`` (inode numbers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                if not zombie and os.stat(entry / "ns" / "net").st_ino in namespaces:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def mounts_mentioning(path: Path) -> list[str]:
    """This mount namespace's mounts whose source or target is under ``path``."""
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line
    ]


def named_netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def left_behind() -> list[int]:
    """Processes below this one in a network namespace other than this one's (a run's hosts)."""
    mine = os.stat("/proc/self/ns/net").st_ino
    return sorted(p for p in descendants(os.getpid()) if net_namespaces([p]) - {mine})

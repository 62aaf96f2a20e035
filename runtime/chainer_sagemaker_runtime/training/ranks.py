"""What runs around each MPI rank, and how ``train`` finds, signals and reads its ranks.

mpirun starts every rank as ``python -m chainer_sagemaker_runtime.training.ranks <command>``.
The wrapper

* on a multi-host job, rebuilds the per-host variables (``CURRENT_HOST``, ``SM_CURRENT_HOST``,
  ``SM_RESOURCE_CONFIG``, ``SM_NUM_CPUS``, ``SM_TRAINING_ENV``) from *this* host's
  ``resourceconfig.json``, so a rank on algo-2 says algo-2 (the master's values are not
  forwarded);
* on a worker host, starts from the environment of that host's `train` (the container's: the
  job's ``Environment`` and the image's variables), read from ``/proc/<train>/environ``: a
  rank started through sshd and Open MPI's daemon would otherwise see only sshd's session and
  what mpirun forwards with ``-x``. What mpirun forwards wins, except the host's own
  credential and metadata endpoints (``_HOST_OWN``);
* runs the command in its own process group (Open MPI makes each rank a group leader and
  signals the group, so SIGTERM reaches the command; the wrapper itself ignores it);
* reports the command's end on stderr as ``[train] rank N on HOST exited with code C``, and,
  for ``python -m mpi4py``, the moment the user's code returned (``... finished its script``;
  the process itself then waits in MPI_Finalize for the other ranks), which the master reads
  (through ``--tag-output``) to name the failing rank and for the straggler watchdog.

Stopping: Open MPI SIGKILLs the ranks about 1 s after mpirun gets SIGTERM
(``odls_base_sigkill_timeout``), far short of a checkpoint. So ``train`` never signals mpirun
first: each host's ``train`` sends SIGTERM to its local ranks' process groups (found here: the
children of mpirun or of Open MPI's daemon that carry ``OMPI_COMM_WORLD_RANK``), gives them the
grace, and only then ends mpirun. SageMaker sends SIGTERM to every host's container, so every
host's ranks are reached; a stop that reached the master only is passed on over SSH to each
worker's `train` (:func:`stop_this_host`), and a host signalled twice stops once.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chainer_sagemaker_runtime._proc import proc_children, signal_group
from chainer_sagemaker_runtime.training.mpi import HOST_ENV_FLAG, PER_HOST_NAMES

__all__ = [
    "HUNG_LAUNCHER_SECONDS",
    "LauncherHang",
    "RankStopper",
    "RankWatch",
    "host_environ",
    "job_ended_argv",
    "main",
    "stop_host_argv",
    "stop_this_host",
    "wrapper_argv",
]

_STOP_HOST = "--stop-this-host"
_JOB_ENDED = "--job-ended"

_RANK_ENV = b"OMPI_COMM_WORLD_RANK="
_TAG = re.compile(rb"\[(\d+),(\d+)\]<(stdout|stderr)>:")
_END = re.compile(
    r"^\[train\] rank (\d+) on (\S+) "
    r"(exited with code (-?\d+)|was killed by (\w+(?: \d+)?)|finished its script)"
)
_RANK_TAIL_BYTES = 4096
_MAX_TRACKED_RANKS = 1024
_MAX_LINE = 8192


def wrapper_argv(command: Sequence[str], *, python: str = sys.executable) -> list[str]:
    return [python, "-m", "chainer_sagemaker_runtime.training.ranks", *command]


def stop_host_argv(host: str, *, python: str = sys.executable) -> list[str]:
    """What the master runs over SSH to pass a stop on to ``host``'s `train`."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host]
    return [*argv, python, "-m", "chainer_sagemaker_runtime.training.ranks", _STOP_HOST]


def job_ended_argv(host: str, *, python: str = sys.executable) -> list[str]:
    """What the master runs over SSH once its mpirun has ended: tells ``host``'s `train`
    (SIGUSR1) that the job's MPI run is over, so the worker ends now even when the run was too
    short for it to see Open MPI's daemon, or when it had not yet reached the master's sshd."""
    return [*stop_host_argv(host, python=python)[:-1], _JOB_ENDED]


def _ancestors(pid: int) -> list[int]:
    chain: list[int] = []
    while pid > 1 and len(chain) < 64:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat.rpartition(b")")[2].split()[1])
        chain.append(pid)
    return chain


def _is_train(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if any(os.path.basename(a) == b"train" for a in argv):
        return True
    return any(a.startswith(b"chainer_sagemaker_runtime.training") for a in argv) and not any(
        a.endswith(b".ranks") for a in argv
    )


def _host_train() -> int | None:
    """This host's `train`: the nearest ancestor whose command line says it is `train`.

    An SSH session the master opens (:func:`stop_this_host`) runs under the sshd `train`
    started; a rank on a worker runs under Open MPI's daemon, which detaches and is adopted by
    `train` as the container's PID 1 (sshd's own environment cannot be read back: it rewrites
    that memory for its titles). None when `train` is not above this process.
    """
    return next((pid for pid in _ancestors(os.getpid()) if _is_train(pid)), None)


def stop_this_host(signum: int = signal.SIGTERM) -> int:
    """Run over SSH by the master: send ``signum`` to this host's `train`, which then stops
    its own ranks with the grace, exactly as when SageMaker signals this host. With SIGUSR1
    (:func:`job_ended_argv`) it tells that `train` the job's MPI run has ended instead."""
    target = _host_train()
    if target is None:
        print("[train] no train process above this SSH session", file=sys.stderr)
        return 1
    os.kill(target, signum)
    return 0


# ---------------------------------------------------------------------- the wrapper
# A worker host's own values of these win over the master's forwarded ones: the endpoints a
# container reaches for its credentials and metadata, and its name.
_HOST_OWN = frozenset(
    {
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "ECS_CONTAINER_METADATA_URI",
        "ECS_CONTAINER_METADATA_URI_V4",
        "HOSTNAME",
    }
)


def _environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty when it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode("utf-8", "surrogateescape").partition("=") for item in raw.split(b"\0"))
    return {name: value for name, sep, value in pairs if sep and name}


def host_environ(
    environ: dict[str, str], container: dict[str, str] | None = None
) -> dict[str, str]:
    """A rank's environment on this host: ``container`` (the environment of this host's
    `train`; left out, read from that process when it is above this one) overlaid with ``environ``
    (what Open MPI's daemon passed on), then this host's per-host variables (from its own
    config files)."""
    from chainer_sagemaker_runtime.environment import TrainingEnv

    if container is None:
        train = _host_train()
        container = _environ_of(train) if train is not None else {}
    out = {**container, **environ}
    out.update({k: v for k, v in container.items() if k in _HOST_OWN})
    try:
        gpus = int(out.get("SM_NUM_GPUS", "0"))
    except ValueError:
        gpus = 0
    env = TrainingEnv.load(out, num_gpus=gpus)
    values = env.to_env_vars()
    out.update({k: v for k, v in values.items() if k in PER_HOST_NAMES})
    return out


# Runs ``python -m mpi4py ARGS`` and says when the user's code has returned: an mpi4py rank
# that is done then waits in MPI_Finalize for the others, so its process does not end.
_MPI4PY_BOOT = """\
import os, sys
from mpi4py.run import main
main()
os.write(2, ("[train] rank %s on %s finished its script\\n" % (
    os.environ.get("OMPI_COMM_WORLD_RANK", "?"),
    os.environ.get("SM_CURRENT_HOST") or os.uname().nodename)).encode())
"""


def _with_finish_line(command: list[str]) -> list[str]:
    if len(command) >= 3 and command[1:3] == ["-m", "mpi4py"]:
        return [command[0], "-c", _MPI4PY_BOOT, *command[3:]]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [_STOP_HOST]:
        return stop_this_host()
    if args == [_JOB_ENDED]:
        return stop_this_host(signal.SIGUSR1)
    command = _with_finish_line(args)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # the group signal reaches the command too
    environ = dict(os.environ)
    if environ.get(HOST_ENV_FLAG) == "1":
        from chainer_sagemaker_runtime.errors import ConfigError

        try:
            environ = host_environ(environ)
        except ConfigError as exc:
            print(f"[train] this host's configuration: {exc}", file=sys.stderr, flush=True)
            return 2
    rank = environ.get("OMPI_COMM_WORLD_RANK", "?")
    host = environ.get("SM_CURRENT_HOST") or environ.get("CURRENT_HOST") or os.uname().nodename
    try:
        proc = subprocess.Popen(command, env=environ)
    except OSError as exc:
        print(f"[train] rank {rank} on {host} could not start {command[0]}: {exc}", file=sys.stderr)
        return 127
    while True:
        try:
            code = proc.wait()
            break
        except InterruptedError:  # pragma: no cover
            continue
    if code < 0:
        try:
            end = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            end = f"was killed by signal {-code}"
    else:
        end = f"exited with code {code}"
    with contextlib.suppress(OSError):
        os.write(2, f"[train] rank {rank} on {host} {end}\n".encode())
    if code < 0:  # end the same way, so mpirun reports the signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


# ---------------------------------------------------------------------- finding ranks
def _is_rank(pid: int) -> bool:
    try:
        return _RANK_ENV in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def local_ranks(parents: Callable[[int, str], bool]) -> list[int]:
    """Live rank processes on this host whose parent ``(ppid, parent comm)`` passes."""
    table = proc_children()
    comm = {pid: c for pid, _ppid, _state, c in table}
    return [
        pid
        for pid, ppid, state, _c in table
        if state != "Z" and parents(ppid, comm.get(ppid, "")) and _is_rank(pid)
    ]


@dataclass
class RankStopper:
    """Sends ``signum`` once to each local rank's process group (ranks found later too)."""

    parents: Callable[[int, str], bool]
    signum: int = signal.SIGTERM
    signalled: set[int] = field(default_factory=set)

    def __call__(self, *_args: object) -> int:
        sent = 0
        for pid in local_ranks(self.parents):
            if pid not in self.signalled:
                self.signalled.add(pid)
                signal_group(pid, self.signum)
                sent += 1
        return sent

    def kill(self) -> None:
        for pid in local_ranks(self.parents):
            signal_group(pid, signal.SIGKILL)


HUNG_LAUNCHER_SECONDS = 10.0


@dataclass
class LauncherHang:
    """Tells when mpirun outlives every process it started: all its children are zombies it
    does not reap. Open MPI 4.1.4's mpirun does that now and then after a SIGTERM (it sits in
    a futex wait for good, seen about 1 run in 10 on a loaded 2-core machine); an mpirun whose
    ranks run, or whose ssh to another host runs, is never taken for hung."""

    after: float = HUNG_LAUNCHER_SECONDS
    since: float | None = None

    def __call__(self, launcher: int, now: float) -> bool:
        states = [state for _pid, _ppid, state, _comm in proc_children(launcher)]
        if not states or any(state != "Z" for state in states):
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.after


def under_daemon(_ppid: int, comm: str) -> bool:
    return comm in ("orted", "prted")


# ---------------------------------------------------------------------- reading ranks
@dataclass
class RankEnd:
    rank: int
    host: str
    code: int | None
    signal_name: str | None
    at: float


class RankWatch:
    """Observes mpirun's tagged output: per-rank stderr tails and the wrapper's end lines.

    With ``--tag-output`` Open MPI puts ``[job,rank]<stderr>:`` before every line *and* before
    every chunk it forwards, so one line of a rank can arrive as several tagged pieces; a tag
    holds until the end of its line, and text after a newline without a tag is mpirun's own.
    """

    def __init__(self) -> None:
        self.tails: dict[int, collections.deque[str]] = {}
        self.ends: dict[int, RankEnd] = {}
        self.exit_codes: dict[int, int | None] = {}  # processes that ended (None: a signal)
        self.order: list[int] = []
        self._buf = b""
        self._ctx: tuple[int, bytes] | None = None
        self._partials: dict[tuple[int, bytes], bytes] = {}

    def feed(self, data: bytes) -> None:
        buf = self._buf + data
        cut = len(buf)
        start = buf.rfind(b"[", max(0, len(buf) - 40))
        if start >= 0 and not _TAG.match(buf, start) and b"\n" not in buf[start:]:
            cut = start  # perhaps the first bytes of a tag
        self._buf = buf[cut:]
        data = buf[:cut]
        pos = 0
        while pos <= len(data):
            match = _TAG.search(data, pos)
            text = data[pos : match.start() if match else len(data)]
            if self._ctx is not None and text:
                newline = text.find(b"\n")
                if newline >= 0:
                    self._text(*self._ctx, text[: newline + 1])
                    self._ctx = None  # the rest of the text, up to a tag, is mpirun's own
                else:
                    self._text(*self._ctx, text)
            if match is None:
                break
            self._ctx = (int(match.group(2)), match.group(3))
            pos = match.end()

    def _text(self, rank: int, stream: bytes, text: bytes) -> None:
        key = (rank, stream)
        if key not in self._partials and len(self._partials) >= 2 * _MAX_TRACKED_RANKS:
            return
        partial = self._partials.get(key, b"") + text
        *lines, rest = partial.split(b"\n")
        self._partials[key] = rest[-_MAX_LINE:]
        for line in lines:
            self._line(rank, stream, line[-_MAX_LINE:])

    def _line(self, rank: int, stream: bytes, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        end = _END.match(text)
        if end is not None and int(end.group(1)) == rank:
            finished = end.group(3) == "finished its script"
            code = 0 if finished else (int(end.group(4)) if end.group(4) is not None else None)
            if not finished:
                self.exit_codes[rank] = code
            before = self.ends.get(rank)
            if before is not None and before.code == 0 and code == 0:
                return  # finished its script, then its process ended: the first moment counts
            self.ends[rank] = RankEnd(rank, end.group(2), code, end.group(5), time.monotonic())
            if before is None:
                self.order.append(rank)
            return
        if stream != b"stderr":
            return
        tail = self.tails.get(rank)
        if tail is None:
            if len(self.tails) >= _MAX_TRACKED_RANKS:
                return
            tail = self.tails[rank] = collections.deque()
        tail.append(text)
        while sum(len(t) + 1 for t in tail) > _RANK_TAIL_BYTES and len(tail) > 1:
            tail.popleft()

    def first_failure(self) -> RankEnd | None:
        """The first rank that ended badly on its own (not killed after another failed)."""
        failed = [self.ends[r] for r in self.order if self.ends[r].code not in (0, None)]
        if failed:
            return failed[0]
        killed = [self.ends[r] for r in self.order if self.ends[r].code is None]
        return killed[0] if killed else None

    def failing_rank(self) -> int | None:
        end = self.first_failure()
        if end is not None and end.code not in (0, None):
            return end.rank
        for rank, tail in sorted(self.tails.items()):
            if any(line.startswith("Traceback") for line in tail):
                return rank
        return end.rank if end is not None else None

    def tail_of(self, rank: int) -> str:
        return "\n".join(self.tails.get(rank, ()))

    def finished_ok(self) -> list[int]:
        return sorted(r for r, e in self.ends.items() if e.code == 0)

    def all_exited_ok(self, num_processes: int) -> bool:
        """Every rank's process (not only its script) ended with code 0."""
        return all(self.exit_codes.get(r, 1) == 0 for r in range(num_processes))


if __name__ == "__main__":
    sys.exit(main())

"""The container's ``train`` command (docs/contract.md §1 and §2).

Reads the training environment, fetches the code, installs its requirements, launches the entry
point (as a process, or under mpirun), and always ends with a ``success`` or ``failure`` file.
Exceptions become exit codes here and nowhere else.

Signals: the SIGTERM/SIGINT handler is installed on the first line of :func:`main` (as PID 1,
which is how ``docker run IMAGE train`` starts us, the kernel drops signals without one). Every
phase turns a stop request into an orderly stop: the phase's children are stopped, the failure
file names the phase ("stopped by SIGTERM during pip install of requirements.txt"), exit
128 + N. In the training run the script (or every MPI rank, signalled directly; see
:mod:`.ranks`) gets SIGTERM and ``SAGEMAKER_SIGTERM_GRACE_SECONDS`` (default 115, just under
SageMaker's 120) before SIGKILL; if it then exits 0 the job is a success.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from chainer_sagemaker_runtime._proc import Child, Stopped, format_command, stops
from chainer_sagemaker_runtime.code import fetch_code, install_requirements
from chainer_sagemaker_runtime.environment import Paths, TrainingEnv
from chainer_sagemaker_runtime.errors import (
    CodeError,
    ConfigError,
    RuntimeFailure,
    UserCodeError,
)
from chainer_sagemaker_runtime.preflight import check_before_fetch
from chainer_sagemaker_runtime.training import cluster
from chainer_sagemaker_runtime.training.launch import child_environ, resolve_entry
from chainer_sagemaker_runtime.training.mpi import (
    HOST_ENV_FLAG,
    MpiSettings,
    forwarded_env_names,
    mpirun_argv,
    resolve_mpi,
)
from chainer_sagemaker_runtime.training.outcome import (
    describe_exit,
    failure_reason,
    write_failure,
    write_success,
)
from chainer_sagemaker_runtime.training.ranks import (
    LauncherHang,
    RankStopper,
    RankWatch,
    job_ended_argv,
    stop_host_argv,
    wrapper_argv,
)

__all__ = ["DEFAULT_GRACE_SECONDS", "main"]

DEFAULT_GRACE_SECONDS = 115.0
DEFAULT_PIP_TIMEOUT_SECONDS = 3600.0
GRACE_ENV = "SAGEMAKER_SIGTERM_GRACE_SECONDS"
PIP_TIMEOUT_ENV = "SAGEMAKER_PIP_TIMEOUT_SECONDS"
STRAGGLER_ENV = "SAGEMAKER_MPI_STRAGGLER_SECONDS"
LOCAL_HOSTS_ENV = "CHAINER_SAGEMAKER_LOCAL_HOSTS"


def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"[train] {message}", file=sys.stderr, flush=True)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _train(env: TrainingEnv, settings: MpiSettings) -> None:
    paths = env.paths
    paths.make_dirs()
    fetch = f"code fetch and extraction of {env.module_dir or paths.code_dir}"
    # Pure Python work (download, extraction): the handler may interrupt it at once.
    with stops.phase(fetch, interruptible=True, announce=True):
        code_dir = fetch_code(env.module_dir, paths.code_dir, region=env.region)
    pip_limit = cluster.wait_seconds(PIP_TIMEOUT_ENV, DEFAULT_PIP_TIMEOUT_SECONDS, allow_zero=False)
    limit = f"({PIP_TIMEOUT_ENV}={pip_limit:g} s)"
    name = "pip install of requirements.txt"
    with stops.phase(name, time_limit=pip_limit, limit_name=f"{name} {limit}"):
        install_requirements(code_dir)
    environ = child_environ(env, code_dir)
    # Local mode (CHAINER_SAGEMAKER_LOCAL_HOSTS=1) runs all hosts' processes on this machine.
    all_local = os.environ.get(LOCAL_HOSTS_ENV) == "1"
    multi_host = len(env.hosts) > 1 and not all_local
    wait_timeout = cluster.wait_seconds("SAGEMAKER_MPI_WAIT_SECONDS", 900)

    if settings.enabled and multi_host and not env.is_master:
        _worker(env, wait_timeout)
        return

    name = "pip install of the code directory (setup.py)"
    with stops.phase(name, time_limit=pip_limit, limit_name=f"{name} {limit}"):
        entry = resolve_entry(env, code_dir)
    command = entry.argv(env.user_args(), mpi=settings.enabled)
    sshd: Child | None = None
    announce_to: list[str] = []  # the workers to tell when the MPI run has ended
    try:
        if settings.enabled:
            if multi_host:
                with stops.phase("starting sshd"):
                    sshd = cluster.start_sshd()
                others = [h for h in env.hosts if h != env.current_host]
                with stops.phase(f"the SSH wait for {', '.join(others)}", announce=True):
                    cluster.wait_for_hosts(others, timeout=wait_timeout, check=cluster.can_ssh)
                announce_to = others
                environ[HOST_ENV_FLAG] = "1"
            command = mpirun_argv(
                hosts=env.hosts,
                settings=settings,
                interface=env.network_interface_name,
                forwarded=forwarded_env_names(environ, multi_host=multi_host),
                command=wrapper_argv(command),
                nccl_debug=environ.get("NCCL_DEBUG", "INFO"),
                all_local=all_local,
            )
        _log(f"running: {format_command(command)}")
        with stops.phase("the training run"):
            if settings.enabled:
                hosts = 1 if (len(env.hosts) == 1 or all_local) else len(env.hosts)
                launcher = (
                    f"under mpirun ({_plural(settings.num_processes, 'rank')} on "
                    f"{_plural(hosts, 'host')})"
                )
                _run_mpi(env, command, code_dir, environ, settings, launcher, multi_host)
            else:
                _run_process(env, command, code_dir, environ)
    finally:
        _announce_end(announce_to)
        cluster.stop_sshd(sshd)


def _announce_end(hosts: list[str], timeout: float = 10.0) -> None:
    """Tell each worker's `train` that the MPI run has ended (``ranks.job_ended_argv``), all at
    once and for at most ``timeout`` seconds; a worker that cannot be told ends by its own
    watch of the master."""
    notices: list[subprocess.Popen[bytes]] = []
    for host in hosts:
        with contextlib.suppress(OSError):
            notices.append(
                subprocess.Popen(
                    job_ended_argv(host),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + timeout
    for notice in notices:
        try:
            notice.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            notice.kill()
            notice.wait()


def _worker(env: TrainingEnv, wait_timeout: float) -> None:
    master = env.master_hostname
    _log(f"worker {env.current_host}: starting sshd, waiting for {master}")
    sshd: Child | None = None
    try:
        with stops.phase("starting sshd"):
            sshd = cluster.start_sshd()
        # The master may reach this host's sshd and start its ranks before this wait sees the
        # master's sshd: the wait ends when Open MPI's daemon runs here, and a stop that comes
        # while the daemon runs goes to the ranks with the grace (below), not to this phase.
        try:
            with stops.phase(f"the SSH wait for the master {master}", announce=True):
                cluster.wait_for_hosts(
                    [master],
                    timeout=wait_timeout,
                    interval=0.25,
                    until=lambda: stops.master_ended or cluster.mpi_daemon_running(),
                )
        except Stopped:
            if not cluster.mpi_daemon_running():
                raise
        waiting = f"the wait for MPI processes from {master}"
        with contextlib.nullcontext() if stops.stopping else stops.phase(waiting, announce=True):
            result = cluster.wait_for_mpi_daemon(master, start_timeout=wait_timeout)
    finally:
        cluster.stop_sshd(sshd)
    if result == "master-gone":
        _log(f"the master {master} went away; its outcome is the job's")
    elif result == "stopped":
        _log("stopped; the MPI processes on this host have ended")
    else:
        _log("MPI processes on this host have finished")


def _stop_note(child: Child) -> str:
    if stops.signum is None and stops.timed_out is None:
        return ""
    why = stops.timed_out or signal.Signals(stops.signum or signal.SIGTERM).name
    if child.killed:
        return f" {child.grace:g} s after {why} ({GRACE_ENV}={child.grace:g})"
    return f" after {why}"


def _run_process(
    env: TrainingEnv, command: list[str], code_dir: Path, environ: dict[str, str]
) -> None:
    program = env.user_entry_point or command[0]
    try:
        child = Child(command, cwd=code_dir, env=environ, grace=stops.grace)
    except OSError as exc:  # for example an executable built for another machine
        raise CodeError(f"could not start the entry point {program}: {exc}") from exc
    returncode = child.wait()
    if returncode == 0:
        return
    headline = (
        f"ExecuteUserScriptError: {program} (process) "
        f"{describe_exit(returncode, memory_hint=not child.killed)}"
        f"{_stop_note(child)}"
    )
    raise UserCodeError(failure_reason(headline, child.stderr_tail()), _exit_code(returncode))


def _ignore(_child: Child) -> None:
    return None


def _relay_stop(child: Child, hosts: list[str]) -> None:
    """Pass a stop on to the other hosts' `train` over SSH (SageMaker signals every host
    itself; this covers a stop that reached the master only). Each host acts on the first
    signal it gets, so a host signalled twice stops once."""
    if not hosts or stops.signum is None:
        return
    relays: list[Child] | None = child.extra.get("relays")
    if relays is None:
        relays = child.extra["relays"] = []
        for host in hosts:
            with contextlib.suppress(OSError):
                # Not stopped by the stop it carries; killed 5 s after it at the latest.
                relay = Child(stop_host_argv(host), echo=False, grace=5.0, on_stop=_ignore)
                relays.append(relay)
    for relay in list(relays):
        with contextlib.suppress(Exception):
            relay.wait(timeout=0)
            relays.remove(relay)


def _run_mpi(
    env: TrainingEnv,
    command: list[str],
    code_dir: Path,
    environ: dict[str, str],
    settings: MpiSettings,
    launcher: str,
    multi_host: bool,
) -> None:
    watch = RankWatch()
    straggler_after = cluster.wait_seconds(STRAGGLER_ENV, 0.0)
    others = [h for h in env.hosts if h != env.current_host] if multi_host else []

    def stopper(c: Child) -> RankStopper:
        if "ranks" not in c.extra:
            c.extra["ranks"] = RankStopper(lambda ppid, _comm: ppid == c.pid)
        found: RankStopper = c.extra["ranks"]
        return found

    def on_stop(c: Child) -> None:
        stopper(c)()  # the local ranks' groups, never mpirun (it would SIGKILL them in 1 s)

    def on_kill(c: Child) -> None:
        stopper(c).kill()
        with contextlib.suppress(OSError):
            os.kill(c.pid, signal.SIGTERM)  # mpirun ends the remote ranks and daemons

    def straggler_tick(c: Child) -> None:
        if straggler_after <= 0 or "straggler" in c.extra:
            return
        done = watch.finished_ok()
        if not done:
            return
        first_done = min(watch.ends[r].at for r in done)
        quiet = time.monotonic() - max(c.last_output(), first_done)
        if quiet < straggler_after:
            return
        running = [r for r in range(settings.num_processes) if r not in watch.ends]
        c.extra["straggler"] = (done, running, quiet)
        _log(f"straggler watchdog: ranks {running} silent for {quiet:.0f} s; ending the job")
        # The local ranks get SIGTERM and the grace, as on a stop; mpirun ends the rest when
        # they die. mpirun itself is not signalled: Open MPI 4.1's mpirun can hang for good
        # after a SIGTERM, its ranks left as zombies (seen under load, 1 run in 10).
        c.stop_alone(stops.grace)

    hang = LauncherHang()

    def on_tick(c: Child) -> None:
        _relay_stop(c, others)
        straggler_tick(c)
        if "hung" not in c.extra and hang(c.pid, time.monotonic()):
            c.extra["hung"] = True
            _log(
                f"mpirun has not exited {hang.after:g} s after every process it started ended "
                "(an Open MPI hang); killing it"
            )
            c.signal_group(signal.SIGKILL)

    child = Child(
        command,
        cwd=code_dir,
        env=environ,
        grace=stops.grace,
        pump_stdout=True,
        on_stderr=watch.feed,
        on_stdout=watch.feed,
        on_stop=on_stop,
        on_kill=on_kill,
        on_tick=on_tick,
    )
    returncode = child.wait()
    if "hung" in child.extra and watch.all_exited_ok(settings.num_processes):
        _log("every rank exited 0 before mpirun hung: the job succeeded")
        returncode = 0
    if returncode == 0 and "straggler" not in child.extra:
        return
    program = env.user_entry_point or command[-1]
    how = f"mpirun {describe_exit(returncode, memory_hint=not child.killed)}"
    if "hung" in child.extra:
        how = f"mpirun hung after its processes ended and was killed {hang.after:g} s later"
    failing = watch.first_failure()
    if failing is not None:
        end = (
            describe_exit(failing.code)
            if failing.code is not None
            else f"was killed by {failing.signal_name}"
        )
        how = f"rank {failing.rank} on {failing.host} {end}; {how}"
    if "straggler" in child.extra:
        done, running, quiet = child.extra["straggler"]
        how = (
            f"straggler watchdog ({STRAGGLER_ENV}={straggler_after:g}): ranks {running} ran on "
            f"with no output for {quiet:.0f} s after ranks {done} exited 0"
        )
    headline = f"ExecuteUserScriptError: {program} {launcher}: {how}{_stop_note(child)}"
    rank = watch.failing_rank()
    tail = watch.tail_of(rank) if rank is not None else ""
    if not tail.strip():
        tail = child.stderr_tail()
    raise UserCodeError(failure_reason(headline, tail), _exit_code(returncode) or 1)


def _report(paths: Paths, reason: str, code: int) -> int:
    write_failure(paths.output_dir, reason)
    _log(f"training failed: {reason}")
    return code


def _stopped(paths: Paths, signum: int, phase: str) -> int:
    reason = f"stopped by {signal.Signals(signum).name} during {phase}"
    return _report(paths, reason, 128 + signum)


def _failure_text(exc: RuntimeFailure) -> str:
    if isinstance(exc, UserCodeError):
        return str(exc)
    headline, _, detail = str(exc).partition("\n")
    keep = "start" if isinstance(exc, ConfigError) else "end"
    return failure_reason(f"{type(exc).__name__}: {headline}", detail, keep=keep)


def main(argv: Sequence[str] | None = None, *, held: Sequence[int] = ()) -> int:
    """``train``; ``held``: signals that arrived before this (see the package's ``main``)."""
    stops.install()  # first: as PID 1 a signal without a handler is dropped
    if held:
        stops.deliver(held[0])
    paths = Paths.from_environ()
    try:
        parser = argparse.ArgumentParser(
            prog="train",
            description="Run the SageMaker training job under $SAGEMAKER_BASE_DIR "
            "(default /opt/ml).",
        )
        parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        stops.grace = cluster.wait_seconds(GRACE_ENV, DEFAULT_GRACE_SECONDS)
        with stops.phase("reading the configuration"):
            env = TrainingEnv.load()
            check_before_fetch(env)  # every configuration mistake before any download or pip
            settings = resolve_mpi(env.reserved, num_hosts=len(env.hosts), num_gpus=env.num_gpus)
        _train(env, settings)
    except Stopped as stop:
        return _stopped(paths, stop.signum, stop.phase)
    except RuntimeFailure as exc:
        if not isinstance(exc, UserCodeError):
            if stops.signum is not None:  # a child that we stopped failed: report the stop
                return _stopped(paths, stops.signum, stops.stop_phase or stops.current)
            if stops.timed_out is not None:
                headline, _, detail = str(exc).partition("\n")
                return _report(
                    paths,
                    failure_reason(
                        f"{stops.timed_out}: time limit exceeded; raise {PIP_TIMEOUT_ENV} or "
                        f"make the install faster. {headline}",
                        detail,
                    ),
                    exc.exit_code,
                )
        return _report(paths, _failure_text(exc), exc.exit_code)
    except SystemExit as exc:  # argparse: --help or a bad option
        return exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # a bug of ours must still end the job honestly
        tail = traceback.format_exc()
        _log(tail)
        if stops.signum is not None:
            return _stopped(paths, stops.signum, stops.stop_phase or stops.current)
        return _report(paths, failure_reason(f"internal error in train: {exc!r}", tail), 1)
    write_success(paths.output_dir)
    _log("training succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())

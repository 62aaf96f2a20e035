"""The container's ``train`` command (CONTRACT.md §1 and §2).

Reads the training environment, fetches the code, installs its requirements, launches the entry
point (as a process, or under mpirun), forwards SIGTERM, and always ends with a ``success`` or
``failure`` file. Exceptions become exit codes here and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence

from chainer_sagemaker_runtime._proc import Child, format_command
from chainer_sagemaker_runtime.code import fetch_code, install_requirements
from chainer_sagemaker_runtime.environment import Paths, TrainingEnv
from chainer_sagemaker_runtime.errors import RuntimeFailure, UserCodeError
from chainer_sagemaker_runtime.preflight import check_before_fetch
from chainer_sagemaker_runtime.training import cluster
from chainer_sagemaker_runtime.training.launch import child_environ, resolve_entry
from chainer_sagemaker_runtime.training.mpi import forwarded_env_names, mpirun_argv, resolve_mpi
from chainer_sagemaker_runtime.training.outcome import failure_reason, write_failure, write_success

__all__ = ["main", "run_forwarding_signals"]

DEFAULT_GRACE_SECONDS = 30.0
LOCAL_HOSTS_ENV = "CHAINER_SAGEMAKER_LOCAL_HOSTS"


def _log(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


def run_forwarding_signals(child: Child, grace: float) -> int:
    """Wait for ``child``; SIGTERM/SIGINT go to its process group, SIGKILL after ``grace`` s."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _log(f"received {signal.Signals(signum).name}; forwarding it to the training process")
        child.signal_group(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        killed = False
        deadline: float | None = None
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + grace
                if deadline is not None and not killed and time.monotonic() > deadline:
                    _log(
                        f"the training process did not exit {grace:.0f} s after SIGTERM; killing it"
                    )
                    child.signal_group(signal.SIGKILL)
                    killed = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _train(env: TrainingEnv) -> None:
    paths = env.paths
    paths.make_dirs()
    code_dir = fetch_code(env.module_dir, paths.code_dir, region=env.region)
    install_requirements(code_dir)
    settings = resolve_mpi(env.reserved, num_hosts=len(env.hosts), num_gpus=env.num_gpus)
    environ = child_environ(env, code_dir)
    # Local mode (CHAINER_SAGEMAKER_LOCAL_HOSTS=1) runs all hosts' processes on this machine.
    all_local = os.environ.get(LOCAL_HOSTS_ENV) == "1"
    multi_host = len(env.hosts) > 1 and not all_local

    if settings.enabled and multi_host and not env.is_master:
        _log(f"worker {env.current_host}: starting sshd, waiting for {env.master_hostname}")
        worker_sshd = cluster.start_sshd()
        try:
            timeout = cluster.wait_seconds("SAGEMAKER_MPI_WAIT_SECONDS", 900)
            cluster.wait_for_hosts([env.master_hostname], timeout=timeout)
            cluster.wait_for_mpi_daemon(env.master_hostname, start_timeout=timeout)
        finally:
            worker_sshd.terminate()
        _log("MPI processes on this host have finished")
        return

    entry = resolve_entry(env, code_dir)
    command = entry.argv(env.user_args(), mpi=settings.enabled)
    sshd: subprocess.Popen[bytes] | None = None
    if settings.enabled:
        if multi_host:
            sshd = cluster.start_sshd()
            others = [h for h in env.hosts if h != env.current_host]
            timeout = cluster.wait_seconds("SAGEMAKER_MPI_WAIT_SECONDS", 900)
            _log(f"master: waiting until {others} are reachable over SSH")
            cluster.wait_for_hosts(others, timeout=timeout, check=cluster.can_ssh)
        command = mpirun_argv(
            hosts=env.hosts,
            settings=settings,
            interface=env.network_interface_name,
            forwarded=forwarded_env_names(environ),
            command=command,
            nccl_debug=environ.get("NCCL_DEBUG", "INFO"),
            all_local=all_local,
        )
    _log(f"running: {format_command(command)}")
    try:
        child = Child(command, cwd=code_dir, env=environ)
        grace = cluster.wait_seconds("SAGEMAKER_SIGTERM_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)
        returncode = run_forwarding_signals(child, grace)
    finally:
        if sshd is not None:
            sshd.terminate()
    if returncode != 0:
        how = (
            f"was killed by signal {signal.Signals(-returncode).name}"
            if returncode < 0
            else f"exited with code {returncode}"
        )
        raise UserCodeError(
            failure_reason(
                f"ExecuteUserScriptError: `{format_command(command)}` {how}", child.stderr_tail()
            ),
            _exit_code(returncode),
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Run the SageMaker training job under $SAGEMAKER_BASE_DIR (default /opt/ml).",
    )
    parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    paths = Paths.from_environ()
    try:
        env = TrainingEnv.load()
        check_before_fetch(env)  # every configuration mistake before any download or pip
        _train(env)
    except RuntimeFailure as exc:
        reason = (
            str(exc)
            if isinstance(exc, UserCodeError)
            else failure_reason(f"{type(exc).__name__}: {exc}")
        )
        write_failure(paths.output_dir, reason)
        _log(f"training failed: {reason}")
        return exc.exit_code
    except Exception as exc:  # a bug of ours must still end the job honestly
        tail = traceback.format_exc()
        write_failure(paths.output_dir, failure_reason(f"internal error in train: {exc!r}", tail))
        _log(tail)
        return 1
    write_success(paths.output_dir)
    _log("training succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A two-host MPI job with each host's `train` as PID 1 of its own namespaces (see twohost.py):
the real master/worker flow over real sshd and mpirun (docs/contract.md §2)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from twohost import TwoHosts, two_hosts

pytestmark = pytest.mark.timeout(150)

WHO_AM_I = """\
import json, os, pathlib, sys, time
import sagemaker_containers
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
env = sagemaker_containers.training_env()
seen = {
    "rank": rank,
    "uname": os.uname().nodename,
    "CURRENT_HOST": os.environ.get("CURRENT_HOST"),
    "SM_CURRENT_HOST": os.environ.get("SM_CURRENT_HOST"),
    "SM_TRAINING_ENV.current_host": json.loads(os.environ["SM_TRAINING_ENV"])["current_host"],
    "training_env.current_host": env.current_host,
    "training_env.is_master": env.is_master,
}
pathlib.Path(os.environ["SM_MODEL_DIR"], f"rank-{rank}.json").write_text(json.dumps(seen))
MPI.COMM_WORLD.Barrier()
time.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
"""


def _configure(cluster: TwoHosts, code_dir: Path, script: str) -> None:
    (code_dir / "who.py").write_text(script)
    cluster.configure({"sagemaker_program": "who.py", "sagemaker_submit_directory": str(code_dir)})


def test_each_rank_knows_its_own_host_and_the_worker_ends_with_the_master(
    tmp_path: Path, code_dir: Path
) -> None:
    with two_hosts(tmp_path / "cluster") as cluster:
        _configure(cluster, code_dir, WHO_AM_I)
        worker = cluster.start("algo-2", SAGEMAKER_MPI_WAIT_SECONDS="60")
        master = cluster.start("algo-1", SAGEMAKER_MPI_WAIT_SECONDS="60")
        assert master.wait(120) == 0, master.stderr[-4000:]
        master_end = time.monotonic()
        assert worker.wait(20) == 0, worker.stderr[-4000:]
        worker_lag = time.monotonic() - master_end
        assert worker_lag < 5, f"the worker ended {worker_lag:.1f} s after the master"
        assert (master.job.output / "success").exists()
        on_master = json.loads((master.job.model / "rank-0.json").read_text())
        on_worker = json.loads((worker.job.model / "rank-1.json").read_text())
    assert set(on_master.values()) - {0, True} == {"algo-1"}, on_master
    assert on_worker == {
        "rank": 1,
        "uname": "algo-2",
        "CURRENT_HOST": "algo-2",
        "SM_CURRENT_HOST": "algo-2",
        "SM_TRAINING_ENV.current_host": "algo-2",
        "training_env.current_host": "algo-2",
        "training_env.is_master": False,
    }
    assert "[train] rank 1 on algo-2 exited with code 0" in master.stderr


def test_the_worker_ends_within_seconds_when_the_master_dies(
    tmp_path: Path, code_dir: Path
) -> None:
    with two_hosts(tmp_path / "cluster") as cluster:
        _configure(cluster, code_dir, WHO_AM_I)
        extra = {"SAGEMAKER_MPI_WAIT_SECONDS": "60", "HOLD_SECONDS": "300"}
        worker = cluster.start("algo-2", **extra)
        master = cluster.start("algo-1", **extra)
        rank_file = worker.job.model / "rank-1.json"
        deadline = time.monotonic() + 90
        while not rank_file.exists():
            assert time.monotonic() < deadline, master.stderr[-3000:] + worker.stderr[-3000:]
            assert master.proc is not None
            assert master.proc.poll() is None, master.stderr[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(master.train_pid(), signal.SIGKILL)  # the master host vanishes with all in it
        gone = time.monotonic()
        assert worker.wait(30) == 0, worker.stderr[-3000:]
        lag = time.monotonic() - gone
    assert lag < 5, f"the worker ended {lag:.1f} s after the master died:\n{worker.stderr}"
    # Two things see the master's processes die at the same moment (their sockets close): the
    # worker's watch of the master's sshd ("went away") and Open MPI's daemon, whose end the
    # worker then sees ("have finished"). Either may come first; the worker ends promptly both
    # ways. The watch on its own is tested in test_cluster.py.
    ended = ("the master host algo-1 went away", "MPI processes on this host have finished")
    assert any(line in worker.stderr for line in ended), worker.stderr[-3000:]


CHECKPOINT_ON_STOP = """\
import os, pathlib, signal, sys, time
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
model = pathlib.Path(os.environ["SM_MODEL_DIR"])

def stop(*_):
    time.sleep(2)  # longer than Open MPI's 1 s kill timeout
    (model / f"checkpoint-{rank}").write_text(os.environ["SM_CURRENT_HOST"])
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
(model / f"ready-{rank}").touch()
while True:
    time.sleep(0.1)
"""


@pytest.mark.parametrize("signalled", ["every host", "master only"])
def test_sigterm_reaches_every_rank_on_every_host_and_the_job_succeeds(
    tmp_path: Path, code_dir: Path, signalled: str
) -> None:
    """StopTrainingJob signals every host's container: each host's train stops its own ranks,
    which checkpoint and exit 0; the master reports success, the worker exits 0. A stop that
    reaches the master only is passed on to the worker's train over SSH."""
    with two_hosts(tmp_path / "cluster") as cluster:
        _configure(cluster, code_dir, CHECKPOINT_ON_STOP)
        worker = cluster.start("algo-2", SAGEMAKER_MPI_WAIT_SECONDS="60")
        master = cluster.start("algo-1", SAGEMAKER_MPI_WAIT_SECONDS="60")
        ready = [master.job.model / "ready-0", worker.job.model / "ready-1"]
        deadline = time.monotonic() + 90
        while not all(p.exists() for p in ready):
            assert time.monotonic() < deadline, master.stderr[-3000:] + worker.stderr[-3000:]
            time.sleep(0.1)
        for host in (master, worker) if signalled == "every host" else (master,):
            os.kill(host.train_pid(), signal.SIGTERM)
        assert master.wait(60) == 0, master.stderr[-4000:] + "\nWORKER:\n" + worker.stderr[-4000:]
        assert worker.wait(20) == 0, worker.stderr[-4000:]
        assert (master.job.model / "checkpoint-0").read_text() == "algo-1"
        assert (worker.job.model / "checkpoint-1").read_text() == "algo-2"
        assert (master.job.output / "success").exists()

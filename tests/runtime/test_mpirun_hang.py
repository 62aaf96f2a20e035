"""An mpirun that never exits after its ranks ended does not hold the job (docs/contract.md §2).

Open MPI 4.1.4's mpirun sometimes hangs after a SIGTERM with its ranks left as zombies (seen
in CI under load). That hang cannot be caused on demand, so here a stand-in `mpirun`, first on
PATH, does what the hung one does: it starts its "ranks", which print the wrapper's end lines
as ``--tag-output`` would and exit, then ignores SIGTERM and never reaps them. Everything else
(`train`, its watch of the ranks' output, the failure file) is real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtree import JobTree

pytestmark = pytest.mark.timeout(120)

HUNG_MPIRUN = """\
#!{python}
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open({pid_file!r}, "w").write(str(os.getpid()))
for rank, code in enumerate({codes!r}):
    if os.fork() == 0:
        line = f"[1,{{rank}}]<stderr>:[train] rank {{rank}} on algo-1 exited with code {{code}}\\n"
        os.write(2, line.encode())
        os._exit(code)
while True:
    time.sleep(1)
"""


@pytest.fixture(autouse=True)
def _no_stand_in_left(code_dir: Path) -> Iterator[None]:
    yield
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int((code_dir.parent / "mpirun.pid").read_text()), signal.SIGKILL)


def _job_with_hung_mpirun(job: JobTree, code_dir: Path, codes: list[int]) -> dict[str, str]:
    bin_dir = code_dir.parent / "fake-bin"
    bin_dir.mkdir()
    fake = bin_dir / "mpirun"
    pid_file = str(code_dir.parent / "mpirun.pid")
    fake.write_text(HUNG_MPIRUN.format(python="/usr/bin/python3", codes=codes, pid_file=pid_file))
    fake.chmod(0o755)
    (code_dir / "job.py").write_text("print('never run by the stand-in')\n")
    job.configure(
        {
            "sagemaker_program": "job.py",
            "sagemaker_submit_directory": str(code_dir),
            "sagemaker_use_mpi": True,
            "sagemaker_process_slots_per_host": len(codes),
        }
    )
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_ranks_that_all_exited_0_are_a_success_although_mpirun_hangs(
    job: JobTree, code_dir: Path
) -> None:
    extra = _job_with_hung_mpirun(job, code_dir, [0, 0])
    started = time.monotonic()
    result = job.train(timeout=60, **extra)
    assert time.monotonic() - started < 30
    assert result.returncode == 0, result.stderr
    assert (job.output / "success").exists()
    assert "mpirun has not exited 10 s after every process it started ended" in result.stderr


def test_a_failed_rank_is_named_although_mpirun_hangs(job: JobTree, code_dir: Path) -> None:
    extra = _job_with_hung_mpirun(job, code_dir, [0, 3])
    started = time.monotonic()
    result = job.train(timeout=60, **extra)
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    headline = job.failure().splitlines()[0]
    assert "rank 1 on algo-1 exited with code 3" in headline
    assert "mpirun hung after its processes ended and was killed 10 s later" in headline

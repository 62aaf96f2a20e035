"""Around each rank: reading mpirun's tagged output (RankWatch; Open MPI tags every line *and*
every forwarded chunk, so a rank's line may arrive in tagged pieces, split anywhere by the
pipe), and the environment a rank gets on its host (host_environ)."""

from __future__ import annotations

import pytest
from jobtree import JobTree

from chainer_sagemaker_runtime.training.ranks import RankWatch, host_environ

STREAM = (
    b"[1,0]<stderr>:noise from rank 0\n"
    b"[1,1]<stderr>:Traceback (most recent call last):\n"
    b'[1,1]<stderr>:  File "rank.py", line 6\n'
    b"[1,1]<stderr>:RuntimeError[1,1]<stderr>:: [1,1]<stderr>:lost \xe6\x97\xa5\xe6\x9c\xac\n"
    b"--------------------------------------------------------------------------\n"
    b"MPI_ABORT was invoked on rank 1\n"
    b"[1,0]<stdout>:[train] rank 0 on algo-1 was killed by SIGTERM\n"
    b"[1,1]<stderr>:[train] rank 1 on algo-2 exited with code 1\n"
)


@pytest.mark.parametrize("size", [1, 3, 7, 16, 1000])
def test_lines_are_rebuilt_per_rank_whatever_the_chunking(size: int) -> None:
    watch = RankWatch()
    for i in range(0, len(STREAM), size):
        watch.feed(STREAM[i : i + size])
    assert watch.tail_of(1).splitlines() == [
        "Traceback (most recent call last):",
        '  File "rank.py", line 6',
        "RuntimeError: lost 日本",
    ]
    assert watch.tail_of(0) == "noise from rank 0"  # mpirun's own lines belong to no rank
    failing = watch.first_failure()
    assert failing is not None
    assert (failing.rank, failing.host, failing.code) == (1, "algo-2", 1)
    assert watch.failing_rank() == 1
    assert watch.ends[0].signal_name == "SIGTERM"


def test_a_huge_line_keeps_only_a_bounded_tail() -> None:
    watch = RankWatch()
    watch.feed(b"[1,0]<stderr>:")
    for _ in range(200):
        watch.feed(b"x" * 65536)
    watch.feed(b"\n[1,0]<stderr>:the end\n")
    assert watch.tail_of(0).endswith("the end")
    assert len(watch.tail_of(0)) < 16384


def test_a_worker_rank_sees_its_containers_environment_under_what_mpirun_forwards(
    job: JobTree,
) -> None:
    """A rank that came through sshd and Open MPI's daemon starts from its host's `train`
    environment (the job's Environment), takes mpirun's forwarded values over it, keeps its
    own host's credential endpoint, and gets this host's per-host variables."""
    job.configure({}, hosts=["algo-1", "algo-2"], current_host="algo-2")
    container = {
        "JOB_SETTING": "from the job",
        "PATH": "/container/bin",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/algo-2",
    }
    forwarded = {
        "SAGEMAKER_BASE_DIR": str(job.base),
        "PATH": "/master/bin",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/algo-1",
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "0",
    }
    rank = host_environ(forwarded, container)
    assert rank["JOB_SETTING"] == "from the job"
    assert rank["PATH"] == "/master/bin"
    assert rank["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] == "/v2/credentials/algo-2"
    assert rank["SM_CURRENT_HOST"] == rank["CURRENT_HOST"] == "algo-2"

"""How fast `train` ends: SIGTERM to exit, and a worker host after its master ends.

    .venv/bin/python benchmarks/train_signals.py [--runs 10] [--host-runs 3]

1. SIGTERM to exit (target < 0.5 s): `train` runs a script whose SIGTERM handler exits at once;
   the time from `kill -TERM <train>` to `train`'s exit, median over ``--runs``.
2. Worker after the master (target < 5 s): a two-host MPI job, each host's `train` as PID 1 of
   its own namespaces over loopback (tests/runtime/twohost.py, needs root); the time from the
   master's end to the worker's exit, when the master finishes normally and when the master
   host is killed outright (SIGKILL of its PID 1) while the ranks run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "runtime"))

from jobtree import BIN, JobTree  # noqa: E402
from twohost import two_hosts  # noqa: E402

QUICK_EXIT = (
    "import pathlib, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "pathlib.Path(sys.argv[-1]).touch()\n"
    "time.sleep(60)\n"
)

RANKS = """\
import os, pathlib, time
from mpi4py import MPI
rank = MPI.COMM_WORLD.Get_rank()
pathlib.Path(os.environ["SM_MODEL_DIR"], f"rank-{rank}").touch()
MPI.COMM_WORLD.Barrier()
time.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
"""


def sigterm_to_exit(runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "src"
        code.mkdir()
        (code / "quick.py").write_text(QUICK_EXIT)
        for i in range(runs):
            job = JobTree(Path(tmp) / f"ml-{i}")
            ready = Path(tmp) / f"ready-{i}"
            job.configure(
                {
                    "sagemaker_program": "quick.py",
                    "sagemaker_submit_directory": str(code),
                    "ready": str(ready),
                }
            )
            proc = subprocess.Popen(
                [str(BIN / "train")],
                env=job.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not ready.exists():
                time.sleep(0.01)
            started = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code_ = proc.wait(60)
            times.append(time.perf_counter() - started)
            assert code_ == 0, f"train exited {code_}"
    return times


def worker_after_master(kill_master: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp, two_hosts(Path(tmp) / "cluster") as cluster:
        code = Path(tmp) / "src"
        code.mkdir()
        (code / "ranks.py").write_text(RANKS)
        cluster.configure(
            {"sagemaker_program": "ranks.py", "sagemaker_submit_directory": str(code)}
        )
        extra = {"SAGEMAKER_MPI_WAIT_SECONDS": "60", "HOLD_SECONDS": "300" if kill_master else "0"}
        worker = cluster.start("algo-2", **extra)
        master = cluster.start("algo-1", **extra)
        if kill_master:
            marker = worker.job.model / "rank-1"
            deadline = time.monotonic() + 90
            while not marker.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(master.stderr[-2000:] + worker.stderr[-2000:])
                time.sleep(0.05)
            time.sleep(0.5)
            os.kill(master.train_pid(), signal.SIGKILL)
            master.wait(30)
        else:
            code_ = master.wait(120)
            if code_ != 0:
                raise RuntimeError(master.stderr[-3000:])
        ended = time.perf_counter()
        worker.wait(60)
        return time.perf_counter() - ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--host-runs", type=int, default=3)
    args = parser.parse_args()
    quick = sigterm_to_exit(args.runs)
    print(f"SIGTERM to exit (script exits at once), {args.runs} runs:")
    print(
        f"  median {statistics.median(quick) * 1000:6.0f} ms, max {max(quick) * 1000:6.0f} ms"
        "  (target < 500 ms)"
    )
    results: dict[str, list[float]] = {}
    for kill in (False, True):
        label = "master killed" if kill else "master finished"
        results[label] = [worker_after_master(kill) for _ in range(args.host_runs)]
    for label, values in results.items():
        print(f"worker exit after the master ({label}), {args.host_runs} runs:")
        print(
            f"  median {statistics.median(values):6.2f} s, max {max(values):6.2f} s  (target < 5 s)"
        )
    print(json.dumps({"sigterm_to_exit_s": quick, **results}))


if __name__ == "__main__":
    main()

"""Multi-host local runs (issue 10): ChainerMN throughput across hosts, start-up, failure end.

    .venv/bin/python benchmarks/multihost.py [--epochs 6] [--repeats 3] [--train-copies 8]

Every job runs through local mode with each instance its own host (network, PID and mount
namespaces, sshd, the runtime's master/worker flow; needs root):

1. ChainerMN throughput of the digits example (examples/digits/train_mn.py): 1 host x 1 rank
   vs 2 hosts x 1 rank, same global batch (``--global-batch``, default 1024 = 1 x 1024 =
   2 x 512); images per second over the epochs after the first (from each epoch's report
   line), on the training set repeated ``--train-copies`` times (default 8: 11 504 images,
   about 11 steps an epoch instead of 1.4, so each epoch's evaluation and reports weigh less
   than the steps). Every step allreduces the MLP's 7.2 MB of gradients over TCP, so small
   batches measure the network more than the hosts. Target: 2 hosts >= 1.5x one, on a quiet
   machine (two hosts need both cores; any other load takes from the two-host run first).
   ``--blas-threads`` sets OMP/OpenBLAS threads per rank (default 1: each host computes on one
   core, as a one-core instance would; both hosts share this machine's cores; passed to every
   rank with mpirun's ``-x``).
2. Job start (``run_training`` called) to the script's first line, for 1, 2 and 3 hosts.
3. A rank failure (the last rank exits 1) to every host ended, for 2 and 3 hosts.

Prints one line per number, and ``--json FILE`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits"
CODE = Path(__file__).resolve().parent / "multihost_code"
STACK = "Bench"
TAG = re.compile(r"\[\d+,\d+\]<std(?:out|err)>:")  # mpirun --tag-output
EPOCH_LINE = re.compile(r"^\s*(\d+)\s+[0-9.e+-]+\s+[0-9.]+\s*$")  # PrintReport: epoch loss acc


class Clock:
    """A ``log`` callback that records when lines matching a marker first arrive."""

    def __init__(self, verbose: bool) -> None:
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.verbose = verbose

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))
        if self.verbose:
            print(f"  {time.monotonic() - self.start:7.2f} {line}", flush=True)

    def first(self, text: str) -> float:
        return next(t for t, line in self.lines if text in line)


def synthesize(out: Path) -> Path:
    from aws_cdk import App, Stack

    from chainer_sagemaker_cdk import ChainerEstimator, SourceCode

    app = App(outdir=str(out))
    stack = Stack(app, STACK)
    mn = SourceCode.from_directory(EXAMPLE, "train_mn.py")
    first = SourceCode.from_directory(CODE, "first_line.py")
    fail = SourceCode.from_directory(CODE, "fail_last_rank.py")
    for count in (1, 2, 3):
        ChainerEstimator(stack, f"Mn{count}", code=mn, instance_count=count, use_mpi=True)
        ChainerEstimator(stack, f"First{count}", code=first, instance_count=count)
        ChainerEstimator(stack, f"Fail{count}", code=fail, instance_count=count, use_mpi=True)
    app.synth()
    return out


def run(
    assembly: Path,
    job: str,
    work: Path,
    clock: Clock,
    **kwargs: Any,
) -> Any:
    from chainer_sagemaker_cdk.local import CloudAssembly, run_training

    spec = CloudAssembly(assembly).training_job(STACK, job)
    clock.start = time.monotonic()
    return run_training(
        spec, kwargs.pop("channels", {}), work, log=clock, hosts="namespaces", **kwargs
    )


def throughput(
    assembly: Path, data: Path, work: Path, hosts: int, args: argparse.Namespace
) -> float:
    epochs, verbose = args.epochs, args.verbose
    clock = Clock(verbose)
    threads = str(args.blas_threads)
    result = run(
        assembly,
        f"Mn{hosts}",
        work,
        clock,
        channels={"train": data / "train", "test": data / "test"},
        hyperparameters={
            "epochs": epochs,
            "batch-size": args.global_batch // hosts,
            # Ranks on other hosts get what mpirun forwards, not their host's environment.
            "sagemaker_additional_mpi_options": (
                f"-x OMP_NUM_THREADS={threads} -x OPENBLAS_NUM_THREADS={threads}"
            ),
        },
    )
    if not result.succeeded:
        sys.exit(f"the {hosts}-host ChainerMN job failed: {result.failure_reason}")
    arrived: dict[int, float] = {}
    for t, line in clock.lines:
        text = TAG.sub("", line.split("] ", 1)[-1])
        match = EPOCH_LINE.match(text)
        if match:
            arrived.setdefault(int(match.group(1)), t)
    if not all(e in arrived for e in range(1, epochs + 1)):
        sys.exit(f"the {hosts}-host job's log lacks epoch report lines: {sorted(arrived)}")
    images = len(np.load(data / "train" / "train.npz")["y"])
    return images * (epochs - 1) / (arrived[epochs] - arrived[1])


def _tile_train_set(path: Path, copies: int) -> None:
    """The training set ``copies`` times over: more steps per epoch, so each epoch's fixed cost
    (evaluation, reports, the iterator's epoch end) weighs less than the steps themselves."""
    with np.load(path) as arrays:
        tiled = {name: np.concatenate([arrays[name]] * copies) for name in arrays.files}
    np.savez(path, **tiled)


def repeat(times: int, measure: Callable[[int], float]) -> list[float]:
    return [measure(i) for i in range(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--global-batch", type=int, default=1024)
    parser.add_argument("--train-copies", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--only", choices=("throughput", "startup", "failure"))
    args = parser.parse_args()
    from chainer_sagemaker_cdk.local import namespaces_unavailable

    why = namespaces_unavailable()
    if why:
        sys.exit(f"multi-host local runs are not possible here: {why}")
    numbers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="multihost-bench-") as tmp:
        root = Path(tmp)
        assembly = synthesize(root / "cdk.out")
        data = root / "data"
        subprocess.run(
            [sys.executable, str(EXAMPLE / "prepare_data.py"), str(data)],
            check=True,
            capture_output=True,
        )
        if args.train_copies > 1:
            _tile_train_set(data / "train" / "train.npz", args.train_copies)

        if args.only in (None, "throughput"):
            # Interleaved (1, 2, 1, 2, ...), so a change in the machine's load hits both alike.
            rates: dict[int, list[float]] = {1: [], 2: []}
            for i in range(args.repeats):
                for hosts in (1, 2):
                    work = root / f"mn{hosts}-{i}"
                    rates[hosts].append(throughput(assembly, data, work, hosts, args))
            for hosts, runs in rates.items():
                numbers[f"throughput_{hosts}_hosts_images_per_s"] = statistics.median(runs)
                print(
                    f"ChainerMN {hosts} host(s) x 1 rank, global batch {args.global_batch}: "
                    f"{statistics.median(runs):.0f} images/s (runs: {[round(r) for r in runs]})",
                    flush=True,
                )
            pairs = sorted(two / one for one, two in zip(rates[1], rates[2], strict=True))
            numbers["throughput_ratio_per_pair"] = pairs
            ratio = (
                numbers["throughput_2_hosts_images_per_s"]
                / numbers["throughput_1_hosts_images_per_s"]
            )
            numbers["throughput_ratio_2_over_1"] = ratio
            print(
                f"2 hosts / 1 host: {ratio:.2f}x of the medians, "
                f"pairs {[round(p, 2) for p in pairs]} (target >= 1.5x)",
                flush=True,
            )

        if args.only in (None, "startup"):
            for hosts in (1, 2, 3):

                def first_line(i: int, h: int = hosts) -> float:
                    clock = Clock(args.verbose)
                    # A worker that misses a job this short may wait for its master: bound it.
                    bound = {"SAGEMAKER_MPI_WAIT_SECONDS": "30"}
                    work = root / f"first{h}-{i}"
                    result = run(assembly, f"First{h}", work, clock, environment=bound)
                    if not result.succeeded:
                        print(f"  (the {h}-host job failed: {result.failure_reason})", flush=True)
                    return clock.first("first line of the script") - clock.start

                times = repeat(args.repeats, first_line)
                numbers[f"start_to_first_line_{hosts}_hosts_s"] = statistics.median(times)
                print(
                    f"job start to the script's first line, {hosts} host(s): "
                    f"{statistics.median(times):.2f} s (runs: {[round(t, 2) for t in times]})",
                    flush=True,
                )

        if args.only in (None, "failure"):
            for hosts in (2, 3):

                def failure(i: int, h: int = hosts) -> float:
                    clock = Clock(args.verbose)
                    result = run(assembly, f"Fail{h}", root / f"fail{h}-{i}", clock)
                    ended = time.monotonic()
                    if result.succeeded:
                        sys.exit("the failing job succeeded")
                    return ended - clock.first("failing now")

                times = repeat(args.repeats, failure)
                numbers[f"rank_failure_to_all_hosts_ended_{hosts}_hosts_s"] = statistics.median(
                    times
                )
                print(
                    f"rank failure to every host ended, {hosts} hosts: "
                    f"{statistics.median(times):.2f} s (runs: {[round(t, 2) for t in times]}); "
                    "target < 30 s",
                    flush=True,
                )
    numbers["load_average_at_end"] = os.getloadavg()[0]
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()

"""A training script for the multi-host tests, run by `train` under mpirun on every host.

``--mode`` picks what the ranks do (every rank first prints ``rank R of N on HOST ready``):

- ``report``: print what the rank sees of its host as one ``probe:`` JSON line, and save a
  model only where ``current_host`` is ``hosts[0]`` (as scripts written for SageMaker do);
- ``fail``: rank ``--fail-rank`` exits with code 3 after printing ``rank R failing``; the
  others sleep (a job that must be ended for them);
- ``sleep``: every rank sleeps; on SIGTERM it prints ``rank R on HOST got SIGTERM`` and exits 0;
- ``exit``: every rank returns at once (before the ready line): a job over in a blink.
"""

import sys

if sys.argv[1:3] == ["--mode", "exit"]:  # over before anything else is imported
    raise SystemExit(0)

import argparse
import json
import os
import signal
import socket
import time
from pathlib import Path

from mpi4py import MPI

import sagemaker_containers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="report")
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--sleep", type=float, default=300.0)
    args, _ = parser.parse_known_args()
    comm = MPI.COMM_WORLD
    rank, size, host = comm.Get_rank(), comm.Get_size(), socket.gethostname()

    def on_sigterm(signum: int, frame: object) -> None:
        print(f"rank {rank} on {host} got SIGTERM", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    comm.Barrier()
    print(f"rank {rank} of {size} on {host} ready", flush=True)
    if args.mode == "report":
        env = sagemaker_containers.training_env()
        base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        resource = json.loads((base / "input/config/resourceconfig.json").read_text())
        seen = {
            "rank": rank,
            "hostname": host,
            "training_env.current_host": env.current_host,
            "SM_CURRENT_HOST": os.environ.get("SM_CURRENT_HOST"),
            "CURRENT_HOST": os.environ.get("CURRENT_HOST"),
            "SM_TRAINING_ENV.current_host": json.loads(os.environ["SM_TRAINING_ENV"])[
                "current_host"
            ],
            "resourceconfig.current_host": resource["current_host"],
            "pid1": Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode(),
            "address": socket.gethostbyname(host),
            "PROBE_JOB_SETTING": os.environ.get("PROBE_JOB_SETTING"),
            **{
                f"channel {name}": sorted(
                    str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()
                )
                for name in ("shards", "whole")
                if (path := base / "input/data" / name).exists()
            },
        }
        print("probe: " + json.dumps(seen), flush=True)
        if env.current_host == env.hosts[0] and rank == 0:
            Path(env.model_dir, "model.txt").write_text(f"saved on {env.current_host}\n")
        comm.Barrier()
        return
    if args.mode == "fail" and rank == args.fail_rank:
        time.sleep(1.0)
        print(f"rank {rank} failing", flush=True)
        sys.exit(3)
    time.sleep(args.sleep)


if __name__ == "__main__":
    main()

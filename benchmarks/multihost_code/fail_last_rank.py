"""Benchmark script: the last rank fails once every rank runs; the others would sleep 300 s."""

import sys
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
comm.Barrier()
if comm.Get_rank() == comm.Get_size() - 1:
    print(f"rank {comm.Get_rank()} failing now", flush=True)
    sys.exit(1)
time.sleep(300)

"""Benchmark script: its first statement prints a line (job start to script start)."""

print("first line of the script", flush=True)

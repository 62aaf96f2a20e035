"""Benchmark ``serve`` against two anchors (issues 3 and 11).

The anchors are the old SageMaker Chainer serving stack (nginx -> gunicorn/gevent -> Flask,
``sagemaker-containers``) and the current AWS one (``sagemaker-inference`` on
``multi-model-server``, a Java front end with Python backend workers). One command, from the
repository root::

    .venv/bin/python benchmarks/serve_bench.py            # about 8 minutes on 2 cores

It builds the anchor virtualenvs when missing (``benchmarks/anchor/build_venv.py``,
``benchmarks/anchor/build_mms_venv.py``; the second needs ``java``), trains the digits MLP
(784-1000-1000-10, float32) once, starts the servers on 127.0.0.1 with 2 workers each, and for
every scenario of the issue's Measure table runs ``wrk`` against the stacks in turn (A B C A B
C A B C), then prints the median of the per-round ratios of ours to each anchor. It also measures
start-to-first-200 on ``/invocations`` (alternating fresh starts) and the in-process ceiling
(decode + predict + encode in a loop on one core). Traffic stays on the loopback interface and
every step is bounded in time. ``--quick`` shortens every run for a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks" / "anchor"))
sys.path.insert(0, str(ROOT / "examples" / "digits"))

import build_mms_venv  # noqa: E402
import build_venv  # noqa: E402
import prepare_data  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
WORKERS = 2

_WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")
wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.1f %.1f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    ctype: str
    rows: int
    connections: int
    metrics: tuple[str, ...]  # which ratios the issue asks for


SCENARIOS = [
    Scenario("NPY 1x784, 1 connection", "application/x-npy", 1, 1, ("p50", "p99")),
    Scenario("NPY 1x784, 8 connections", "application/x-npy", 1, 8, ("rps", "p99")),
    Scenario("NPY 1x784, 32 connections", "application/x-npy", 1, 32, ("rps",)),
    Scenario("JSON 1x784, 8 connections", "application/json", 1, 8, ("rps",)),
    Scenario("CSV 8x784, 8 connections", "text/csv", 8, 8, ("rows",)),
]
TARGETS = {
    ("NPY 1x784, 1 connection", "p50"): ("<=", 0.5),
    ("NPY 1x784, 1 connection", "p99"): ("<=", 0.5),
    ("NPY 1x784, 8 connections", "rps"): (">=", 2.5),
    ("NPY 1x784, 8 connections", "p99"): ("<=", 0.5),
    ("NPY 1x784, 32 connections", "rps"): (">=", 3.5),
    ("JSON 1x784, 8 connections", "rps"): (">=", 2.5),
    ("CSV 8x784, 8 connections", "rows"): (">=", 3.0),
    ("start to first 200", "s"): ("<=", 0.25),
}


def body_for(ctype: str, x: np.ndarray) -> bytes:
    if ctype == "application/x-npy":
        buf = io.BytesIO()
        np.save(buf, x)
        return buf.getvalue()
    if ctype == "application/json":
        return json.dumps(x.tolist()).encode()
    return ("\n".join(",".join(f"{v:.6g}" for v in row) for row in x.tolist()) + "\n").encode()


def free_port(below: int | None = None) -> int:
    """A free port on 127.0.0.1 (``below``: under that number, outside the kernel's ephemeral
    range; multi-model-server refuses ports from 32767 up)."""
    if below is None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            return int(s.getsockname()[1])
    for port in random.Random().sample(range(20000, below), 200):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port below {below}")


def wait_for_200(port: int, body: bytes, ctype: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(
                HOST, port, timeout=max(1.0, deadline - time.monotonic())
            )
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


def _tail(log: Path, lines: int = 40) -> str:
    """The end of a server's log (the temporary directory is gone once the script exits)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class Stack:
    """One server (ours or the anchor) started from a fresh base directory."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path
    ) -> None:
        self.name, self.port, self.log = name, port, log
        with open(log, "wb") as out:  # the anchor logs every request: its cost stays, unseen
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # nginx/gunicorn children of the anchor may outlive the launcher
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Bench:
    def __init__(self, work: Path, duration: float, pairs: int, mms: bool = True) -> None:
        self.work, self.duration, self.pairs = work, duration, pairs
        self.anchor_python = build_venv.build()
        self.mms_python = build_mms_venv.build() if mms else None
        self.names = ("anchor", "mms", "ours") if mms else ("anchor", "ours")
        data = work / "data"
        prepare_data.write_channels(data)
        self.model_dir = work / "model"
        print("training the digits MLP (784-1000-1000-10) ...", flush=True)
        subprocess.run(
            [
                str(VENV_BIN / "python"),
                str(ROOT / "examples" / "digits" / "train.py"),
                "--epochs",
                "1",
                "--train",
                str(data / "train"),
                "--test",
                str(data / "test"),
                "--model-dir",
                str(self.model_dir),
                "--output-data-dir",
                str(work / "output"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        test = np.load(data / "test" / "test.npz")
        self.x = (test["x"].astype(np.float32) / 255.0)[:8]
        self.wrk_script = work / "post.lua"
        self.wrk_script.write_text(_WRK_SCRIPT)
        self._runs = 0

    def _base(self, name: str) -> Path:
        self._runs += 1
        base = self.work / f"{name}-{self._runs}"
        shutil.copytree(self.model_dir, base / "model")
        (base / "run").mkdir()
        return base

    def start(self, name: str) -> Stack:
        base = self._base(name)
        port = free_port(below=32767 if name == "mms" else None)
        env = dict(
            os.environ,
            SAGEMAKER_BASE_DIR=str(base),
            SAGEMAKER_PROGRAM="train.py",
            SAGEMAKER_SUBMIT_DIRECTORY=str(ROOT / "examples" / "digits"),
            SAGEMAKER_BIND_TO_PORT=str(port),
            SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS),
            SAGEMAKER_MODEL_SERVER_TIMEOUT="60",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        if name == "ours":
            env["SAGEMAKER_BIND_TO_HOST"] = HOST
            return Stack(name, [str(VENV_BIN / "serve")], env, port, base / "run" / "log")
        env["ANCHOR_RUN_DIR"] = str(base / "run")
        if name == "mms":  # the toolkit reads the user module from <model_dir>/code
            assert self.mms_python is not None
            (base / "model" / "code").mkdir()
            shutil.copy(ROOT / "examples" / "digits" / "train.py", base / "model" / "code")
            env["PATH"] = f"{self.mms_python.parent}:{env['PATH']}"
            script = ROOT / "benchmarks" / "anchor" / "start_mms.py"
            return Stack(name, [str(self.mms_python), str(script)], env, port, base / "run" / "log")
        # the anchor binds 0.0.0.0 (nginx's template); nothing but the loopback is used
        env["PATH"] = f"{self.anchor_python.parent}:{env['PATH']}"
        script = ROOT / "benchmarks" / "anchor" / "start_anchor.py"
        return Stack(name, [str(self.anchor_python), str(script)], env, port, base / "run" / "log")

    # measurements ----------------------------------------------------------------------
    def startup(self) -> dict[str, list[float]]:
        body = body_for("application/json", self.x[:1])
        times: dict[str, list[float]] = {name: [] for name in self.names}
        for _ in range(self.pairs):
            for name in self.names:
                t0 = time.monotonic()
                stack = self.start(name)
                ok = wait_for_200(stack.port, body, "application/json", t0 + 120)
                elapsed = time.monotonic() - t0
                stack.stop()
                if not ok:
                    raise SystemExit(f"{name} did not answer 200 within 120 s:\n{_tail(stack.log)}")
                times[name].append(elapsed)
                print(f"  start to first 200, {name}: {elapsed:.2f} s", flush=True)
        return times

    def wrk(self, stack: Stack, sc: Scenario, body_file: Path, duration: float) -> dict[str, float]:
        env = dict(
            os.environ,
            BENCH_BODY=str(body_file),
            BENCH_CTYPE=sc.ctype,
            BENCH_ACCEPT=sc.ctype,
        )
        argv = [
            "wrk",
            "-t1",
            f"-c{sc.connections}",
            f"-d{duration:g}s",
            "--timeout",
            "10s",
            "-s",
            str(self.wrk_script),
            f"http://{HOST}:{stack.port}/invocations",
        ]
        out = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=True
        ).stdout
        match = re.search(r"BENCH (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+)", out)
        if not match:
            raise SystemExit(f"unexpected wrk output:\n{out}")
        requests, micros, p50, p99, errors = match.groups()
        if int(errors):
            print(f"  WARNING: {stack.name}: {errors} failed requests in {sc.name}", flush=True)
        rps = int(requests) / (int(micros) / 1e6)
        return {
            "rps": rps,
            "rows": rps * sc.rows,
            "p50": float(p50) / 1e3,
            "p99": float(p99) / 1e3,
            "errors": int(errors),
        }

    def warm(self, stack: Stack) -> None:
        """Bring every worker to steady state before measuring.

        The anchor initialises each gunicorn worker lazily on its first request, and concurrent
        first requests each run ``pip install`` of the user code (its global is not guarded);
        that is part of its start-up, not of its steady state, which is what the scenarios
        compare. So: load with 8 connections, then wait until 30 sequential requests on fresh
        connections (which spread over the workers) are all fast.
        """
        body = body_for("application/x-npy", self.x[:1])
        sc = Scenario("warm-up", "application/x-npy", 1, 8, ())
        body_file = self.work / "warm-body"
        body_file.write_bytes(body)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            self.wrk(stack, sc, body_file, 2)
            slowest = 0.0
            for _ in range(30):
                t0 = time.monotonic()
                if not wait_for_200(stack.port, body, "application/x-npy", t0 + 60):
                    break
                slowest = max(slowest, time.monotonic() - t0)
            else:
                if slowest < 0.2:
                    return
            time.sleep(1)
        raise SystemExit(f"{stack.name} did not reach a steady state:\n{_tail(stack.log)}")

    def scenarios(self) -> dict[str, dict[str, list[dict[str, float]]]]:
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        stacks = {name: self.start(name) for name in self.names}
        try:
            for stack in stacks.values():
                ok = wait_for_200(
                    stack.port,
                    body_for("application/json", self.x[:1]),
                    "application/json",
                    time.monotonic() + 120,
                )
                if not ok:
                    raise SystemExit(f"{stack.name} did not start:\n{_tail(stack.log)}")
                self.warm(stack)
            for sc in SCENARIOS:
                body_file = self.work / f"body-{sc.rows}{sc.ctype.replace('/', '_')}"
                body_file.write_bytes(body_for(sc.ctype, self.x[: sc.rows]))
                results[sc.name] = {name: [] for name in self.names}
                for stack in stacks.values():  # warm up: first requests, lazy init, caches
                    self.wrk(stack, sc, body_file, 1)
                for _ in range(self.pairs):
                    for name in self.names:
                        r = self.wrk(stacks[name], sc, body_file, self.duration)
                        results[sc.name][name].append(r)
                        print(
                            f"  {sc.name:28s} {name:6s} {r['rps']:8.0f} req/s "
                            f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms",
                            flush=True,
                        )
        finally:
            for stack in stacks.values():
                stack.stop()
        return results

    def ceiling(self) -> dict[str, float]:
        """decode + predict + encode in a loop, one core, BLAS on one thread (a subprocess)."""
        code = f"""
import io, json, time, sys
sys.path.insert(0, {str(ROOT / "examples" / "digits")!r})
import numpy as np
import train
from chainer_sagemaker_runtime.serving import codecs
from chainer_sagemaker_runtime.serving.handler import Handler, Hooks
model = train.model_fn({str(self.model_dir)!r})
# the server's own default path, including its column-major Linear weights
predict = Handler(Hooks.from_module(train), model, "application/json", optimize=True).predict
x = np.load({str(self.work / "data" / "test" / "test.npz")!r})["x"][:8].astype(np.float32) / 255
out = {{}}
for rows in (1, 8):
    buf = io.BytesIO(); np.save(buf, x[:rows]); body = buf.getvalue()
    for _ in range(200):
        codecs.encode_npy(predict(codecs.decode_npy(body)))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3:
        codecs.encode_npy(predict(codecs.decode_npy(body))); n += 1
    out[rows] = n / (time.perf_counter() - t0)
print(json.dumps(out))
"""
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        res = subprocess.run(
            [str(VENV_BIN / "python"), "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        per_core = json.loads(res.stdout.strip().splitlines()[-1])
        return {"rps_1row": per_core["1"], "rows_8row": per_core["8"] * 8}


def _median_ratio(ours: list[float], anchor: list[float]) -> float:
    return statistics.median(o / a for o, a in zip(ours, anchor, strict=True))


def report(
    results: dict[str, dict[str, list[dict[str, float]]]],
    startup: dict[str, list[float]],
    ceiling: dict[str, float],
) -> list[str]:
    """The table: ours against the old stack (the targets) and, when measured, against MMS."""
    mms = "mms" in startup
    lines = [
        "| scenario | metric | anchor (median) | "
        + ("MMS (median) | " if mms else "")
        + "ours (median) | ratio to anchor | target | met |"
        + (" ratio to MMS |" if mms else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if mms else ""),
    ]

    def row(scenario: str, metric: str, values: dict[str, list[float]], unit: str) -> None:
        ratio = _median_ratio(values["ours"], values["anchor"])
        op, target = TARGETS[(scenario, metric)]
        met = ratio <= target if op == "<=" else ratio >= target
        cells = [scenario, metric, f"{statistics.median(values['anchor']):.4g} {unit}"]
        if mms:
            cells.append(f"{statistics.median(values['mms']):.4g} {unit}")
        cells += [
            f"{statistics.median(values['ours']):.4g} {unit}",
            f"{ratio:.3f}x",
            f"{op} {target}x",
            "yes" if met else "NO",
        ]
        if mms:
            cells.append(f"{_median_ratio(values['ours'], values['mms']):.3f}x")
        lines.append("| " + " | ".join(cells) + " |")

    units = {"rps": "req/s", "rows": "rows/s", "p50": "ms", "p99": "ms"}
    for sc in SCENARIOS:
        r = results[sc.name]
        for metric in sc.metrics:
            row(
                sc.name,
                metric,
                {n: [x[metric] for x in runs] for n, runs in r.items()},
                units[metric],
            )
    row("start to first 200", "s", startup, "s")
    npy8 = statistics.median(x["rps"] for x in results["NPY 1x784, 8 connections"]["ours"])
    npy32 = statistics.median(x["rps"] for x in results["NPY 1x784, 32 connections"]["ours"])
    lines += [
        "",
        f"In-process ceiling, one core (NPY decode + predict + NPY encode, BLAS 1 thread): "
        f"{ceiling['rps_1row']:.0f} requests/s of 1 row; {ceiling['rows_8row']:.0f} rows/s "
        f"in 8-row batches.",
        f"Server with {WORKERS} workers, NPY 1x784: {npy8:.0f} req/s at 8 connections = "
        f"{npy8 / (WORKERS * ceiling['rps_1row']):.2f}x the {WORKERS}-core 1-row ceiling; "
        f"{npy32:.0f} req/s at 32 connections = {npy32 / (WORKERS * ceiling['rps_1row']):.2f}x "
        f"(server-side batching can exceed the 1-row ceiling; the 8-row ceiling is "
        f"{WORKERS * ceiling['rows_8row']:.0f} rows/s).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--pairs", type=int, default=3, help="rounds per scenario (>= 3)")
    parser.add_argument(
        "--no-mms", action="store_true", help="leave out the second anchor (multi-model-server)"
    )
    parser.add_argument("--quick", action="store_true", help="1 s runs: a smoke test, not a result")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--only", help="run only the scenarios whose name contains this text (no table)"
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists():
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx-light")
    duration = 1.0 if args.quick else args.duration
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        # nginx workers run as nobody and must reach the gunicorn socket
        os.chmod(tmp, 0o755)  # noqa: S103
        bench = Bench(Path(tmp), duration, args.pairs, mms=not args.no_mms)
        if args.only:
            global SCENARIOS
            SCENARIOS = [sc for sc in SCENARIOS if args.only in sc.name]
            bench.scenarios()
            return 0
        print("start to first 200 on /invocations (A B C, A B C, ...):", flush=True)
        startup = bench.startup()
        print("wrk scenarios (A B C, A B C, ...):", flush=True)
        results = bench.scenarios()
        print("in-process ceiling ...", flush=True)
        ceiling = bench.ceiling()
    lines = report(results, startup, ceiling)
    print("\n".join(["", *lines]))
    if args.json:
        args.json.write_text(
            json.dumps({"scenarios": results, "startup": startup, "ceiling": ceiling}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

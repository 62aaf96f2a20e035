"""Local batch transform throughput vs the same rows sent one request each through the Predictor.

    .venv/bin/python benchmarks/transform.py [--rounds 5] [--model-dir DIR] [--json FILE]

Both run against one ``serve`` of the digits MLP (started as a transform container, default
workers), on the 359 held-out test rows: the Predictor sends one NPY request per row over one
kept-alive connection (as a client scoring row by row would); the local transform reads the
rows as CSV lines from 4 files and sends ``MultiRecord`` mini-batches with the container's
``/execution-parameters`` (MaxConcurrentTransforms = workers, 6 MB). ``SingleRecord`` is shown
too. Rounds are interleaved; the ratio is the median of the per-round ratios. Also printed: the
whole ``transform_model`` call once, serve's start and stop included.

Target (issue 13): MultiRecord local transform >= 5x the Predictor's rows/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits"
sys.path.insert(0, str(REPO / "constructs"))

from chainer_sagemaker_cdk.client import Predictor  # noqa: E402
from chainer_sagemaker_cdk.local import LocalEndpoint, pack_model  # noqa: E402
from chainer_sagemaker_cdk.local.transform import (  # noqa: E402
    TransformConfig,
    run_transform,
    transform_model,
)


def _quiet(line: str) -> None:
    pass


def _prepare(work: Path, model_dir: Path | None) -> tuple[np.ndarray, Path, Path]:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "prepare_data.py"), str(work / "data")], check=True
    )
    if model_dir is None:
        model_dir = work / "model"
        subprocess.run(
            [
                sys.executable, str(EXAMPLE / "train.py"), "--epochs", "3",
                "--train", str(work / "data" / "train"), "--test", str(work / "data" / "test"),
                "--model-dir", str(model_dir), "--output-data-dir", str(work / "train-out"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    data = np.load(work / "data" / "test" / "test.npz")
    x = data["x"].astype(np.float32) / 255.0
    csv_dir = work / "csv"
    csv_dir.mkdir()
    for i, part in enumerate(np.array_split(x, 4)):
        lines = (",".join(repr(float(v)) for v in row) + "\n" for row in part)
        (csv_dir / f"part-{i}.csv").write_text("".join(lines))
    return x, pack_model(model_dir, work / "model.tar.gz"), csv_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, help="a trained digits model (default: train)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        x, tar, csv_dir = _prepare(work, args.model_dir)
        env = {"SAGEMAKER_PROGRAM": "train.py", **TransformConfig().container_environment()}
        csv = {"content_type": "text/csv", "accept": "text/csv", "split_type": "Line"}
        rates: dict[str, list[float]] = {"predictor": [], "MultiRecord": [], "SingleRecord": []}
        with LocalEndpoint(tar, work / "serve", environment=env, code=EXAMPLE, port=_port()) as ep:
            predictor = Predictor.local(ep.url)
            for row in x[:50]:  # warm-up: first requests, BLAS, connection
                predictor.predict(row[None])
            for r in range(args.rounds):
                started = time.perf_counter()
                for row in x:
                    predictor.predict(row[None])
                rates["predictor"].append(len(x) / (time.perf_counter() - started))
                for strategy in ("MultiRecord", "SingleRecord"):
                    config = TransformConfig(**csv, batch_strategy=strategy, assemble_with="Line")
                    started = time.perf_counter()
                    result = run_transform(
                        config, csv_dir, work / f"out-{strategy}-{r}", endpoint_url=ep.url,
                        work_dir=work / "t", log=_quiet,
                    )  # fmt: skip
                    elapsed = time.perf_counter() - started
                    if not result.succeeded or result.records != len(x):
                        raise SystemExit("\n".join(result.data_log))
                    rates[strategy].append(result.records / elapsed)
            predictor.close()
        started = time.perf_counter()
        whole = transform_model(
            TransformConfig(**csv, batch_strategy="MultiRecord", assemble_with="Line"),
            csv_dir, work / "out-whole", model_data=tar, work_dir=work / "whole",
            environment={"SAGEMAKER_PROGRAM": "train.py"}, code=EXAMPLE, log=_quiet,
        )  # fmt: skip
        whole_seconds = time.perf_counter() - started
        if not whole.succeeded:
            raise SystemExit("\n".join(whole.data_log))
    ratios = [m / p for m, p in zip(rates["MultiRecord"], rates["predictor"], strict=True)]
    summary = {
        "rows": len(x),
        "rounds": args.rounds,
        "predictor_rows_per_s": statistics.median(rates["predictor"]),
        "multirecord_rows_per_s": statistics.median(rates["MultiRecord"]),
        "singlerecord_rows_per_s": statistics.median(rates["SingleRecord"]),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "whole_command_seconds": whole_seconds,
        "target_ratio": 5.0,
    }
    print(f"rows: {len(x)} (4 CSV files), rounds: {args.rounds}, interleaved")
    print(f"Predictor, one request per row: {summary['predictor_rows_per_s']:8.0f} rows/s")
    print(f"local transform, MultiRecord:   {summary['multirecord_rows_per_s']:8.0f} rows/s")
    print(f"local transform, SingleRecord:  {summary['singlerecord_rows_per_s']:8.0f} rows/s")
    print(
        f"MultiRecord / Predictor: {summary['ratio_median']:.1f}x median "
        f"(min {summary['ratio_min']:.1f}x; target >= 5x)"
    )
    print(f"whole transform_model call (serve start and stop included): {whole_seconds:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()

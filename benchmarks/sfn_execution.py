"""Time one full execution of the synthesized pipeline in moto's Step Functions interpreter.

First deploy (train -> model -> config -> create endpoint -> InService -> clean-up) and an
update, with the test stand-ins of ``tests/infra/sfn_standins.py`` and 0-second waits; prints
the synth time and the median wall time of each kind of execution::

    .venv/bin/python benchmarks/sfn_execution.py [--runs 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # moto logs every forwarded optimized integration

    import aws_cdk as cdk
    import boto3
    from aws_cdk import Duration
    from aws_cdk import aws_s3 as s3
    from infra.render import state_machine_definition
    from infra.sfn_run import REGION, create, run
    from infra.sfn_standins import sagemaker_standin
    from moto import mock_aws

    from chainer_sagemaker_cdk import (
        ChainerEstimator,
        RuntimeImage,
        SourceCode,
        TrainingInput,
        TrainingPipeline,
    )

    code = Path(tempfile.mkdtemp()) / "code"
    code.mkdir()
    (code / "train.py").write_text("def model_fn(model_dir):\n    return None\n")
    started = time.perf_counter()
    app = cdk.App()
    stack = cdk.Stack(app, "Bench")
    data = s3.Bucket(stack, "Data")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
        channels={"train": TrainingInput(bucket=data, key_prefix="digits/train")},
        base_job_name="chainer-digits",
    )
    TrainingPipeline(stack, "Pipeline", estimator=estimator, poll_interval=Duration.seconds(0))
    definition = state_machine_definition(app.synth().get_stack_by_name("Bench").template)
    synth = time.perf_counter() - started

    first: list[float] = []
    update: list[float] = []
    for _ in range(args.runs):
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            client = boto3.client("stepfunctions", region_name=REGION)
            with sagemaker_standin():
                machine = create(client, definition)
                for times in (first, update):
                    t0 = time.perf_counter()
                    result = run(client, machine)
                    times.append(time.perf_counter() - t0)
                    assert result.status == "SUCCEEDED", result.cause
    print(f"synth (estimator + pipeline): {synth:.2f} s")
    print(f"first deploy execution: median {statistics.median(first):.3f} s over {args.runs}")
    print(f"update execution: median {statistics.median(update):.3f} s over {args.runs}")


if __name__ == "__main__":
    main()

"""What local mode reads from cdk.out: construct metadata for jobs and models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk


def _entries(assembly: cdk.cx_api.CloudAssembly, stack: str, kind: str) -> list[dict[str, Any]]:
    # CDK writes stack metadata to <stack>.metadata.json (manifest: additionalMetadataFile)
    metadata = json.loads((Path(assembly.directory) / f"{stack}.metadata.json").read_text())
    return [e["data"] for entries in metadata.values() for e in entries if e["type"] == kind]


def test_training_job_metadata(example_assembly: cdk.cx_api.CloudAssembly) -> None:
    (job,) = _entries(example_assembly, "ChainerDigits", "chainer-sagemaker:training-job")
    assert job["instanceType"] == "ml.m5.xlarge"
    assert job["instanceCount"] == 1
    assert job["inputMode"] == "File"
    assert set(job["channels"]) == {"train", "test"}
    assert job["hyperparameters"]["epochs"] == "10"
    assert job["hyperparameters"]["sagemaker_program"] == '"train.py"'
    assert all(isinstance(v, str) for v in job["hyperparameters"].values())
    staged = list(Path(example_assembly.directory).glob(f"asset.{job['codeAssetHash']}*"))
    assert len(staged) == 1


def test_model_metadata(maximal_assembly: cdk.cx_api.CloudAssembly) -> None:
    models = _entries(maximal_assembly, "ChainerMaximal", "chainer-sagemaker:model")
    assert len(models) == 3  # the pipeline's model and the two ChainerModels
    isolated = [m for m in models if m.get("modelDataAssetHash")]
    assert isolated[0]["environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    for model in models:
        assert model["environment"]["SAGEMAKER_PROGRAM"] == "train.py"

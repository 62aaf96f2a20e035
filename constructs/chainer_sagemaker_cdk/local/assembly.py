"""Reading a synthesized cloud assembly (``cdk.out``) for local mode.

The constructs record what local mode needs as construct metadata, which the CDK writes into
``manifest.json`` beside each stack: ``chainer-sagemaker:training-job`` for each
``ChainerEstimator`` and ``chainer-sagemaker:model`` for each ``ChainerModel``. Asset references
are asset hashes; they resolve to the staged files in ``cdk.out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_METADATA",
    "TRAINING_JOB_METADATA",
    "AssemblyError",
    "CloudAssembly",
    "ModelSpec",
    "TrainingJobSpec",
]

TRAINING_JOB_METADATA = "chainer-sagemaker:training-job"
MODEL_METADATA = "chainer-sagemaker:model"


class AssemblyError(Exception):
    """The cloud assembly does not hold what was asked for; the message says what it does hold."""


@dataclass(frozen=True)
class TrainingJobSpec:
    """One training job definition, as the stack would send it to CreateTrainingJob."""

    path: str
    hyperparameters: dict[str, str]
    instance_count: int
    instance_type: str
    channels: dict[str, dict[str, Any]]
    environment: dict[str, str] = field(default_factory=dict)
    code_asset: str | None = None  # staged asset file, absolute path
    input_mode: str = "File"


@dataclass(frozen=True)
class ModelSpec:
    """One model definition: its container environment and where its code and data come from."""

    path: str
    environment: dict[str, str]
    code_asset: str | None = None
    model_data_asset: str | None = None


class CloudAssembly:
    """A ``cdk.out`` directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        manifest = self.directory / "manifest.json"
        if not manifest.is_file():
            raise AssemblyError(
                f"{self.directory} is not a synthesized cloud assembly (no manifest.json); "
                "run `npx cdk synth` first or pass --cdk-out"
            )
        self._manifest: dict[str, Any] = json.loads(manifest.read_text())

    def stacks(self) -> list[str]:
        return sorted(
            name
            for name, art in self._manifest.get("artifacts", {}).items()
            if art.get("type") == "aws:cloudformation:stack"
        )

    def _stack(self, stack: str | None) -> tuple[str, dict[str, Any]]:
        stacks = self.stacks()
        if stack is None:
            if len(stacks) != 1:
                raise AssemblyError(f"name the stack (--stack); the assembly holds {stacks}")
            stack = stacks[0]
        if stack not in stacks:
            raise AssemblyError(f"unknown stack {stack!r}; the assembly holds {stacks}")
        return stack, self._manifest["artifacts"][stack]

    def _entries(self, stack: str | None, kind: str) -> list[tuple[str, dict[str, Any]]]:
        _, artifact = self._stack(stack)
        metadata: dict[str, Any] = dict(artifact.get("metadata", {}))
        extra = artifact.get("additionalMetadataFile")
        if extra:  # newer CDK versions keep the metadata beside the manifest
            metadata.update(json.loads((self.directory / extra).read_text()))
        found = []
        for path, entries in sorted(metadata.items()):
            for entry in entries:
                if entry.get("type") == kind:
                    found.append((path, entry["data"]))
        return found

    def _asset(self, asset_hash: str | None) -> str | None:
        if not asset_hash:
            return None
        matches = sorted(self.directory.glob(f"asset.{asset_hash}*"))
        if not matches:
            raise AssemblyError(
                f"asset {asset_hash} is not staged in {self.directory}; synthesize again"
            )
        return str(matches[0].resolve())

    def training_jobs(self, stack: str | None = None) -> list[TrainingJobSpec]:
        jobs = [
            TrainingJobSpec(
                path=path,
                hyperparameters=dict(data.get("hyperparameters", {})),
                instance_count=int(data.get("instanceCount", 1)),
                instance_type=str(data.get("instanceType", "ml.m5.xlarge")),
                channels=dict(data.get("channels", {})),
                environment=dict(data.get("environment", {})),
                code_asset=self._asset(data.get("codeAssetHash")),
                input_mode=str(data.get("inputMode", "File")),
            )
            for path, data in self._entries(stack, TRAINING_JOB_METADATA)
        ]
        return jobs

    def training_job(self, stack: str | None = None, path: str | None = None) -> TrainingJobSpec:
        name, _ = self._stack(stack)
        jobs = self.training_jobs(name)
        if not jobs:
            raise AssemblyError(f"stack {name!r} has no training job (no ChainerEstimator)")
        if path is None:
            if len(jobs) > 1:
                raise AssemblyError(
                    f"stack {name!r} has several training jobs; "
                    f"name one of {[j.path for j in jobs]}"
                )
            return jobs[0]
        for job in jobs:
            if job.path == path or job.path.endswith("/" + path):
                return job
        raise AssemblyError(
            f"no training job {path!r} in {name!r}; it has {[j.path for j in jobs]}"
        )

    def models(self, stack: str | None = None) -> list[ModelSpec]:
        return [
            ModelSpec(
                path=path,
                environment=dict(data.get("environment", {})),
                code_asset=self._asset(data.get("codeAssetHash")),
                model_data_asset=self._asset(data.get("modelDataAssetHash")),
            )
            for path, data in self._entries(stack, MODEL_METADATA)
        ]

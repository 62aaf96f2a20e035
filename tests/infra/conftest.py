"""Synthesized stacks shared by the infra tests (each synth costs seconds: build them once)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cdk_nag
import pytest
from aws_cdk import assertions

from chainer_sagemaker_cdk import RuntimeImage, SourceCode

from .maximal import MaximalStack
from .render import state_machine_definition

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
REPO = Path(__file__).resolve().parents[2]


def load_example_app() -> Any:
    """Import the repository's app.py (not on sys.path under every way of running pytest)."""
    spec = importlib.util.spec_from_file_location("chainer_example_app", REPO / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feature_flags() -> dict[str, Any]:
    """cdk.json's context: the feature flags `cdk synth` of app.py runs with."""
    context: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]
    return context


def nag_app(outdir: Path) -> cdk.App:
    """An app with the three compliance packs plugged in: synth fails on any finding.

    It runs with cdk.json's feature flags, as `cdk synth` does.
    """
    app = cdk.App(outdir=str(outdir), context=feature_flags())
    cdk.Validations.of(app).add_plugins(
        cdk_nag.AwsSolutionsChecks(app),
        cdk_nag.HIPAASecurityChecks(app),
        cdk_nag.NIST80053R5Checks(app),
    )
    return app


@pytest.fixture(scope="session")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training script (the real example lives in examples/digits)."""
    root = tmp_path_factory.mktemp("code")
    (root / "train.py").write_text("def model_fn(model_dir):\n    return None\n")
    (root / "requirements.txt").write_text("\n")
    return root


@pytest.fixture(scope="session")
def example_assembly(tmp_path_factory: pytest.TempPathFactory) -> cdk.cx_api.CloudAssembly:
    """app.py's stack, synthesized with cdk-nag (raises on unacknowledged findings)."""
    example_app = load_example_app()
    app = nag_app(tmp_path_factory.mktemp("example-out"))
    example_app.build_app(app)
    return app.synth()


@pytest.fixture(scope="session")
def example_template(example_assembly: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return example_assembly.get_stack_by_name("ChainerDigits").template  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def maximal_assembly(
    tmp_path_factory: pytest.TempPathFactory, code_dir: Path
) -> cdk.cx_api.CloudAssembly:
    app = nag_app(tmp_path_factory.mktemp("maximal-out"))
    MaximalStack(app, "ChainerMaximal", code_dir=code_dir)
    return app.synth()


@pytest.fixture(scope="session")
def maximal_template(maximal_assembly: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return maximal_assembly.get_stack_by_name("ChainerMaximal").template  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def example_definition(example_template: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(example_template)


@pytest.fixture(scope="session")
def maximal_definition(maximal_template: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(maximal_template)


@pytest.fixture
def stack() -> cdk.Stack:
    """A fresh stack in a fresh app, for the cheap per-prop tests."""
    return cdk.Stack(cdk.App(), "Test")


@pytest.fixture(scope="session")
def registry_image() -> RuntimeImage:
    """Keeps per-prop tests off the Docker asset (staging runtime/ costs time)."""
    return RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1")


@pytest.fixture(scope="session")
def code(code_dir: Path) -> SourceCode:
    return SourceCode.from_directory(code_dir, "train.py")


def template_of(stack: cdk.Stack) -> assertions.Template:
    return assertions.Template.from_stack(stack)

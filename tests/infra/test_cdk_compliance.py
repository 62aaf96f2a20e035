"""cdk-nag (AwsSolutions, HIPAA Security, NIST 800-53 R5), cfn-lint and the IAM rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from cfnlint.api import ManualArgs, lint

from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode

from .conftest import nag_app
from .render import resources_of_type

TEMPLATES = ["example_template", "maximal_template"]


def _report(assembly: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return json.loads((Path(assembly.directory) / "validation-report.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["example_assembly", "maximal_assembly"])
def test_no_unacknowledged_findings(request: pytest.FixtureRequest, name: str) -> None:
    """The fixtures synthesize with the three packs; synth raises on any finding."""
    assembly = request.getfixturevalue(name)
    for plugin in _report(assembly)["pluginReports"]:
        assert plugin["violations"] == [], plugin["pluginName"]


def _acknowledgements(scope: Any) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for node in scope.node.find_all():
        for entry in node.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in dict(entry.data).items():
                    rows.append((node.node.path, str(rule).split("::", 1)[-1], str(reason)))
    return rows


def test_acknowledgements_are_specific_and_justified(tmp_path: Path, code_dir: Path) -> None:
    from .conftest import load_example_app
    from .maximal import MaximalStack

    app = nag_app(tmp_path)
    load_example_app().build_app(app)
    MaximalStack(app, "ChainerMaximal", code_dir=code_dir)
    app.synth()
    rows = _acknowledgements(app)
    assert rows
    for path, rule, reason in rows:
        assert len(reason) > 30, (path, rule)
        # AwsSolutions-IAM5 is acknowledged per finding, never as a whole rule
        assert rule != "AwsSolutions-IAM5", path
        assert (
            not rule.startswith("AwsSolutions-IAM5[Resource::*]") or "no resource-level" in reason
        )


def test_an_unexplained_wildcard_stays_a_finding(tmp_path: Path, code_dir: Path) -> None:
    app = nag_app(tmp_path)
    stack = cdk.Stack(app, "Wild")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("registry.example/chainer:1"),
        output_bucket=cdk.aws_s3.Bucket.from_bucket_name(stack, "Out", "out-bucket"),
    )
    estimator.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"])
    )
    with pytest.raises(RuntimeError, match=r"AwsSolutions-IAM5\[Resource::\*\]"):
        app.synth()
    violations = [
        v["ruleName"]
        for p in json.loads((tmp_path / "validation-report.json").read_text())["pluginReports"]
        for v in p["violations"]
    ]
    assert "AwsSolutions-IAM5[Resource::*]" in violations


@pytest.mark.parametrize("name", TEMPLATES)
def test_cfn_lint_reports_no_errors_and_no_warnings(
    request: pytest.FixtureRequest, name: str
) -> None:
    """Warnings too: redundant DependsOn (W3005), legacy AccessControl (W3045), ..."""
    template = request.getfixturevalue(name)
    matches = _lint(template)
    findings = [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in matches
        if m.rule.id.startswith(("E", "W"))
    ]
    assert findings == []


def _lint(template: dict[str, Any]) -> list[Any]:
    return list(lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"])))


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_aws_managed_policies_and_no_inline_policies(
    request: pytest.FixtureRequest, name: str
) -> None:
    template = request.getfixturevalue(name)
    text = json.dumps(template)
    assert ":iam::aws:policy/" not in text
    for role in resources_of_type(template, "AWS::IAM::Role").values():
        assert "Policies" not in role["Properties"]
        assert "ManagedPolicyArns" not in role["Properties"]
    library_policies = [
        k for k in resources_of_type(template, "AWS::IAM::Policy") if not k.startswith("Client")
    ]
    assert library_policies == []


@pytest.mark.parametrize("name", TEMPLATES)
def test_pass_role_only_to_sagemaker(request: pytest.FixtureRequest, name: str) -> None:
    template = request.getfixturevalue(name)
    statements = [
        s
        for p in resources_of_type(template, "AWS::IAM::ManagedPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    passes = [s for s in statements if "iam:PassRole" in _actions(s)]
    assert passes
    for statement in passes:
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
        }
        assert statement["Resource"] != "*"


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resource_types(action: str) -> list[str]:
    """The action's resource types in AWS's service authorization data (via parliament)."""
    from parliament.statement import get_privilege_info

    service, name = action.split(":")
    return [
        t["resource_type"]
        for t in get_privilege_info(service, name)["resource_types"]
        if t["resource_type"]
    ]


def test_star_resources_only_for_actions_without_resource_types(
    example_template: dict[str, Any], maximal_template: dict[str, Any]
) -> None:
    for template in (example_template, maximal_template):
        for policy in resources_of_type(template, "AWS::IAM::ManagedPolicy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Resource"] == "*":
                    scoped = {
                        a: _resource_types(a) for a in _actions(statement) if _resource_types(a)
                    }
                    assert scoped == {}, statement


def test_kms_grants_for_given_keys(maximal_template: dict[str, Any]) -> None:
    """Volume/output keys: the execution role may use them and create grants for SageMaker."""
    statements = [
        statement
        for k, p in resources_of_type(maximal_template, "AWS::IAM::ManagedPolicy").items()
        if k.startswith("EstimatorExecutionPolicy")
        for statement in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    grant = [s for s in statements if "kms:CreateGrant" in _actions(s)]
    assert grant
    assert grant[0]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert any(
        "kms:Decrypt" in _actions(s) and "kms:GenerateDataKey" in _actions(s) for s in statements
    )


def test_eni_rights_only_with_a_vpc(
    example_template: dict[str, Any], maximal_template: dict[str, Any]
) -> None:
    assert "ec2:CreateNetworkInterface" not in json.dumps(example_template)
    assert "ec2:CreateNetworkInterface" in json.dumps(maximal_template)


def test_attach_to_a_training_job_is_compliant_too(tmp_path: Path, code_dir: Path) -> None:
    """The deploy-time lookup: own role and managed policy, its Lambda findings acknowledged."""
    from chainer_sagemaker_cdk import ChainerEndpoint, ChainerModel

    app = nag_app(tmp_path)
    stack = cdk.Stack(app, "Attach")
    model = ChainerModel.from_training_job(
        stack,
        "Model",
        training_job_name="chainer-digits-1",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("registry.example/chainer:1"),
    )
    ChainerEndpoint(stack, "Endpoint", model=model)
    template = app.synth().get_stack_by_name("Attach").template
    assert ":iam::aws:policy/" not in json.dumps(template)
    assert resources_of_type(template, "AWS::IAM::Policy") == {}
    assert resources_of_type(template, "Custom::AWS")

"""Turn synthesized CloudFormation values into plain data with sample values for the
deploy-time parts (Ref, GetAtt, Sub, ...), so JSON inside them can be parsed and checked."""

from __future__ import annotations

import json
import re
from typing import Any

SAMPLES = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "Stack",
}


def _sample_for(logical_id: str, attribute: str | None = None) -> str:
    if logical_id in SAMPLES:
        return SAMPLES[logical_id]
    name = re.sub(r"[^a-z0-9]", "", logical_id.lower())[:40] or "x"
    if attribute == "Arn":
        return f"arn:aws:iam::123456789012:role/{name}"
    return name


def fill(value: Any) -> Any:
    """Resolve intrinsics with sample values; strings stay strings."""
    if isinstance(value, list):
        return [fill(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return _sample_for(arg)
        if fn == "Fn::GetAtt":
            return _sample_for(arg[0], arg[1])
        if fn == "Fn::Join":
            return str(arg[0]).join(str(fill(p)) for p in arg[1])
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: _sample_for(m.group(1)), text)
        if fn == "Fn::Select":
            return fill(arg[1])[int(arg[0])]
        if fn == "Fn::Split":
            return str(fill(arg[1])).split(arg[0])
        if fn == "Fn::FindInMap":
            return "520713654638"
    return {k: fill(v) for k, v in value.items()}


def state_machine_definition(template: dict[str, Any]) -> dict[str, Any]:
    """The (first) state machine's definition as data."""
    machines = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    assert machines, "no state machine in the template"
    return json.loads(fill(machines[0]["Properties"]["DefinitionString"]))  # type: ignore[no-any-return]


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}

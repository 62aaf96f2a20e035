"""Create a synthesized state machine in moto and run executions of it to the end."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/pipeline"


@dataclass
class Run:
    status: str
    error: str | None
    cause: str | None
    output: Any
    events: list[dict[str, Any]]

    def entered(self) -> list[str]:
        """The names of the states entered, in order."""
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in self.events
            if "stateEnteredEventDetails" in e
        ]


def create(client: Any, definition: dict[str, Any], name: str = "pipeline") -> str:
    """The definition as synthesized, with only CloudFormation's tokens filled in."""
    return str(
        client.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)[
            "stateMachineArn"
        ]
    )


def start(client: Any, machine: str, payload: Any = None) -> str:
    return str(
        client.start_execution(
            stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(payload or {})
        )["executionArn"]
    )


def wait(client: Any, execution: str, timeout: float = 60.0) -> Run:
    """Poll until the execution ends (bounded), then collect its history."""
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        assert time.monotonic() < deadline, f"{execution} still running after {timeout} s"
        time.sleep(0.02)
    events = client.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    output = described.get("output")
    return Run(
        described["status"],
        described.get("error"),
        described.get("cause"),
        json.loads(output) if output else None,
        events,
    )


def run(client: Any, machine: str, payload: Any = None) -> Run:
    return wait(client, start(client, machine, payload))

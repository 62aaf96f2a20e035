"""Answer a ``TrainingPipeline`` approval request (boto3 only).

The pipeline's ``RequestApproval`` state publishes a JSON message to the approval topic with the
training job's name, its final metrics and a ``TaskToken``, then waits. :func:`approve` lets the
execution go on to deployment (``SendTaskSuccess``); :func:`reject` ends it in ``ModelRejected``
with the reason as its cause (``SendTaskFailure``). From a shell::

    python -m chainer_sagemaker_cdk.client.approval approve TOKEN
    python -m chainer_sagemaker_cdk.client.approval reject TOKEN "accuracy regressed on March data"

The caller needs ``states:SendTaskSuccess`` and ``states:SendTaskFailure`` (these actions have
no resource type: https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REJECTED_ERROR", "approve", "reject"]

REJECTED_ERROR = "ModelRejected"
"""The error a rejection sends; the pipeline routes it to its ``ApprovalRejected`` state."""
_MAX_CAUSE = 32768  # SendTaskFailure's cause limit (characters)


def _client(sfn_client: Any) -> Any:
    if sfn_client is not None:
        return sfn_client
    import boto3

    return boto3.client("stepfunctions")


def approve(token: str, *, note: Mapping[str, Any] | None = None, sfn_client: Any = None) -> None:
    """Approve: the execution deploys the model; ``note`` lands in its ``$.approval``."""
    if not token:
        raise ValueError("token is empty: pass the TaskToken of the approval message")
    output = json.dumps({"approved": True, **(note or {})})
    _client(sfn_client).send_task_success(taskToken=token, output=output)


def reject(token: str, reason: str, *, sfn_client: Any = None) -> None:
    """Reject: the execution fails with ``ModelRejected`` and ``reason`` as its cause."""
    if not token:
        raise ValueError("token is empty: pass the TaskToken of the approval message")
    if not reason.strip():
        raise ValueError("reason is empty: say why the model is rejected (it is the cause)")
    _client(sfn_client).send_task_failure(
        taskToken=token, error=REJECTED_ERROR, cause=reason[:_MAX_CAUSE]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chainer_sagemaker_cdk.client.approval")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("approve").add_argument("token")
    rejecting = commands.add_parser("reject")
    rejecting.add_argument("token")
    rejecting.add_argument("reason")
    args = parser.parse_args(argv)
    if args.command == "approve":
        approve(args.token)
    else:
        reject(args.token, args.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())

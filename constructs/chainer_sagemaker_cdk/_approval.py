"""Optional human approval before deployment: an SNS message with a task token, then a wait.

The task is ``arn:aws:states:::sns:publish.waitForTaskToken`` (the callback pattern of the Step
Functions developer guide: https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-wait-token).
The message (JSON) carries the training job's name, its final metrics, the task token and the
commands that approve or reject (:mod:`chainer_sagemaker_cdk.client.approval`, which calls
``SendTaskSuccess`` / ``SendTaskFailure``). No answer within ``timeout`` ends the execution in
``ApprovalTimedOut``; a rejection ends it in ``ModelRejected`` with the reviewer's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from . import _iam
from ._validation import require

__all__ = ["REJECTED_ERROR", "Approval"]

REJECTED_ERROR = "ModelRejected"
"""The error ``client.approval.reject`` sends (SendTaskFailure's ``error``; the client keeps
its own copy so that it imports without aws-cdk-lib)."""
_APPROVE = "python -m chainer_sagemaker_cdk.client.approval approve {}"
_REJECT = "python -m chainer_sagemaker_cdk.client.approval reject {} REASON"


@dataclass(frozen=True)
class Approval:
    """Wait for a person to approve the model before it is deployed.

    :param topic: where the request is published (subscribe the reviewers' e-mail or chat).
    :param timeout: how long to wait for an answer; left out, 1 day (at most 1 year, the
        execution's own limit applies too).
    """

    topic: sns.ITopic
    timeout: Duration | None = None

    @property
    def timeout_seconds(self) -> int:
        seconds = int((self.timeout or Duration.days(1)).to_seconds())
        require(
            1 <= seconds <= 365 * 24 * 3600,
            "Approval.timeout",
            seconds,
            "use between 1 second and 365 days",
        )
        return seconds


def approval_states(
    scope: Construct, approval: Approval, partition: str, metrics_path: str | None
) -> tuple[sfn.CustomState, sfn.Chain]:
    """The publish-and-wait task and its failure routes; the task goes on when approved."""
    message: dict[str, Any] = {
        "TrainingJobName.$": "$.training.TrainingJobName",
        "ModelArtifacts.$": "$.training.ModelArtifacts",
        "TaskToken.$": "$$.Task.Token",
        "Approve.$": f"States.Format('{_APPROVE}', $$.Task.Token)",
        "Reject.$": f"States.Format('{_REJECT}', $$.Task.Token)",
        "Execution.$": "$$.Execution.Id",
    }
    if metrics_path is not None:
        message["Metrics.$"] = metrics_path
    task = sfn.CustomState(
        scope,
        "RequestApproval",
        state_json={
            "Type": "Task",
            "Resource": f"arn:{partition}:states:::sns:publish.waitForTaskToken",
            "Parameters": {
                "TopicArn": approval.topic.topic_arn,
                "Subject": "Approve the trained Chainer model?",
                "Message": message,
            },
            "TimeoutSeconds": approval.timeout_seconds,
            "ResultPath": "$.approval",
        },
    )
    timed_out = sfn.Fail(
        scope,
        "ApprovalTimedOut",
        error="ApprovalTimedOut",
        cause=f"No approval within {approval.timeout_seconds} seconds; nothing was deployed",
    )
    rejected = sfn.Fail(
        scope,
        "ApprovalRejected",
        error=REJECTED_ERROR,
        cause_path="$.approvalError.Cause",
    )
    task.add_catch(timed_out, errors=["States.Timeout"], result_path="$.approvalError")
    task.add_catch(rejected, errors=[REJECTED_ERROR], result_path="$.approvalError")
    approved = sfn.Pass(scope, "Approved", result_path=sfn.JsonPath.DISCARD)
    task.next(approved)
    return task, sfn.Chain.custom(task, [approved], approved)


def grant_publish(principal: iam.IPrincipal, topic: sns.ITopic) -> None:
    """sns:Publish on the topic (https://docs.aws.amazon.com/step-functions/latest/dg/sns-iam.html);
    with an encrypted topic, the data key calls SNS makes for the publisher
    (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#sns-what-permissions-for-sse)."""
    statements = [iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn])]
    key = topic.master_key
    if key is not None:
        statements.append(
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]
            )
        )
    _iam.add(principal, *statements)

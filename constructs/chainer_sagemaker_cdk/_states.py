"""Error names, retriers and message patterns of the pipeline's SageMaker tasks.

Step Functions names errors differently per integration kind:

- optimized integrations (``arn:aws:states:::sagemaker:createTrainingJob.sync``) report SageMaker's
  service errors as ``SageMaker.AmazonSageMakerException`` (the SDK's generic exception, throttling
  included) and the modeled limit error as ``SageMaker.ResourceLimitExceededException`` (the
  retriers of the Step Functions developer guide's SageMaker examples);
- aws-sdk integrations (``arn:aws:states:::aws-sdk:sagemaker:describeEndpoint``) report
  ``SageMaker.<ErrorCode>`` with an ``Exception`` suffix, e.g. ``SageMaker.ThrottlingException``
  (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html).

Both are taken from AWS documentation, not verified in an account. Conditions that matter to the
lifecycle ("not found", "already exists", "in progress") are recognised by SageMaker's message
in the error's cause, so they hold whichever name the error carries.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn

# Optimized integration: only the training task (.sync) uses it.
OPTIMIZED_TRANSIENT = ("SageMaker.AmazonSageMakerException", "ThrottlingException")
# aws-sdk integration: throttling and 5xx errors of SageMaker's API (Common Errors).
SDK_TRANSIENT = (
    "SageMaker.ThrottlingException",
    "SageMaker.ServiceUnavailableException",
    "SageMaker.InternalFailureException",
)
RESOURCE_LIMIT = "SageMaker.ResourceLimitExceededException"
# aws-sdk integration of Application Auto Scaling (same naming rule).
AUTOSCALING_TRANSIENT = (
    "ApplicationAutoScaling.ConcurrentUpdateException",
    "ApplicationAutoScaling.InternalServiceException",
    "ApplicationAutoScaling.ThrottlingException",
)

# SageMaker's messages (API reference and observed messages, e.g. DescribeEndpoint of a missing
# endpoint: ValidationException 'Could not find endpoint "arn:..."').
NOT_FOUND_ENDPOINT = "*Could not find endpoint*"
NOT_FOUND_MODEL = "*Could not find model*"
ALREADY_EXISTS = "*already existing*"
IN_PROGRESS = "*in-progress*"
CAPACITY_ERROR = "*CapacityError*"

BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack")
UPDATABLE_STATUSES = ("InService", "OutOfService", "UpdateRollbackFailed")


def retry_sdk(
    task: sfn.TaskStateBase | sfn.CustomState, interval: Duration, backoff: float
) -> None:
    """Throttling and transient server errors of an aws-sdk SageMaker call."""
    task.add_retry(
        errors=list(SDK_TRANSIENT), interval=interval, backoff_rate=backoff, max_attempts=6
    )


def retry_training(
    task: sfn.CustomState, interval: Duration, backoff: float, limit_wait: Duration
) -> None:
    """The training task: a resource limit waits (jobs of other runs end and free it), then
    throttling/transient errors retry briefly. Neither created a job, so the name is reused."""
    task.add_retry(errors=[RESOURCE_LIMIT], interval=limit_wait, backoff_rate=2, max_attempts=5)
    task.add_retry(
        errors=list(OPTIMIZED_TRANSIENT), interval=interval, backoff_rate=backoff, max_attempts=3
    )


def cause_matches(path: str, pattern: str) -> sfn.Condition:
    """The caught error's cause (at ``path``) matches ``pattern`` (``*`` wildcards)."""
    return sfn.Condition.and_(
        sfn.Condition.is_present(path), sfn.Condition.string_matches(path, pattern)
    )

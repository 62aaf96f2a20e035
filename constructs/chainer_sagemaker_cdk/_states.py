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

from typing import Any

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


# -- Choice rules as ASL JSON -------------------------------------------------------------------
# Each aws-cdk-lib ``Condition`` is an object in jsii's node kernel, created by one round trip
# (``or_`` of five statuses: six); a rule written here as JSON (the Choice rule syntax of the
# Amazon States Language, https://states-language.net/#choice-state) is one object however many
# operands it has, rendered once at synth. Hand-written for that reason only: the keys and
# their order are those aws-cdk-lib renders, so the definitions stay byte for byte the same.
Rule = dict[str, Any]


class JsonCondition(sfn.Condition):
    """A Choice condition given as its ASL JSON (see :func:`condition`)."""

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self._rule = rule

    def render_condition(self) -> Any:
        return self._rule


def condition(rule: Rule) -> sfn.Condition:
    """One condition object for ``rule`` (built with the functions below)."""
    return JsonCondition(rule)


def _compare(path: str, operator: str, value: Any) -> Rule:
    if not path.startswith("$"):
        raise ValueError(f"a Choice variable is a JSONPath starting with '$', got {path!r}")
    return {"Variable": path, operator: value}


def is_present(path: str) -> Rule:
    return _compare(path, "IsPresent", True)


def string_equals(path: str, value: str) -> Rule:
    return _compare(path, "StringEquals", value)


def string_equals_path(path: str, other: str) -> Rule:
    return _compare(path, "StringEqualsPath", other)


def string_matches(path: str, pattern: str) -> Rule:
    return _compare(path, "StringMatches", pattern)


def number_at_least(path: str, value: float) -> Rule:
    return _compare(path, "NumericGreaterThanEquals", value)


def all_of(*rules: Rule) -> Rule:
    return {"And": list(rules)}


def any_of(*rules: Rule) -> Rule:
    return {"Or": list(rules)}


def negate(rule: Rule) -> Rule:
    return {"Not": rule}


def any_status(path: str, statuses: tuple[str, ...]) -> Rule:
    """The string at ``path`` is one of ``statuses``."""
    return any_of(*[string_equals(path, s) for s in statuses])


def cause_matches(path: str, pattern: str) -> sfn.Condition:
    """The caught error's cause (at ``path``) matches ``pattern`` (``*`` wildcards)."""
    return condition(all_of(is_present(path), string_matches(path, pattern)))

"""Deployment guardrails for the pipeline's endpoint updates: blue/green traffic shifting
(all at once, canary, linear) with automatic rollback on CloudWatch alarms.

``UpdateEndpoint`` gets a ``DeploymentConfig``
(https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails.html): SageMaker brings up
the new fleet, shifts traffic in the chosen steps, bakes ``wait_interval`` after each, and rolls
back to the old fleet when an alarm fires. The pipeline's wait loop already fails on such a
rollback with SageMaker's ``FailureReason`` (``EndpointDeploymentRolledBack``).

By default the construct creates two alarms on the endpoint's ``AllTraffic`` variant:
``Invocation5XXErrors`` (sum per minute at or above ``max_5xx_errors``) and ``ModelLatency``
(average per minute above ``max_model_latency``), missing data not breaching (a quiet bake is
not a failure); ``alarms`` adds yours (at most 10 in all, SageMaker's limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from . import _iam
from ._validation import require

__all__ = ["DeploymentGuardrails"]

_TRAFFIC = ("ALL_AT_ONCE", "CANARY", "LINEAR")


@dataclass(frozen=True)
class DeploymentGuardrails:
    """How each update of the pipeline's endpoint shifts traffic, and what rolls it back.

    :param traffic: ``ALL_AT_ONCE``, ``CANARY`` (``step_percent`` of the capacity first, then the
        rest) or ``LINEAR`` (``step_percent`` at a time); left out, ``CANARY``.
    :param step_percent: the canary's or each linear step's share of the new fleet's capacity;
        left out, 10.
    :param wait_interval: baking time after each shift; left out, 5 minutes (at most 1 hour).
    :param termination_wait: how long the old fleet is kept after the last shift; left out, 0.
    :param maximum_execution_timeout: the deployment's limit; left out, SageMaker's default.
    :param alarms: your alarms (rolled back when any fires); left out, none.
    :param default_alarms: create the 5xx and latency alarms; left out, True.
    :param max_5xx_errors: the 5xx alarm's threshold per minute; left out, 1.
    :param max_model_latency: the latency alarm's threshold; left out, 1 second.
    """

    traffic: str = "CANARY"
    step_percent: int = 10
    wait_interval: Duration | None = None
    termination_wait: Duration | None = None
    maximum_execution_timeout: Duration | None = None
    alarms: Sequence[cloudwatch.IAlarm] = field(default_factory=tuple)
    default_alarms: bool = True
    max_5xx_errors: float = 1
    max_model_latency: Duration | None = None

    def validate(self) -> None:
        require(self.traffic in _TRAFFIC, "traffic", self.traffic, f"use one of {_TRAFFIC}")
        if self.traffic != "ALL_AT_ONCE":
            require(
                1 <= self.step_percent <= 100,
                "step_percent",
                self.step_percent,
                "use a share of the capacity from 1 to 100 percent",
            )
        wait = self._seconds(self.wait_interval, 300)
        require(0 <= wait <= 3600, "wait_interval", wait, "use 0 to 3600 seconds")
        term = self._seconds(self.termination_wait, 0)
        require(0 <= term <= 3600, "termination_wait", term, "use 0 to 3600 seconds")
        if self.maximum_execution_timeout is not None:
            limit = self._seconds(self.maximum_execution_timeout, 0)
            require(
                600 <= limit <= 28800,
                "maximum_execution_timeout",
                limit,
                "use 600 to 28800 seconds",
            )
        count = len(self.alarms) + (2 if self.default_alarms else 0)
        require(
            1 <= count <= 10,
            "alarms",
            count,
            "give 1 to 10 alarms in all (default_alarms counts 2): without one, nothing rolls back",
        )

    @staticmethod
    def _seconds(value: Duration | None, default: int) -> int:
        return default if value is None else int(value.to_seconds())

    def deployment_config(self, alarm_names: Sequence[str]) -> dict[str, Any]:
        """UpdateEndpoint's ``DeploymentConfig``."""
        routing: dict[str, Any] = {
            "Type": self.traffic,
            "WaitIntervalInSeconds": self._seconds(self.wait_interval, 300),
        }
        step = {"Type": "CAPACITY_PERCENT", "Value": self.step_percent}
        if self.traffic == "CANARY":
            routing["CanarySize"] = step
        elif self.traffic == "LINEAR":
            routing["LinearStepSize"] = step
        policy: dict[str, Any] = {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": self._seconds(self.termination_wait, 0),
        }
        if self.maximum_execution_timeout is not None:
            policy["MaximumExecutionTimeoutInSeconds"] = self._seconds(
                self.maximum_execution_timeout, 0
            )
        return {
            "BlueGreenUpdatePolicy": policy,
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": n} for n in alarm_names]},
        }

    def create_alarms(
        self, scope: Construct, errors: cloudwatch.Metric, latency: cloudwatch.Metric
    ) -> list[cloudwatch.IAlarm]:
        """The default alarms (if wanted) and the user's."""
        made: list[cloudwatch.IAlarm] = []
        if self.default_alarms:
            limit = self.max_model_latency or Duration.seconds(1)
            made = [
                cloudwatch.Alarm(
                    scope,
                    "Endpoint5xxAlarm",
                    metric=errors.with_(period=Duration.minutes(1)),
                    threshold=self.max_5xx_errors,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description="Rolls back the pipeline's endpoint update (5xx errors)",
                ),
                cloudwatch.Alarm(
                    scope,
                    "EndpointLatencyAlarm",
                    # ModelLatency is in microseconds.
                    metric=latency.with_(period=Duration.minutes(1)),
                    threshold=limit.to_milliseconds() * 1000,
                    evaluation_periods=2,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description="Rolls back the pipeline's endpoint update (latency)",
                ),
            ]
            for alarm in made:
                _iam.acknowledge(
                    alarm,
                    [
                        f"{pack}-CloudWatchAlarmAction"
                        for pack in ("HIPAA.Security", "NIST.800.53.R5")
                    ],
                    "SageMaker's deployment guardrails watch this alarm and roll the endpoint "
                    "update back when it fires; it needs no notification action",
                )
        return [*made, *self.alarms]

"""Deployment guardrails for the pipeline's endpoint updates: blue/green traffic shifting
(all at once, canary, linear) or a rolling update, with automatic rollback on CloudWatch alarms.

``UpdateEndpoint`` gets a ``DeploymentConfig``
(https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails.html): SageMaker brings up
the new fleet, shifts traffic in the chosen steps, bakes ``wait_interval`` after each, and rolls
back to the old fleet when an alarm fires. The pipeline's wait loop already fails on such a
rollback with SageMaker's ``FailureReason`` (``EndpointDeploymentRolledBack``).

``ROLLING`` (``RollingUpdatePolicy``,
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-rolling.html) replaces
the fleet batch by batch instead of bringing up a whole second one: each batch is 5 to 50
percent of the variant's instances (API reference, ``RollingUpdatePolicy.MaximumBatchSize``),
so the endpoint needs at least 2 instances; serverless and multi-variant endpoints cannot roll
("Exclusions": https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html).

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

_TRAFFIC = ("ALL_AT_ONCE", "CANARY", "LINEAR", "ROLLING")
_BATCH_TYPES = ("CAPACITY_PERCENT", "INSTANCE_COUNT")


@dataclass(frozen=True)
class DeploymentGuardrails:
    """How each update of the pipeline's endpoint shifts traffic, and what rolls it back.

    :param traffic: ``ALL_AT_ONCE``, ``CANARY`` (``step_percent`` of the capacity first, then the
        rest), ``LINEAR`` (``step_percent`` at a time) or ``ROLLING`` (``batch_size`` instances
        at a time, the old ones terminated after each batch's bake); left out, ``CANARY``.
    :param step_percent: the canary's or each linear step's share of the new fleet's capacity;
        left out, 10.
    :param wait_interval: baking time after each shift; left out, 5 minutes (at most 1 hour).
    :param termination_wait: how long the old fleet is kept after the last shift; left out, 0.
    :param maximum_execution_timeout: the deployment's limit; left out, SageMaker's default.
    :param alarms: your alarms (rolled back when any fires); left out, none.
    :param default_alarms: create the 5xx and latency alarms; left out, True.
    :param max_5xx_errors: the 5xx alarm's threshold per minute; left out, 1.
    :param max_model_latency: the latency alarm's threshold; left out, 1 second.
    :param batch_size: ``ROLLING``: each batch, in ``batch_type`` units (percent: 5 to 50);
        left out, 25.
    :param batch_type: ``CAPACITY_PERCENT`` or ``INSTANCE_COUNT``; left out, percent.
    :param rollback_batch_size: ``ROLLING``: each batch of a rollback, same units; left out,
        SageMaker's default (the whole old fleet at once).
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
    batch_size: int = 25
    batch_type: str = "CAPACITY_PERCENT"
    rollback_batch_size: int | None = None

    @property
    def rolling(self) -> bool:
        return self.traffic == "ROLLING"

    def validate(self) -> None:
        """Check the values alone (:meth:`validate_for` checks them against the endpoint)."""
        require(self.traffic in _TRAFFIC, "traffic", self.traffic, f"use one of {_TRAFFIC}")
        if self.rolling:
            self._validate_rolling()
        elif self.traffic != "ALL_AT_ONCE":
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

    def _validate_rolling(self) -> None:
        require(
            self.termination_wait is None,
            "termination_wait",
            self.termination_wait,
            "a rolling update terminates the old instances batch by batch: leave it out "
            "(or use a blue/green traffic mode)",
        )
        require(
            self.batch_type in _BATCH_TYPES,
            "batch_type",
            self.batch_type,
            f"use one of {_BATCH_TYPES}",
        )
        if self.batch_type == "CAPACITY_PERCENT":
            require(
                5 <= self.batch_size <= 50,
                "batch_size",
                self.batch_size,
                "use 5 to 50 percent of the instances (SageMaker's range for a rolling batch)",
            )
        else:
            require(self.batch_size >= 1, "batch_size", self.batch_size, "use 1 or more")
        back = self.rollback_batch_size
        limit = 100 if self.batch_type == "CAPACITY_PERCENT" else None
        require(
            back is None or (back >= 1 and (limit is None or back <= limit)),
            "rollback_batch_size",
            back,
            "use 1 or more (percent: at most 100), or leave it out for the whole fleet at once",
        )

    def validate_for(self, *, instance_count: int | None, serverless: bool) -> None:
        """Check the guardrails against the endpoint they update (one variant).

        :param instance_count: the variant's instances (None: unknown at synth).
        :param serverless: the variant is serverless.
        """
        if not self.rolling:
            return
        require(
            not serverless,
            "guardrails.traffic",
            self.traffic,
            "serverless endpoints cannot take a rolling update: use ALL_AT_ONCE, CANARY or "
            "LINEAR (or instances instead of serverless)",
        )
        if instance_count is None:
            return
        require(
            instance_count >= 2,
            "guardrails.traffic",
            self.traffic,
            f"a rolling batch is 5 to 50 percent of the instances, and {instance_count} "
            "instance cannot be split: use 2 or more instances, or a blue/green traffic mode",
        )
        if self.batch_type == "INSTANCE_COUNT":
            require(
                self.batch_size * 2 <= instance_count,
                "guardrails.batch_size",
                self.batch_size,
                f"a rolling batch is at most half of the {instance_count} instances: use "
                f"1 to {instance_count // 2}",
            )

    @staticmethod
    def _seconds(value: Duration | None, default: int) -> int:
        return default if value is None else int(value.to_seconds())

    def _capacity(self, value: int) -> dict[str, Any]:
        return {"Type": self.batch_type, "Value": value}

    def _rolling_policy(self) -> dict[str, Any]:
        policy: dict[str, Any] = {
            "MaximumBatchSize": self._capacity(self.batch_size),
            "WaitIntervalInSeconds": self._seconds(self.wait_interval, 300),
        }
        if self.maximum_execution_timeout is not None:
            policy["MaximumExecutionTimeoutInSeconds"] = self._seconds(
                self.maximum_execution_timeout, 0
            )
        if self.rollback_batch_size is not None:
            policy["RollbackMaximumBatchSize"] = self._capacity(self.rollback_batch_size)
        return policy

    def deployment_config(self, alarm_names: Sequence[str]) -> dict[str, Any]:
        """UpdateEndpoint's ``DeploymentConfig``."""
        rollback = {"Alarms": [{"AlarmName": n} for n in alarm_names]}
        if self.rolling:
            return {
                "RollingUpdatePolicy": self._rolling_policy(),
                "AutoRollbackConfiguration": rollback,
            }
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
            "AutoRollbackConfiguration": rollback,
        }

    def create_alarms(
        self,
        scope: Construct,
        errors: cloudwatch.Metric,
        latency: cloudwatch.Metric,
        *,
        rolls_back: str = "the pipeline's endpoint update",
    ) -> list[cloudwatch.IAlarm]:
        """The default alarms (if wanted) and the user's; ``rolls_back`` says in the alarms'
        descriptions what they roll back."""
        made: list[cloudwatch.IAlarm] = []
        if self.default_alarms:
            made = watch_alarms(
                scope,
                "Endpoint",
                errors,
                latency,
                max_5xx_errors=self.max_5xx_errors,
                max_model_latency=self.max_model_latency,
                purpose=f"Rolls back {rolls_back}",
                why="SageMaker's deployment guardrails watch this alarm and roll the endpoint "
                "update back when it fires; it needs no notification action",
            )
        return [*made, *self.alarms]


def watch_alarms(
    scope: Construct,
    prefix: str,
    errors: cloudwatch.Metric,
    latency: cloudwatch.Metric,
    *,
    max_5xx_errors: float,
    max_model_latency: Duration | None,
    purpose: str,
    why: str,
) -> list[cloudwatch.IAlarm]:
    """The two alarms a deployment watches: ``<prefix>5xxAlarm``, 5xx errors per minute at or
    above ``max_5xx_errors``, and ``<prefix>LatencyAlarm``, ModelLatency above
    ``max_model_latency`` (left out, 1 s) for two minutes; missing data does not breach (a
    quiet bake is not a failure). ``purpose`` starts their descriptions; ``why`` tells cdk-nag
    why they have no notification action."""
    limit = max_model_latency or Duration.seconds(1)
    made: list[cloudwatch.IAlarm] = [
        cloudwatch.Alarm(
            scope,
            f"{prefix}5xxAlarm",
            metric=errors.with_(period=Duration.minutes(1)),
            threshold=max_5xx_errors,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{purpose} (5xx errors)",
        ),
        cloudwatch.Alarm(
            scope,
            f"{prefix}LatencyAlarm",
            # ModelLatency is in microseconds.
            metric=latency.with_(period=Duration.minutes(1)),
            threshold=limit.to_milliseconds() * 1000,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{purpose} (latency)",
        ),
    ]
    for alarm in made:
        _iam.acknowledge(
            alarm,
            [f"{pack}-CloudWatchAlarmAction" for pack in ("HIPAA.Security", "NIST.800.53.R5")],
            why,
        )
    return made

"""Shadow deployments for the pipeline's endpoint: the new model serves a copy of production
traffic first (its responses discarded), and is promoted only if its alarms stayed quiet.

With ``TrainingPipeline(shadow=ShadowDeployment(...))`` an execution that finds the endpoint
in service:

1. reads the production model from the endpoint's current config;
2. updates the endpoint to a config with that model as the production variant ``AllTraffic``
   and the new model as the shadow variant ``Shadow`` (``ShadowProductionVariants``,
   https://docs.aws.amazon.com/sagemaker/latest/dg/shadow-tests.html): SageMaker copies
   ``sampling_percent`` of the requests to it and discards its responses;
3. waits ``bake_time``, checks that the endpoint still has the shadow config (another
   deployment may have replaced it: then the alarms did not watch the shadow throughout, and
   the shadow is not promoted, the endpoint left to that deployment), then reads the alarms'
   states (DescribeAlarms);
4. no alarm in ``ALARM``: promotes the new model with a plain pipeline update (its config: the
   new model as ``AllTraffic``, deployment guardrails included);
   an alarm in ``ALARM``: updates the endpoint back to its previous config (production never
   changed) and fails the execution with ``ShadowNotPromoted``, naming the alarm.

The shadow config is deleted after either. A first deployment (no endpoint yet) has no
production to shadow and creates the endpoint with the new model directly.

Another update of the endpoint may be running when one of these updates arrives (SageMaker's
own, ``SystemUpdating``, or another execution's); SageMaker refuses the update as in-progress:

- the shadow's update: its config is deleted and the execution waits and looks the endpoint up
  again, as an ordinary update does (the production it read may have changed meanwhile);
- the promotion: it waits until the endpoint is free and is sent again, not shadowed again
  (the shadow passed its bake and alarms; another bake costs time and a second shadow config),
  whichever config the endpoint has by then, as an ordinary update (the last update wins);
- the restore: it waits until the endpoint is free; still on the shadow config, the restore is
  sent again; on another config, another deployment replaced the shadow, and the endpoint is
  left to it (updating back would undo it): ``ShadowNotPromoted`` says so.

These waits are bounded as the pipeline's others: by the execution's timeout
(``TrainingPipeline(timeout=...)``; a fragment's by its state machine's). A shadow update
that SageMaker rolls back deletes the shadow config, then fails the execution
(``EndpointDeploymentRolledBack``). A promotion that rolls back (its guardrails' alarms) puts
the endpoint back on the shadow config, still copying traffic to the new model: the shadow is
removed as after an alarm, and the execution fails with ``ShadowNotPromoted``, its cause
SageMaker's ``FailureReason``.

The check is on alarms rather than on the approval step: it runs unattended and watches the
model on real traffic; ``approval=`` still runs before any of it, on the training metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from ._validation import require
from .guardrails import watch_alarms

__all__ = ["ShadowDeployment"]

SHADOW_VARIANT = "Shadow"


@dataclass(frozen=True)
class ShadowDeployment:
    """Deploy each new model as a shadow variant first; promote it after a quiet bake.

    :param bake_time: how long the shadow serves copied traffic before the check; left out,
        1 hour (at most 1 day).
    :param sampling_percent: the share of production requests copied to the shadow, 1 to 100;
        left out, 100.
    :param instance_count: the shadow variant's instances; left out, the endpoint's count.
    :param alarms: your alarms on the shadow (promotion only when none is in ``ALARM``);
        left out, none.
    :param default_alarms: create a 5xx-errors and a latency alarm on the ``Shadow`` variant;
        left out, True.
    :param max_5xx_errors: the 5xx alarm's threshold per minute; left out, 1.
    :param max_model_latency: the latency alarm's threshold; left out, 1 second.
    """

    bake_time: Duration = field(default_factory=lambda: Duration.hours(1))
    sampling_percent: int = 100
    instance_count: int | None = None
    alarms: Sequence[cloudwatch.IAlarm] = field(default_factory=tuple)
    default_alarms: bool = True
    max_5xx_errors: float = 1
    max_model_latency: Duration | None = None

    def validate(self) -> None:
        bake = int(self.bake_time.to_seconds())
        require(0 <= bake <= 86400, "shadow.bake_time", bake, "use 0 to 86400 seconds")
        require(
            1 <= self.sampling_percent <= 100,
            "shadow.sampling_percent",
            self.sampling_percent,
            "use 1 to 100 percent of the production requests",
        )
        require(
            self.instance_count is None or self.instance_count >= 1,
            "shadow.instance_count",
            self.instance_count,
            "use 1 or more, or leave it out for the endpoint's count",
        )
        count = len(self.alarms) + (2 if self.default_alarms else 0)
        require(
            1 <= count <= 100,
            "shadow.alarms",
            count,
            "give at least one alarm (default_alarms counts 2): without one, every shadow "
            "would be promoted unchecked",
        )

    @property
    def variant_weight(self) -> float:
        """The shadow's ``InitialVariantWeight`` next to production's 1: the copied share."""
        return self.sampling_percent / 100

    def create_alarms(
        self, scope: Construct, errors: cloudwatch.Metric, latency: cloudwatch.Metric
    ) -> list[cloudwatch.IAlarm]:
        """The default alarms on the shadow variant (if wanted) and the user's."""
        made: list[cloudwatch.IAlarm] = []
        if self.default_alarms:
            made = watch_alarms(
                scope,
                "Shadow",
                errors,
                latency,
                max_5xx_errors=self.max_5xx_errors,
                max_model_latency=self.max_model_latency,
                purpose="Keeps the pipeline's shadow model from promotion",
                why="the pipeline reads this alarm's state before promoting the shadow model; "
                "it needs no notification action",
            )
        return [*made, *self.alarms]

"""Quality gate: deploy a trained model only if its final metrics meet thresholds.

The gate reads the training job's ``FinalMetricDataList`` (DescribeTrainingJob, filled from the
estimator's ``metric_definitions``), takes the last value of each gated metric and compares it
with its threshold. A model that misses a threshold, or whose job reported no value for a gated
metric, ends the execution in the ``ModelRejected`` Fail state, whose cause names the metric, its
value and the threshold; nothing is created after it (no model, no endpoint config, no update).

The states are plain JSONPath states (no Lambda): a Map over ``FinalMetricDataList`` picks each
gated metric's value by name (one ``Choice`` per item), a wildcard path collects the picked values
(an empty list when the job reported none: Step Functions answers a wildcard path that matches
nothing with ``[]``), and one ``Choice`` per threshold compares. Executed in tests by moto's Step
Functions interpreter; not verified in an account.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from ._validation import require

__all__ = ["MetricThreshold", "QualityGate"]

_OPERATORS = (">=", ">", "<=", "<")
# Metric names go into JSONPath string literals and States.Format templates.
_SAFE_NAME = re.compile(r"^[^'\"{}\\]{1,255}$")


@dataclass(frozen=True)
class MetricThreshold:
    """``MetricThreshold("validation:accuracy", ">=", 0.9)``: the metric's final value must
    satisfy ``value <operator> threshold``."""

    metric_name: str
    operator: str
    threshold: float


@dataclass(frozen=True)
class QualityGate:
    """Thresholds a trained model must meet before it is deployed (all of them)."""

    thresholds: Sequence[MetricThreshold]

    def validate(self, metric_definitions: Sequence[str]) -> None:
        """Refuse, at synth, thresholds the training job can never report."""
        require(
            len(self.thresholds) >= 1,
            "quality_gate.thresholds",
            list(self.thresholds),
            "give at least one MetricThreshold",
        )
        for t in self.thresholds:
            require(
                t.operator in _OPERATORS,
                "MetricThreshold.operator",
                t.operator,
                f"use one of {', '.join(_OPERATORS)}",
            )
            require(
                bool(_SAFE_NAME.match(t.metric_name)),
                "MetricThreshold.metric_name",
                t.metric_name,
                "use 1 to 255 characters without quotes, braces or backslashes",
            )
            require(
                t.metric_name in metric_definitions,
                "MetricThreshold.metric_name",
                t.metric_name,
                "declare it in the estimator's metric_definitions (name -> regex over the "
                f"job's logs); declared: {', '.join(metric_definitions) or 'none'}",
            )

    @property
    def metric_names(self) -> list[str]:
        """The gated metrics, each once, in the order of the thresholds."""
        return list(dict.fromkeys(t.metric_name for t in self.thresholds))


def _compare(path: str, operator: str, threshold: float) -> sfn.Condition:
    """The condition that the value at ``path`` MISSES the threshold."""
    if operator == ">=":
        return sfn.Condition.number_less_than(path, threshold)
    if operator == ">":
        return sfn.Condition.number_less_than_equals(path, threshold)
    if operator == "<=":
        return sfn.Condition.number_greater_than(path, threshold)
    return sfn.Condition.number_greater_than_equals(path, threshold)


def gate_states(
    scope: Construct, gate: QualityGate, metrics_path: str, result_path: str = "$.gate"
) -> sfn.Chain:
    """The gate's states: reads ``metrics_path`` (a FinalMetricDataList), leaves
    ``{"<metric>": [value]}`` at ``result_path`` and goes on, or fails with ``ModelRejected``."""
    names = gate.metric_names
    key = {name: f"m{i}" for i, name in enumerate(names)}
    pick = sfn.Choice(scope, "PickGatedMetric")
    for name in names:
        pick.when(
            sfn.Condition.string_equals("$.name", name),
            sfn.Pass(scope, f"Picked{key[name]}", parameters={f"{key[name]}.$": "$.value"}),
        )
    pick.otherwise(sfn.Pass(scope, "NotGated", result=sfn.Result.from_object({})))
    read = sfn.Map(
        scope,
        "ReadMetrics",
        items_path=metrics_path,
        item_selector={
            "name.$": "$$.Map.Item.Value.MetricName",
            "value.$": "$$.Map.Item.Value.Value",
        },
        result_path=f"{result_path}.picked",
    )
    read.item_processor(pick)
    collect = sfn.Pass(
        scope,
        "CollectMetrics",
        parameters={f"{key[n]}.$": f"{result_path}.picked[*].{key[n]}" for n in names},
        result_path=result_path,
    )
    rejected = sfn.Fail(
        scope, "ModelRejected", error="ModelRejected", cause_path=f"{result_path}Error.Cause"
    )
    passed = sfn.Pass(scope, "QualityGatePassed", result_path=sfn.JsonPath.DISCARD)
    check: sfn.IChainable = passed
    # Built from the last threshold back, so the first threshold is checked first.
    for i, t in reversed(list(enumerate(gate.thresholds))):
        values = f"{result_path}.{key[t.metric_name]}"
        value = f"{values}[0]"  # FinalMetricDataList holds one (the final) value per metric
        missing = sfn.Pass(
            scope,
            f"MetricMissing{i}",
            parameters={
                "Cause": f"{t.metric_name}: the training job reported no value (threshold "
                f"{t.operator} {t.threshold:g}); check the estimator's metric_definitions "
                "regex against the job's logs"
            },
            result_path=f"{result_path}Error",
        ).next(rejected)
        below = sfn.Pass(
            scope,
            f"ThresholdMissed{i}",
            parameters={
                "Cause.$": f"States.Format('{t.metric_name} = {{}} does not meet the "
                f"threshold {t.operator} {t.threshold:g}', {value})"
            },
            result_path=f"{result_path}Error",
        ).next(rejected)
        check = (
            sfn.Choice(scope, f"CheckThreshold{i}")
            .when(sfn.Condition.not_(sfn.Condition.is_present(value)), missing)
            .when(_compare(value, t.operator, t.threshold), below)
            .otherwise(check)
        )
    read.next(collect).next(check)
    return sfn.Chain.custom(read, [passed], passed)

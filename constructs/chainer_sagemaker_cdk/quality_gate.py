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
from collections.abc import Callable, Sequence
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
    """Thresholds a trained model must meet before it is deployed (all of them).

    :param thresholds: the metrics' limits.
    :param compare_with_serving: also reject a model worse than the one in service on any gated
        metric (``>=``/``>``: a lower value is worse; ``<=``/``<``: a higher one). The serving
        model's values are read from its registry version (needs ``registry=``); an endpoint
        not created yet, or serving a model without a version or without the metric, is not
        compared. Left out, False.
    """

    thresholds: Sequence[MetricThreshold]
    compare_with_serving: bool = False

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


ServingLookup = Callable[[sfn.IChainable], tuple[sfn.IChainable, sfn.INextable, str]]
"""Given where to go when there is nothing to compare with, the states that read the serving
model's registry version: (first state, last state, path of its CustomerMetadataProperties)."""


def gate_states(
    scope: Construct,
    gate: QualityGate,
    metrics_path: str,
    result_path: str = "$.gate",
    serving: ServingLookup | None = None,
) -> sfn.Chain:
    """The gate's states: reads ``metrics_path`` (a FinalMetricDataList), leaves
    ``{"<metric>": [value]}`` at ``result_path`` and goes on, or fails with ``ModelRejected``.
    With ``serving``, a model worse than the serving one is rejected too."""
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
    if serving is not None:
        check = _serving_states(scope, gate, key, result_path, serving, passed, rejected)
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


def _serving_states(
    scope: Construct,
    gate: QualityGate,
    key: dict[str, str],
    result_path: str,
    serving: ServingLookup,
    passed: sfn.IChainable,
    rejected: sfn.IChainable,
) -> sfn.IChainable:
    """Per threshold: the serving version's value (a string in CustomerMetadataProperties,
    parsed with States.StringToJson) against the new one; absent values are not compared."""
    first, last, props = serving(passed)
    nxt: sfn.IChainable = passed
    for i, t in reversed(list(enumerate(gate.thresholds))):
        raw = f"{props}['{t.metric_name}']"
        new = f"{result_path}.{key[t.metric_name]}[0]"
        old = f"{result_path}Serving{i}.v"
        higher_is_better = t.operator in (">=", ">")
        worse = (
            sfn.Condition.number_less_than_json_path(new, old)
            if higher_is_better
            else sfn.Condition.number_greater_than_json_path(new, old)
        )
        cause = sfn.Pass(
            scope,
            f"WorseThanServing{i}",
            parameters={
                "Cause.$": f"States.Format('{t.metric_name} = {{}} is worse than {{}} of the "
                f"model in service', {new}, {old})"
            },
            result_path=f"{result_path}Error",
        ).next(rejected)
        compare = sfn.Choice(scope, f"CompareWithServing{i}").when(worse, cause).otherwise(nxt)
        read = sfn.Pass(
            scope,
            f"ReadServing{i}",
            parameters={"v.$": f"States.StringToJson({raw})"},
            result_path=f"{result_path}Serving{i}",
        ).next(compare)
        nxt = (
            sfn.Choice(scope, f"ServingHasMetric{i}")
            .when(sfn.Condition.is_present(raw), read)
            .otherwise(nxt)
        )
    last.next(nxt)
    return first

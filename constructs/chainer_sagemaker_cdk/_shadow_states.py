"""The states of a shadow deployment (see :mod:`chainer_sagemaker_cdk.shadow` for the flow).

Built from the pipeline fragment's own helpers (its aws-sdk tasks with their retriers, its
poll interval, tags and failure states), like the quality gate's states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import aws_stepfunctions as sfn

from . import _iam, _states
from .shadow import SHADOW_VARIANT, ShadowDeployment

if TYPE_CHECKING:
    from .pipeline import TrainingPipelineFragment

__all__ = ["shadow_states"]

_CLOUDWATCH = "aws-sdk:cloudwatch:describeAlarms"


def wait_for_config(
    f: TrainingPipelineFragment,
    id: str,
    config_path: str,
    then: sfn.IChainable,
    rolled_back: sfn.IChainable | None = None,
) -> sfn.Wait:
    """Poll the endpoint until it is InService with the config at ``config_path``, then go to
    ``then``; a rollback goes to ``rolled_back`` (left out: the fragment's failure state), a
    failure ends in the fragment's failure states."""
    wait = sfn.Wait(f, f"{id}Wait", time=sfn.WaitTime.duration(f._poll))
    describe = f._sdk(
        f"{id}Describe", "describeEndpoint", {"EndpointName": f.endpoint_name}, "$.status"
    )
    status = "$.status.EndpointStatus"
    in_service = sfn.Condition.string_equals(status, "InService")
    reason = sfn.Condition.is_present("$.status.FailureReason")
    check = (
        sfn.Choice(f, f"{id}Status")
        .when(
            sfn.Condition.or_(
                *[sfn.Condition.string_equals(status, s) for s in _states.BUSY_STATUSES]
            ),
            wait,
        )
        .when(
            sfn.Condition.and_(
                in_service,
                sfn.Condition.string_equals_json_path("$.status.EndpointConfigName", config_path),
            ),
            then,
        )
        .when(sfn.Condition.and_(in_service, reason), rolled_back or f.deployment_rolled_back)
        .when(
            sfn.Condition.and_(sfn.Condition.string_equals(status, "Failed"), reason),
            f.deployment_failed,
        )
        .otherwise(f.not_updated)
    )
    wait.next(describe).next(check)
    f.shadow_tasks.append(describe)
    return wait


def wait_until_free(
    f: TrainingPipelineFragment, id: str, deploy_failed: sfn.IChainable
) -> tuple[sfn.Wait, sfn.Choice]:
    """Poll the endpoint while another update of it runs (SageMaker's own or another
    deployment's): a refused update waits here rather than going back to the lookup, which
    would shadow again. Returns the first state and the Choice the caller completes with what
    to do once the endpoint is free (its status and config at ``$.free``). Bounded as the
    pipeline's other waits: by the execution's timeout."""
    wait = sfn.Wait(f, f"{id}WaitUntilFree", time=sfn.WaitTime.duration(f._poll))
    describe = f._sdk(
        f"{id}LookAgain",
        "describeEndpoint",
        {"EndpointName": f.endpoint_name},
        "$.free",
        {"EndpointStatus.$": "$.EndpointStatus", "EndpointConfigName.$": "$.EndpointConfigName"},
    )
    describe.add_catch(deploy_failed, errors=["States.TaskFailed"], result_path="$.deployError")
    free = sfn.Choice(f, f"{id}EndpointFree").when(
        sfn.Condition.or_(
            *[
                sfn.Condition.string_equals("$.free.EndpointStatus", s)
                for s in (*_states.BUSY_STATUSES, "Deleting")
            ]
        ),
        wait,
    )
    wait.next(describe).next(free)
    f.shadow_tasks.append(describe)
    return wait, free


def retry_promotion(
    f: TrainingPipelineFragment, promote: sfn.IChainable, deploy_failed: sfn.IChainable
) -> sfn.IChainable:
    """The promotion refused as in-progress: wait until the endpoint is free, then send it
    again. The shadow passed its bake and alarms; shadowing again would cost another bake and
    leave the first shadow config behind. Sent whichever config the endpoint has by then, as
    an ordinary update that met a busy endpoint is (the last update wins)."""
    wait, free = wait_until_free(f, "Promotion", deploy_failed)
    free.otherwise(promote)
    return wait


def _drop_shadow_config(
    f: TrainingPipelineFragment, id: str, then: sfn.IChainable
) -> sfn.CustomState:
    """Delete the shadow's endpoint config, then go to ``then`` whether or not that worked (a
    config left behind costs nothing and names no running resource)."""
    drop = f._sdk(
        id,
        "deleteEndpointConfig",
        {"EndpointConfigName.$": "$.shadow.ConfigName"},
        sfn.JsonPath.DISCARD,
    )
    drop.add_catch(then, errors=["States.ALL"], result_path="$.deleteError")
    drop.next(then)
    return drop


def shadow_states(
    f: TrainingPipelineFragment,
    shadow: ShadowDeployment,
    alarm_names: list[str],
    instance_count: int,
    deploy_failed: sfn.IChainable,
    wait_busy: sfn.IChainable,
    promote: sfn.IChainable,
) -> sfn.IChainable:
    """From an endpoint in service: shadow, bake, check, then ``promote`` or restore and fail.
    Returns the first state."""
    read = f._sdk(
        "ReadProductionModel",
        "describeEndpointConfig",
        {"EndpointConfigName.$": "$.existing.EndpointConfigName"},
        "$.production",
        {
            # An intrinsic on a [*] path: a list in every JSONPath reading, then its item.
            "ModelName.$": "States.ArrayGetItem($.ProductionVariants[*].ModelName, 0)",
            "EndpointConfigName.$": "$.EndpointConfigName",
        },
    )
    name = sfn.Pass(
        f,
        "NameShadowConfig",
        parameters={
            # Named like the runs (the role's scope), unique per attempt.
            "ConfigName": sfn.JsonPath.format(
                _iam.run_name("{}", "{}"), f.prefix, sfn.JsonPath.uuid()
            ),
        },
        result_path="$.shadow",
    )

    def variant(name: str, model_path: str, count: int, weight: float) -> dict[str, Any]:
        return {
            "VariantName": name,
            "ModelName.$": model_path,
            "InstanceType": f.endpoint_instance_type,
            "InitialInstanceCount": count,
            "InitialVariantWeight": weight,
        }

    config: dict[str, Any] = {
        "EndpointConfigName.$": "$.shadow.ConfigName",
        "ProductionVariants": [variant("AllTraffic", "$.production.ModelName", instance_count, 1)],
        "ShadowProductionVariants": [
            variant(
                SHADOW_VARIANT,
                "$.training.TrainingJobName",
                shadow.instance_count or instance_count,
                shadow.variant_weight,
            )
        ],
        "Tags": f._tags(),
    }
    if f.endpoint_kms_key is not None:
        config["KmsKeyId"] = f.endpoint_kms_key.key_arn
    create = f._sdk("CreateShadowConfig", "createEndpointConfig", config, sfn.JsonPath.DISCARD)
    deploy = f._sdk(
        "DeployShadow",
        "updateEndpoint",
        {"EndpointName": f.endpoint_name, "EndpointConfigName.$": "$.shadow.ConfigName"},
        sfn.JsonPath.DISCARD,
    )
    created = (
        sfn.Choice(f, "ShadowConfigCreated")
        .when(_states.cause_matches("$.deployError.Cause", _states.ALREADY_EXISTS), deploy)
        .otherwise(deploy_failed)
    )
    create.add_catch(created, errors=["States.TaskFailed"], result_path="$.deployError")
    # Refused (the endpoint busy): this config holds the production read before the wait.
    # Deleted, and the shadow starts over from the lookup (production may have changed).
    drop_refused = _drop_shadow_config(f, "DropRefusedShadowConfig", wait_busy)
    busy = (
        sfn.Choice(f, "ShadowUpdateRefused")
        .when(_states.cause_matches("$.deployError.Cause", _states.IN_PROGRESS), drop_refused)
        .otherwise(deploy_failed)
    )
    deploy.add_catch(busy, errors=["States.TaskFailed"], result_path="$.deployError")

    bake = sfn.Wait(f, "BakeShadow", time=sfn.WaitTime.duration(shadow.bake_time))
    check = sfn.CustomState(
        f,
        "CheckShadowAlarms",
        state_json={
            "Type": "Task",
            "Resource": f"arn:{f._partition}:states:::{_CLOUDWATCH}",
            "Parameters": {"AlarmNames": alarm_names},
            "ResultPath": "$.shadowCheck",
            # No JSONPath filter: one that matches nothing fails the state. [*] gives [].
            "ResultSelector": {
                "Firing.$": "States.ArrayContains($.MetricAlarms[*].StateValue, 'ALARM')",
                "Found.$": "States.ArrayLength($.MetricAlarms)",
                "Alarms.$": "States.JsonToString($.MetricAlarms[*].AlarmName)",
                "States.$": "States.JsonToString($.MetricAlarms[*].StateValue)",
            },
        },
    )
    # A read: retried on any failure, then the shadow is not promoted (unchecked).
    check.add_retry(
        errors=["States.TaskFailed"],
        interval=f._retry_interval,
        backoff_rate=f._backoff,
        max_attempts=3,
    )
    unchecked = sfn.Pass(
        f,
        "ShadowUnchecked",
        parameters={
            "Cause.$": "States.Format('The shadow model {} was not promoted: its alarms could "
            "not be read ({})', $.training.TrainingJobName, "
            "$.shadowCheckError.Cause)"
        },
        result_path="$.shadowVerdict",
    )
    check.add_catch(unchecked, errors=["States.ALL"], result_path="$.shadowCheckError")
    firing = sfn.Pass(
        f,
        "ShadowAlarmFiring",
        parameters={
            "Cause.$": "States.Format('The shadow model {} was not promoted: an alarm is in "
            "ALARM after the bake (alarms {}, states {})', "
            "$.training.TrainingJobName, $.shadowCheck.Alarms, $.shadowCheck.States)"
        },
        result_path="$.shadowVerdict",
    )
    # An alarm deleted (or not created yet) is not a quiet one: DescribeAlarms leaves it out.
    missing = sfn.Pass(
        f,
        "ShadowAlarmsMissing",
        parameters={
            "Cause.$": f"States.Format('The shadow model {{}} was not promoted: {{}} of its "
            f"{len(alarm_names)} alarms exist ({{}})', "
            "$.training.TrainingJobName, $.shadowCheck.Found, $.shadowCheck.Alarms)"
        },
        result_path="$.shadowVerdict",
    )
    verdict = (
        sfn.Choice(f, "ShadowVerdict")
        .when(
            sfn.Condition.not_(
                sfn.Condition.number_equals("$.shadowCheck.Found", len(alarm_names))
            ),
            missing,
        )
        .when(sfn.Condition.boolean_equals("$.shadowCheck.Firing", True), firing)
        .otherwise(promote)
    )

    restore = f._sdk(
        "RemoveShadow",
        "updateEndpoint",
        {
            "EndpointName": f.endpoint_name,
            "EndpointConfigName.$": "$.production.EndpointConfigName",
        },
        sfn.JsonPath.DISCARD,
    )
    rejected = sfn.Fail(
        f, "ShadowNotPromoted", error="ShadowNotPromoted", cause_path="$.shadowVerdict.Cause"
    )
    drop_rejected = _drop_shadow_config(f, "DeleteRejectedShadowConfig", rejected)
    restored = sfn.Pass(
        f,
        "ShadowRemoved",
        parameters={
            "Cause.$": "States.Format('{}; production still serves {}', "
            "$.shadowVerdict.Cause, $.production.ModelName)"
        },
        result_path="$.shadowVerdict",
    )
    restored.next(drop_rejected)
    # The restore refused as in-progress: wait until the endpoint is free. Still on the
    # shadow config (SageMaker's own update): send the restore again. On another config:
    # another deployment replaced the shadow; updating back would undo that deployment.
    replaced = sfn.Pass(
        f,
        "ShadowReplaced",
        parameters={
            "Cause.$": "States.Format('{}; the endpoint was not updated back to {}: another "
            "deployment moved it to {} meanwhile', $.shadowVerdict.Cause, "
            "$.production.EndpointConfigName, $.free.EndpointConfigName)"
        },
        result_path="$.shadowVerdict",
    )
    replaced.next(drop_rejected)
    wait_free, free = wait_until_free(f, "Restore", deploy_failed)
    free.when(
        sfn.Condition.string_equals_json_path("$.free.EndpointConfigName", "$.shadow.ConfigName"),
        restore,
    ).otherwise(replaced)
    restore.add_catch(
        sfn.Choice(f, "RestoreRefused")
        .when(_states.cause_matches("$.deployError.Cause", _states.IN_PROGRESS), wait_free)
        .otherwise(deploy_failed),
        errors=["States.TaskFailed"],
        result_path="$.deployError",
    )
    # The promotion (its guardrails) rolled back: the endpoint is on the shadow config again,
    # copying traffic to the new model; the shadow is removed as after an alarm.
    promotion_rolled_back = sfn.Pass(
        f,
        "PromotionRolledBack",
        parameters={
            "Cause.$": "States.Format('The shadow model {} passed its bake, but its promotion "
            "rolled back ({})', $.training.TrainingJobName, $.status.FailureReason)"
        },
        result_path="$.shadowVerdict",
    )
    f.promotion_rolled_back.when(
        sfn.Condition.is_present("$.shadow.ConfigName"), promotion_rolled_back
    ).otherwise(f.deployment_rolled_back)
    for verdict_state in (firing, unchecked, missing, promotion_rolled_back):
        verdict_state.next(restore)
    restore.next(wait_for_config(f, "Restore", "$.production.EndpointConfigName", restored))

    # The shadow's update rolled back: production serves on, the shadow config is unused.
    drop_rolled_back = _drop_shadow_config(
        f, "DropRolledBackShadowConfig", f.deployment_rolled_back
    )
    read.next(name).next(create).next(deploy).next(
        wait_for_config(f, "Shadow", "$.shadow.ConfigName", bake, drop_rolled_back)
    )
    # After the bake, the alarms speak for the shadow only if it served the whole time: the
    # endpoint still on the shadow config (another deployment would have replaced it).
    baked = f._sdk(
        "ShadowStillServing",
        "describeEndpoint",
        {"EndpointName": f.endpoint_name},
        "$.baked",
        {"EndpointConfigName.$": "$.EndpointConfigName"},
    )
    baked.add_catch(deploy_failed, errors=["States.TaskFailed"], result_path="$.deployError")
    displaced = sfn.Pass(
        f,
        "ShadowDisplaced",
        parameters={
            "Cause.$": "States.Format('The shadow model {} was not promoted: another "
            "deployment moved the endpoint to {} during the bake, so its alarms did not watch "
            "the shadow throughout', $.training.TrainingJobName, $.baked.EndpointConfigName)"
        },
        result_path="$.shadowVerdict",
    )
    displaced.next(drop_rejected)
    bake.next(baked).next(
        sfn.Choice(f, "ShadowBakedInPlace")
        .when(
            sfn.Condition.string_equals_json_path(
                "$.baked.EndpointConfigName", "$.shadow.ConfigName"
            ),
            check,
        )
        .otherwise(displaced)
    )
    check.next(verdict)
    read.add_catch(deploy_failed, errors=["States.TaskFailed"], result_path="$.deployError")
    f.shadow_tasks += [read, create, deploy, drop_refused, drop_rolled_back, baked, check]
    f.shadow_tasks.append(restore)
    f.shadow_tasks.append(drop_rejected)
    return read


def delete_shadow_config(f: TrainingPipelineFragment, after: sfn.INextable) -> sfn.INextable:
    """After the promotion is in service: delete the shadow config (a first deployment had
    none). A failed delete is not fatal: the versions' clean-up removes it later."""
    done = sfn.Pass(f, "ShadowConfigDeleted")
    delete = _drop_shadow_config(f, "DeleteShadowConfig", done)
    after.next(
        sfn.Choice(f, "WasShadowed")
        .when(sfn.Condition.is_present("$.shadow.ConfigName"), delete)
        .otherwise(done)
    )
    f.shadow_tasks.append(delete)
    return done

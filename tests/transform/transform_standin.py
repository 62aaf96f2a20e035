"""``createTransformJob.sync`` for moto's Step Functions interpreter, next to the infra tests'
stand-ins (``infra.sfn_standins``), whose ``.sync`` resolver knows training jobs only.

``transform_standin()`` adds the same resolver for transform jobs (poll DescribeTransformJob
until Completed, else fail the task with ``States.TaskFailed`` and the description as the
cause), plus two knobs on moto's transform jobs: throttle the next N CreateTransformJob calls,
fail a job with a FailureReason. moto completes a transform job at once; nothing is read or
written in S3, and no IAM policy is evaluated (the tests check the roles with ``iam_check``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from infra import sfn_standins
from moto.sagemaker import models as sm_models

__all__ = ["Knobs", "transform_standin"]


class Knobs:
    throttle = 0
    failures: dict[str, str] = {}  # noqa: RUF012 - reset per test by the fixture


@contextlib.contextmanager
def transform_standin() -> Iterator[type[Knobs]]:
    integration = sfn_standins._SageMakerIntegration
    training_resolver = integration._build_sync_resolver
    backend = sm_models.SageMakerModelBackend
    create_job, describe_job = backend.create_transform_job, backend.describe_transform_job

    def build(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> Callable[[], Any]:
        part, params, creds = resource_runtime_part, normalised_parameters, state_credentials
        if self._get_boto_service_action() != "create_transform_job":
            return training_resolver(self, env, part, params, creds)
        env.stack.pop()
        client = self._client(part, creds)
        name = params["TransformJobName"]

        def resolve() -> Any:
            described = client.describe_transform_job(TransformJobName=name)
            described.pop("ResponseMetadata", None)
            if described["TransformJobStatus"] in ("InProgress", "Stopping"):
                return None
            if described["TransformJobStatus"] == "Completed":
                return sfn_standins._jsonable(described)
            raise sfn_standins.FailureEventException(
                sfn_standins.FailureEvent(
                    env=env,
                    error_name=sfn_standins.StatesErrorName(
                        typ=sfn_standins.StatesErrorNameType.StatesTaskFailed
                    ),
                    event_type=sfn_standins.HistoryEventType.TaskFailed,
                    event_details=sfn_standins.EventDetails(
                        taskFailedEventDetails=sfn_standins.TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=sfn_standins.StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=json.dumps(sfn_standins._jsonable(described)),
                        )
                    ),
                )
            )

        return resolve

    def create_transform_job(self: Any, *args: Any, **kwargs: Any) -> Any:
        if Knobs.throttle:
            Knobs.throttle -= 1
            raise sfn_standins.ThrottlingError("Rate exceeded")
        return create_job(self, *args, **kwargs)

    def describe_transform_job(self: Any, transform_job_name: str) -> Any:
        described = dict(describe_job(self, transform_job_name))
        reason = Knobs.failures.get(transform_job_name)
        if reason:
            described.update(TransformJobStatus="Failed", FailureReason=reason)
        return described

    with contextlib.ExitStack() as stack:
        stack.enter_context(sfn_standins._patched(integration, "_build_sync_resolver", build))
        stack.enter_context(
            sfn_standins._patched(backend, "create_transform_job", create_transform_job)
        )
        stack.enter_context(
            sfn_standins._patched(backend, "describe_transform_job", describe_transform_job)
        )
        Knobs.throttle, Knobs.failures = 0, {}
        yield Knobs

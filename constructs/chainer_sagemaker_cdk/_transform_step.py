"""``TransformStep``: run a :class:`ChainerTransformer` from Step Functions
(``arn:aws:states:::sagemaker:createTransformJob.sync``).

Four states: ``TransformDefaults`` (a Pass with the job name, model name, input and output
the construct was given), ``ApplyTransformInput`` (merges the overrides found at
``overrides_path``, by default the state's own input), ``CheckTransformJobName`` (a Choice: a
name not of the form ``<base_job_name>--<run>`` ends the execution in the Fail state
``InvalidTransformJobName``, error ``InvalidExecutionInput``, before any job is created) and
``Transform`` (the task; it waits until the job has ended and fails the execution when the job
fails). Per-execution overrides, all optional::

    {"TransformJobName": "<base_job_name>--nightly-42",
     "TransformInput": "s3://bucket/other/prefix",
     "TransformOutput": "s3://bucket/scores/2026-12-01",
     "ModelName": "chainer-digits-1234"}

(other buckets or prefixes need ``transformer.grant_read_input`` / ``grant_write_output``;
job names must have the form ``<base_job_name>--<run>``, which the rights are scoped to, so
that ``chainer-digits``' step cannot reach ``chainer-digits-v2``'s jobs: see
``_iam.run_name``).

Why a custom state and not aws-cdk-lib's ``SageMakerCreateTransformJob``: that task has no
``DataProcessing`` (InputFilter, OutputFilter, JoinSource), and it writes its IAM statements
into the state machine role's inline policy, where this library keeps each role's rights in
customer-managed policies (``grant_run``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from . import _iam
from ._states import OPTIMIZED_TRANSIENT, RESOURCE_LIMIT
from ._validation import require, stack_of

if TYPE_CHECKING:
    from .transformer import ChainerTransformer

__all__ = ["TRANSFORM_RETRY_ERRORS", "TransformStep"]

# The optimized integration's names for throttling and other service errors (see _states).
TRANSFORM_RETRY_ERRORS = OPTIMIZED_TRANSIENT
_CONFIG = "$.transformConfig.config"


class TransformStep(sfn.StateMachineFragment):
    """The transform's states, to chain into any state machine; call :meth:`grant_run` with
    the state machine's role (the states carry no policies of their own)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        transformer: ChainerTransformer,
        job_name_path: str | None = None,
        model_name_path: str | None = None,
        overrides_path: str = "$",
        result_path: str = "$.transform",
        retry_attempts: int = 3,
        retry_interval: Duration | None = None,
        retry_backoff_rate: float = 2.0,
        resource_limit_wait: Duration | None = None,
    ) -> None:
        """Define the states.

        :param transformer: what to run.
        :param job_name_path: JSONPath of the job name in the state (it must have the form
            ``<base_job_name>--<run>``); left out, the training job's name after a pipeline
            whose estimator has the transformer's ``base_job_name``, else
            ``<base_job_name>--<uuid>`` per execution.
        :param model_name_path: JSONPath of the model name in the state; left out, the
            training job's name after a pipeline (``$.training.TrainingJobName``), else the
            transformer's ``model``.
        :param overrides_path: JSONPath of an object with per-execution overrides; left out,
            ``$`` (the execution input, when the step comes first).
        :param result_path: where the finished job's name, ARN, status and output path go;
            left out, ``$.transform``.
        :param retry_attempts: retries of the CreateTransformJob call on SageMaker service
            errors such as throttling; left out, 3.
        :param retry_interval: before the first retry; left out, 10 seconds.
        :param retry_backoff_rate: left out, 2 (the interval doubles).
        :param resource_limit_wait: on ResourceLimitExceeded (too many transform jobs or
            instances running), wait this long, then doubling, 5 times; left out, 5 minutes.
        """
        super().__init__(scope, id)
        self.transformer = transformer
        model_name_path = model_name_path or transformer.model_name_path
        job_name_path = job_name_path or transformer.job_name_path
        require(
            model_name_path is not None or transformer.model is not None,
            "model_name_path",
            None,
            "give the JSONPath of the model's name in the state",
        )
        partition = stack_of(self).partition
        defaults: dict[str, Any] = {
            "TransformInput": transformer.input_uri,
            "TransformOutput": transformer.output_uri,
        }
        if job_name_path is not None:
            defaults["TransformJobName.$"] = job_name_path
        else:
            defaults["TransformJobName"] = sfn.JsonPath.format(
                _iam.run_name("{}", "{}"), transformer.base_job_name, sfn.JsonPath.uuid()
            )
        if model_name_path is not None:
            defaults["ModelName.$"] = model_name_path
        else:
            defaults["ModelName"] = transformer.model_name
        self.defaults_state = sfn.Pass(
            self, "TransformDefaults", parameters=defaults, result_path="$.transformDefaults"
        )
        self.apply_input_state = sfn.Pass(
            self,
            "ApplyTransformInput",
            parameters={
                "config.$": f"States.JsonMerge($.transformDefaults, {overrides_path}, false)"
            },
            result_path="$.transformConfig",
        )
        base = transformer.base_job_name
        self.invalid_name_state = sfn.Fail(
            self,
            "InvalidTransformJobName",
            error="InvalidExecutionInput",
            cause=f"TransformJobName must have the form '{_iam.run_name(base, '<run>')}' "
            "(letters, digits and hyphens, at most 63 characters: the step's role reaches only "
            "the transform jobs named so); leave it out for a generated name",
        )
        self.check_name_state = sfn.Choice(self, "CheckTransformJobName")
        request = transformer.transform_job_request("placeholder", "placeholder")
        del request["TransformJobName"], request["ModelName"]
        request["TransformJobName.$"] = f"{_CONFIG}.TransformJobName"
        request["ModelName.$"] = f"{_CONFIG}.ModelName"
        source = request["TransformInput"]["DataSource"]["S3DataSource"]
        del source["S3Uri"]
        source["S3Uri.$"] = f"{_CONFIG}.TransformInput"
        del request["TransformOutput"]["S3OutputPath"]
        request["TransformOutput"]["S3OutputPath.$"] = f"{_CONFIG}.TransformOutput"
        self.transform_task = sfn.CustomState(
            self,
            "Transform",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{partition}:states:::sagemaker:createTransformJob.sync",
                "Parameters": request,
                "ResultPath": result_path,
                "ResultSelector": {
                    "TransformJobName.$": "$.TransformJobName",
                    "TransformJobArn.$": "$.TransformJobArn",
                    "TransformJobStatus.$": "$.TransformJobStatus",
                    "S3OutputPath.$": "$.TransformOutput.S3OutputPath",
                },
            },
        )
        # Neither error created a job, so the retry reuses the job name.
        self.transform_task.add_retry(
            errors=[RESOURCE_LIMIT],
            interval=resource_limit_wait or Duration.minutes(5),
            backoff_rate=2,
            max_attempts=5,
        )
        if retry_attempts:
            self.transform_task.add_retry(
                errors=list(TRANSFORM_RETRY_ERRORS),
                interval=retry_interval or Duration.seconds(10),
                backoff_rate=retry_backoff_rate,
                max_attempts=retry_attempts,
            )
        self.check_name_state.when(
            sfn.Condition.not_(
                sfn.Condition.string_matches(
                    f"{_CONFIG}.TransformJobName", transformer.job_name_pattern
                )
            ),
            self.invalid_name_state,
        ).otherwise(self.transform_task)
        self.defaults_state.next(self.apply_input_state).next(self.check_name_state)

    # -- StateMachineFragment -------------------------------------------------------------
    @property
    def start_state(self) -> sfn.State:
        return self.defaults_state

    @property
    def end_states(self) -> list[sfn.INextable]:
        return [self.transform_task]

    # -- IAM --------------------------------------------------------------------------------
    def grant_run(self, grantee: iam.IGrantable) -> None:
        """What ``createTransformJob.sync`` calls, as the Step Functions developer guide lists
        it (https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html), scoped
        to this transformer's job names (``<base_job_name>--*``, lower case as SageMaker's ARNs
        are): Create/Describe/StopTransformJob, AddTags (Step
        Functions tags the jobs it starts), ListTags, and the EventBridge rule it manages to
        learn when the job ends. No ``iam:PassRole``: a transform job runs as its model's
        role, which CreateTransformJob does not take."""
        stack = stack_of(self)
        jobs = _iam.run_name_arn(self, "transform-job", self.transformer.base_job_name)
        _iam.add(
            grantee.grant_principal,
            _iam.statement(
                [
                    "sagemaker:CreateTransformJob",
                    "sagemaker:DescribeTransformJob",
                    "sagemaker:StopTransformJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                [jobs],
            ),
            _iam.statement(
                ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                [
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTransformJobsRule",
                    )
                ],
            ),
        )

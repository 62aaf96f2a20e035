"""AWS's documented permissions, as data: (source URL, action, resource, request context).

Each entry is a request the role must be allowed to make, taken from AWS's documentation of
the API or integration pattern; ``{...}`` fields are filled in by the test from the stack
(names, buckets, keys). Not verified in an account: these are the documented requirements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAGEMAKER_ROLES = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html"
    "#sagemaker-roles-createtrainingjob-perms"
)
SAGEMAKER_ROLES_CREATEMODEL = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html"
    "#sagemaker-roles-createmodel-perms"
)
SFN_SAGEMAKER_IAM = "https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html"
SFN_LOGS = "https://docs.aws.amazon.com/step-functions/latest/dg/cw-logs.html"
SFN_XRAY = "https://docs.aws.amazon.com/step-functions/latest/dg/xray-iam.html"
OUTPUT_KMS = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_OutputDataConfig.html"
S3_LIST = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html"


@dataclass(frozen=True)
class Requirement:
    source: str
    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)


ARN = "arn:aws:{service}:us-east-1:123456789012:{resource}"


def arn(service: str, resource: str) -> str:
    return ARN.format(service=service, resource=resource)


def training_job(
    *,
    job: str,
    channels: dict[str, tuple[str, str]],
    output: tuple[str, str],
    keys: list[str],
    repository: str,
    code: tuple[str, str] | None,
    vpc: bool,
) -> list[Requirement]:
    """The execution role of CreateTrainingJob: read channels, write output, pull the image,
    logs and metrics, KMS, ENIs. ``channels``: name -> (bucket, prefix)."""
    reqs: list[Requirement] = []
    for bucket, prefix in channels.values():
        reqs += [
            Requirement(
                S3_LIST, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": f"{prefix}/a"}
            ),
            Requirement(SAGEMAKER_ROLES, "s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}/a"),
        ]
    if code is not None:  # network isolation: the code arrives as an S3Prefix channel
        bucket, key = code
        reqs += [
            Requirement(S3_LIST, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": key}),
            Requirement(SAGEMAKER_ROLES, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}"),
        ]
    bucket, prefix = output
    out = f"arn:aws:s3:::{bucket}/{prefix}/{job}/output/model.tar.gz"
    reqs += [
        Requirement(SAGEMAKER_ROLES, "s3:PutObject", out),
        Requirement(SAGEMAKER_ROLES, "ecr:GetAuthorizationToken", "*"),
        Requirement(SAGEMAKER_ROLES, "ecr:BatchGetImage", repository),
        Requirement(SAGEMAKER_ROLES, "ecr:GetDownloadUrlForLayer", repository),
        Requirement(SAGEMAKER_ROLES, "ecr:BatchCheckLayerAvailability", repository),
        Requirement(
            SAGEMAKER_ROLES,
            "cloudwatch:PutMetricData",
            "*",
            {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"},
        ),
        Requirement(
            SAGEMAKER_ROLES,
            "logs:CreateLogStream",
            arn("logs", f"log-group:/aws/sagemaker/TrainingJobs:log-stream:{job}/algo-1"),
        ),
        Requirement(
            SAGEMAKER_ROLES,
            "logs:PutLogEvents",
            arn("logs", f"log-group:/aws/sagemaker/TrainingJobs:log-stream:{job}/algo-1"),
        ),
    ]
    for key in keys:
        reqs += [
            Requirement(SAGEMAKER_ROLES, "kms:Decrypt", key),
            Requirement(SAGEMAKER_ROLES, "kms:GenerateDataKey", key),
            Requirement(
                SAGEMAKER_ROLES, "kms:CreateGrant", key, {"kms:GrantIsForAWSResource": "true"}
            ),
        ]
    if vpc:
        for action in (
            "ec2:DescribeVpcs",
            "ec2:DescribeSubnets",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeDhcpOptions",
        ):
            reqs.append(Requirement(SAGEMAKER_ROLES, action, "*"))
        eni = arn("ec2", "network-interface/eni-0123456789abcdef0")
        for action in (
            "ec2:CreateNetworkInterface",
            "ec2:CreateNetworkInterfacePermission",
            "ec2:DeleteNetworkInterface",
            "ec2:DeleteNetworkInterfacePermission",
        ):
            reqs.append(Requirement(SAGEMAKER_ROLES, action, eni))
    return reqs


def state_machine(*, job: str, endpoint: str, role: str, deploy: bool) -> list[Requirement]:
    """The state machine role, per integration pattern of the Step Functions developer guide."""
    jobs = arn("sagemaker", f"training-job/{job}")
    passed = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    reqs = [
        # createTrainingJob.sync (Run a Job): the job, its tags, the events rule it polls by.
        *(
            Requirement(SFN_SAGEMAKER_IAM, f"sagemaker:{a}", jobs)
            for a in (
                "CreateTrainingJob",
                "DescribeTrainingJob",
                "StopTrainingJob",
                "AddTags",
                "ListTags",
            )
        ),
        *(
            Requirement(
                SFN_SAGEMAKER_IAM,
                f"events:{a}",
                arn("events", "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"),
            )
            for a in ("PutTargets", "PutRule", "DescribeRule")
        ),
        Requirement(SFN_SAGEMAKER_IAM, "iam:PassRole", role, passed),
        # Logs and X-Ray of the state machine itself.
        *(
            Requirement(SFN_LOGS, f"logs:{a}", "*")
            for a in ("CreateLogDelivery", "GetLogDelivery", "UpdateLogDelivery")
        ),
        *(
            Requirement(SFN_XRAY, f"xray:{a}", "*")
            for a in ("PutTraceSegments", "PutTelemetryRecords")
        ),
    ]
    if deploy:
        reqs += [
            Requirement(
                SFN_SAGEMAKER_IAM, "sagemaker:CreateModel", arn("sagemaker", f"model/{job}")
            ),
            Requirement(
                SFN_SAGEMAKER_IAM,
                "sagemaker:CreateEndpointConfig",
                arn("sagemaker", f"endpoint-config/{job}"),
            ),
            Requirement(
                SFN_SAGEMAKER_IAM,
                "sagemaker:CreateEndpoint",
                arn("sagemaker", f"endpoint/{endpoint}"),
            ),
            Requirement(
                SFN_SAGEMAKER_IAM,
                "sagemaker:UpdateEndpoint",
                arn("sagemaker", f"endpoint/{endpoint}"),
            ),
            Requirement(
                SFN_SAGEMAKER_IAM,
                "sagemaker:DescribeEndpoint",
                arn("sagemaker", f"endpoint/{endpoint}"),
            ),
        ]
    return reqs


def model(
    *, model_data: tuple[str, str], repository: str, capture: tuple[str, str] | None = None
) -> list[Requirement]:
    """The execution role of CreateModel (and of the endpoint's containers): read the model
    data, pull the image, logs and metrics; write captured data when capture is on."""
    bucket, key = model_data
    reqs = [
        Requirement(SAGEMAKER_ROLES_CREATEMODEL, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}"),
        Requirement(SAGEMAKER_ROLES_CREATEMODEL, "ecr:GetAuthorizationToken", "*"),
        Requirement(SAGEMAKER_ROLES_CREATEMODEL, "ecr:BatchGetImage", repository),
        Requirement(SAGEMAKER_ROLES_CREATEMODEL, "ecr:GetDownloadUrlForLayer", repository),
        Requirement(
            SAGEMAKER_ROLES_CREATEMODEL,
            "cloudwatch:PutMetricData",
            "*",
            {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"},
        ),
        Requirement(
            SAGEMAKER_ROLES_CREATEMODEL,
            "logs:PutLogEvents",
            arn("logs", "log-group:/aws/sagemaker/Endpoints/e:log-stream:AllTraffic/i-0"),
        ),
    ]
    if capture is not None:
        bucket, prefix = capture
        reqs.append(
            Requirement(
                DATA_CAPTURE, "s3:PutObject", f"arn:aws:s3:::{bucket}/{prefix}/e/AllTraffic/a.jsonl"
            )
        )
    return reqs


DATA_CAPTURE = "https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture.html"

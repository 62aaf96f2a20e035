#!/usr/bin/env python3
"""Example CDK app: the digits example trained by a Step Functions pipeline and deployed to an
endpoint. Environment-agnostic; ``npx cdk synth`` works offline.

Upload the channels first (``python examples/digits/prepare_data.py data`` then
``aws s3 sync data s3://<DataBucket>/digits/``) and start an execution with ``{}``.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, App, CfnOutput, RemovalPolicy, Stack, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)

ROOT = Path(__file__).resolve().parent


class DigitsStack(Stack):
    """Data bucket, estimator, pipeline and the endpoint the pipeline deploys."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id, description="Chainer digits MLP on SageMaker")
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            removal_policy=RemovalPolicy.RETAIN,
        )
        data_key = kms.Key(
            self, "DataKey", enable_key_rotation=True, description="Digits training data"
        )
        data = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=data_key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="data/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        estimator = ChainerEstimator(
            self,
            "Estimator",
            code=SourceCode.from_directory(ROOT / "examples" / "digits", "train.py"),
            instance_type="ml.m5.xlarge",
            hyperparameters={"epochs": 10, "batch-size": 64, "units": 1000},
            channels={
                "train": TrainingInput(bucket=data, key_prefix="digits/train"),
                "test": TrainingInput(bucket=data, key_prefix="digits/test"),
            },
            base_job_name="chainer-digits",
            metric_definitions={"validation:accuracy": r"validation/main/accuracy\s+([0-9.]+)"},
        )
        artifacts = estimator.output_bucket
        if isinstance(artifacts, s3.Bucket):
            cfn = artifacts.node.default_child
            assert isinstance(cfn, s3.CfnBucket)
            cfn.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
                destination_bucket_name=access_logs.bucket_name, log_file_prefix="artifacts/"
            )
        pipeline = TrainingPipeline(
            self, "Pipeline", estimator=estimator, endpoint_name="chainer-digits"
        )
        _acknowledge(access_logs, data, artifacts)

        CfnOutput(self, "StateMachineArn", value=pipeline.state_machine_arn)
        CfnOutput(self, "EndpointName", value=pipeline.endpoint_name)
        CfnOutput(self, "ModelDataPrefix", value=estimator.output_s3_url)
        CfnOutput(self, "DataBucket", value=data.bucket_name)


def _acknowledge(access_logs: s3.IBucket, *buckets: s3.IBucket) -> None:
    """This example's deployment decisions (not the library's)."""
    replication = (
        "Single-region example: versioned and retained; cross-region replication is a choice "
        "for the deploying account."
    )
    sse_s3 = "The access-log bucket: S3 server access logging delivers only to SSE-S3 buckets."
    for bucket in (access_logs, *buckets):
        Validations.of(bucket).acknowledge(
            *[
                Acknowledgment(id=f"{pack}-S3BucketReplicationEnabled", reason=replication)
                for pack in ("HIPAA.Security", "NIST.800.53.R5")
            ]
        )
    Validations.of(access_logs).acknowledge(
        *[
            Acknowledgment(id=f"{pack}-S3DefaultEncryptionKMS", reason=sse_s3)
            for pack in ("HIPAA.Security", "NIST.800.53.R5")
        ]
    )


def build_app(app: App | None = None) -> App:
    app = app or App()
    if app.node.try_get_context("nag"):
        # `cdk synth -c nag=1`: fail the synth on any unacknowledged compliance finding.
        from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

        Validations.of(app).add_plugins(
            AwsSolutionsChecks(app), HIPAASecurityChecks(app), NIST80053R5Checks(app)
        )
    DigitsStack(app, "ChainerDigits")
    return app


if __name__ == "__main__":
    build_app().synth()

"""A stack that sets every prop of every construct (the maximal configuration)."""

from __future__ import annotations

import logging
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from chainer_sagemaker_cdk import (
    ChainerEndpoint,
    ChainerEstimator,
    ChainerModel,
    Compression,
    DataCapture,
    DataDistribution,
    EndpointVariant,
    InputMode,
    ModelData,
    RuntimeImage,
    SourceCode,
    TrainingInput,
    TrainingPipeline,
)


class MaximalStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, code_dir: Path) -> None:
        super().__init__(scope, id)
        key = kms.Key(self, "Key", enable_key_rotation=True)
        logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
        )
        data = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            server_access_logs_bucket=logs_bucket,
        )
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id="vpc-12345678",
            availability_zones=["us-east-1a", "us-east-1b"],
            private_subnet_ids=["subnet-aaaa1111", "subnet-bbbb2222"],
            private_subnet_route_table_ids=["rtb-aaaa1111", "rtb-bbbb2222"],
        )
        repository = ecr.Repository.from_repository_name(self, "Repo", "chainer-runtime")
        code = SourceCode.from_directory(code_dir, "train.py")
        self.estimator = ChainerEstimator(
            self,
            "Estimator",
            code=code,
            instance_type="p3.8xlarge",
            instance_count=2,
            hyperparameters={
                "epochs": 3,
                "lr": 0.01,
                "optimizer": "adam",
                "layers": [64, 32],
                "verbose": True,
            },
            channels={
                "train": TrainingInput(
                    bucket=data,
                    key_prefix="train/",
                    content_type="application/x-npy",
                    distribution=DataDistribution.SHARDED_BY_S3_KEY,
                    compression=Compression.GZIP,
                    input_mode=InputMode.PIPE,
                ),
                "test": TrainingInput(bucket=data, key_prefix="test"),
                # 20 channels with the code channel of network isolation, the most
                # SageMaker takes: the policies must stay within IAM's size limits.
                **{
                    f"shard{i:02d}": TrainingInput(bucket=data, key_prefix=f"shards/{i:02d}")
                    for i in range(17)
                },
            },
            input_mode=InputMode.FAST_FILE,
            image=RuntimeImage.from_ecr_repository(repository, "7.8.1-gpu"),
            output_bucket=data,
            output_prefix="artifacts",
            output_kms_key=key,
            volume_size=cdk.Size.gibibytes(100),
            volume_kms_key=key,
            max_run=cdk.Duration.hours(4),
            use_spot_instances=True,
            max_wait=cdk.Duration.hours(8),
            checkpoint_bucket=data,
            checkpoint_prefix="ckpt",
            checkpoint_local_path="/opt/ml/checkpoints/run",
            base_job_name="maximal",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            encrypt_inter_container_traffic=True,
            enable_network_isolation=True,
            metric_definitions={"train:loss": r"main/loss\s+([0-9.]+)"},
            environment={"NCCL_DEBUG": "WARN"},
            tags={"team": "ml"},
            container_log_level=logging.DEBUG,
            use_mpi=True,
            num_processes=8,
            process_slots_per_host=4,
            additional_mpi_options="-x NCCL_ALGO=Ring",
            max_retry_attempts=2,
        )
        for i in range(5):  # channels overridden per execution
            self.estimator.grant_read_input(data, f"overrides/v{i}")
        self.pipeline = TrainingPipeline(
            self,
            "Pipeline",
            estimator=self.estimator,
            endpoint_name="maximal-endpoint",
            endpoint_instance_type="ml.c5.xlarge",
            endpoint_instance_count=2,
            endpoint_kms_key=key,
            model_server_workers=2,
            model_environment_variables={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "120"},
            poll_interval=cdk.Duration.seconds(60),
            state_machine_name="maximal-pipeline",
            timeout=cdk.Duration.hours(12),
            log_retention=logs.RetentionDays.TWO_YEARS,
            logs_kms_key=None,
        )
        for task in self.pipeline.tasks:
            task.add_retry(errors=["SageMaker.AmazonSageMakerException"], max_attempts=3)
        model_a = ChainerModel(
            self,
            "ModelA",
            model_data=ModelData.from_directory(code_dir),
            code=code,
            instance_type="ml.c5.large",
            image=RuntimeImage.official("5.0", "py3"),
            environment={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "30"},
            model_server_workers=1,
            container_log_level=logging.WARNING,
            model_name="maximal-model-a",
            vpc=vpc,
            enable_network_isolation=True,
        )
        model_a.grant_key(key)
        model_b = ChainerModel(
            self,
            "ModelB",
            model_data=ModelData.from_s3_url(f"s3://{data.bucket_name}/b/model.tar.gz"),
            code=code,
            image=RuntimeImage.from_registry(
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:cpu"
            ),
        )
        self.endpoint = ChainerEndpoint(
            self,
            "Endpoint",
            variants=[
                EndpointVariant(model=model_a, initial_instance_count=2, initial_weight=3),
                EndpointVariant(
                    model=model_b, variant_name="Candidate", instance_type="ml.m5.large"
                ),
            ],
            kms_key=key,
            data_capture=DataCapture(
                bucket=data,
                prefix="capture",
                sampling_percentage=20,
                capture_output=False,
                kms_key=key,
            ),
            endpoint_name="maximal-endpoint-l2",
        )
        self.endpoint.scale_on_invocations(
            min_capacity=2, max_capacity=6, invocations_per_instance=300
        )
        client = iam.Role(self, "Client", assumed_by=iam.AccountRootPrincipal())
        self.endpoint.grant_invoke(client)
        self.pipeline.grant_start_execution(client)
        _acknowledge_stack_choices(client, logs_bucket, data)


def _acknowledge_stack_choices(client: iam.Role, logs_bucket: s3.Bucket, data: s3.Bucket) -> None:
    """This test stack's own resources (not the library's): the same choices as app.py."""

    def ack(scope: Construct, finding: str, reason: str) -> None:
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))

    for pack in ("HIPAA.Security", "NIST.800.53.R5"):
        ack(
            client,
            f"{pack}-IAMNoInlinePolicy",
            "The caller's own role: how it holds its grants is the caller's choice.",
        )
        ack(
            logs_bucket,
            f"{pack}-S3DefaultEncryptionKMS",
            "Access-log bucket: S3 server access logging delivers only to SSE-S3 buckets.",
        )
        for bucket in (logs_bucket, data):
            ack(
                bucket,
                f"{pack}-S3BucketReplicationEnabled",
                "Single-region test stack: versioned; replication is the account's choice.",
            )

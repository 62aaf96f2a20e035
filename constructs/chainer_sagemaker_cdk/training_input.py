"""Training channels: an S3 prefix plus how SageMaker feeds it to the container."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_s3 as s3

from ._validation import is_unresolved, require

__all__ = [
    "Compression",
    "DataDistribution",
    "InputMode",
    "RecordWrapper",
    "TrainingInput",
    "validate_channel_name",
]

_CHANNEL = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")


class InputMode(enum.Enum):
    """How channels reach the container (``TrainingInputMode``)."""

    FILE = "File"
    PIPE = "Pipe"
    FAST_FILE = "FastFile"


class DataDistribution(enum.Enum):
    """``S3DataDistributionType``: every host gets all data, or a shard by S3 key."""

    FULLY_REPLICATED = "FullyReplicated"
    SHARDED_BY_S3_KEY = "ShardedByS3Key"


class Compression(enum.Enum):
    """``CompressionType`` of the channel's objects (Pipe mode)."""

    NONE = "None"
    GZIP = "Gzip"


class RecordWrapper(enum.Enum):
    """``RecordWrapperType``: RecordIO wraps each object in one RecordIO record (Pipe mode)."""

    NONE = "None"
    RECORD_IO = "RecordIO"


@dataclass(frozen=True, kw_only=True)
class TrainingInput:
    """One channel: the objects under ``key_prefix`` in ``bucket``.

    :param bucket: the bucket; the execution role may list and read ``key_prefix`` only.
    :param key_prefix: the prefix; left out, the whole bucket.
    :param content_type: MIME type passed to the container; left out, not sent.
    :param distribution: left out, ``FULLY_REPLICATED``.
    :param compression: left out, not sent (SageMaker assumes uncompressed).
    :param input_mode: this channel's mode; left out, the estimator's ``input_mode``.
    :param record_wrapper: ``RECORD_IO`` to get each object as one RecordIO record (for
        scripts that read RecordIO from a pipe); left out, not sent (objects as they are).
    """

    bucket: s3.IBucket
    key_prefix: str = ""
    content_type: str | None = None
    distribution: DataDistribution = DataDistribution.FULLY_REPLICATED
    compression: Compression | None = None
    input_mode: InputMode | None = None
    record_wrapper: RecordWrapper | None = None

    @property
    def s3_uri(self) -> str:
        """``s3://bucket/prefix``."""
        return self.bucket.s3_url_for_object(self.key_prefix.strip("/") or None)

    def describe(self, s3_uri: str | None = None) -> dict[str, Any]:
        """This channel's settings, for local mode (None where left out)."""
        return {
            "s3Uri": s3_uri or self.s3_uri,
            "inputMode": self.input_mode.value if self.input_mode else None,
            "distribution": self.distribution.value,
            "contentType": self.content_type,
            "compression": self.compression.value if self.compression else None,
            "recordWrapperType": self.record_wrapper.value if self.record_wrapper else None,
        }

    def render(self, name: str, s3_uri: str | None = None) -> dict[str, Any]:
        """The ``InputDataConfig`` entry for channel ``name``."""
        channel: dict[str, Any] = {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": s3_uri or self.s3_uri,
                    "S3DataDistributionType": self.distribution.value,
                }
            },
        }
        if self.content_type:
            channel["ContentType"] = self.content_type
        if self.compression is not None:
            channel["CompressionType"] = self.compression.value
        if self.input_mode is not None:
            channel["InputMode"] = self.input_mode.value
        if self.record_wrapper is not None:
            channel["RecordWrapperType"] = self.record_wrapper.value
        return channel


def validate_channel_name(name: str) -> None:
    require(
        is_unresolved(name) or bool(_CHANNEL.match(name)),
        "channels",
        name,
        "name channels with 1-64 letters, digits, '.', '-' or '_' (e.g. train)",
    )

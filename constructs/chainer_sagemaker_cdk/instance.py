"""SageMaker instance types: one spelling (``ml.<family>.<size>``) and GPU counts."""

from __future__ import annotations

import re

from ._validation import is_unresolved, require

__all__ = [
    "gpu_count",
    "has_instance_storage",
    "is_arm_instance",
    "is_gpu_instance",
    "normalize_instance_type",
]

_PATTERN = re.compile(r"^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$")

# GPUs per instance for the common ml.* GPU families (sizes not listed have one GPU).
_GPUS: dict[str, dict[str, int]] = {
    "p2": {"xlarge": 1, "8xlarge": 8, "16xlarge": 16},
    "p3": {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8},
    "p3dn": {"24xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8},
    "p5": {"48xlarge": 8},
    "p5e": {"48xlarge": 8},
    "p5en": {"48xlarge": 8},
    "g4dn": {"12xlarge": 4, "metal": 8},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "p6-b200": {"48xlarge": 8},
    "p6e-gb200": {"36xlarge": 4},
}


def normalize_instance_type(value: str, prop: str = "instance_type") -> str:
    """``ml.p3.2xlarge`` and ``p3.2xlarge`` both become ``ml.p3.2xlarge`` (never ``ml.ml.``)."""
    if is_unresolved(value):
        return value
    text = value.strip().lower()
    if not text.startswith("ml."):
        text = f"ml.{text}"
    require(
        bool(_PATTERN.match(text)),
        prop,
        value,
        "give a SageMaker instance type such as ml.m5.xlarge or ml.p3.2xlarge",
    )
    return text


def _family_and_size(instance_type: str) -> tuple[str, str]:
    _, family, size = normalize_instance_type(instance_type).split(".")
    return family, size


def is_gpu_instance(instance_type: str) -> bool:
    """GPU families start with ``g`` or ``p`` (docs/contract.md §1.8); tokens count as CPU."""
    if is_unresolved(instance_type):
        return False
    family, _ = _family_and_size(instance_type)
    return family[0] in "gp"


def gpu_count(instance_type: str) -> int:
    """GPUs on one instance of ``instance_type``; 0 for CPU instances."""
    if not is_gpu_instance(instance_type):
        return 0
    family, size = _family_and_size(instance_type)
    return _GPUS.get(family, {}).get(size, 1)


# Families whose instances come with local NVMe instance store volumes, which SageMaker
# encrypts with a hardware module: it rejects a VolumeKmsKeyId (training) and a KmsKeyId
# (endpoint configs) for them. From AWS's lists of instance storage volumes for training
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html, "Instance
# Store Volumes") and hosting (https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html),
# and EC2's instance-store table for the families: besides these, every "*d", "*dn", "*gd"
# family (m5d, c5d, r5d, m6id, c6gd, x2iedn, ...).
_NVME_FAMILIES = frozenset(
    {
        "g4dn",
        "g4ad",
        "g5",
        "g6",
        "g6e",
        "gr6",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",
        "p6-b200",
        "p6e-gb200",
        "trn1",
        "trn1n",
        "trn2",
        "dl1",
    }
)
_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*$")


def has_instance_storage(instance_type: str) -> bool:
    """Types with local NVMe storage, where SageMaker rejects ``VolumeKmsKeyId``/``KmsKeyId``."""
    if is_unresolved(instance_type):
        return False
    family, _ = _family_and_size(instance_type)
    return family in _NVME_FAMILIES or family.endswith("d") or "dn" in family


def is_arm_instance(instance_type: str) -> bool:
    """AWS Graviton (arm64) types: ``ml.c6g``, ``ml.m7g``, ``ml.r8g``, ``ml.c6gn``, ``ml.g5g``..."""
    if is_unresolved(instance_type):
        return False
    family, _ = _family_and_size(instance_type)
    return bool(_GRAVITON.match(family))

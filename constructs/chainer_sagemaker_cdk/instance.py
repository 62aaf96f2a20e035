"""SageMaker instance types: one spelling (``ml.<family>.<size>``) and GPU counts."""

from __future__ import annotations

import re

from ._validation import is_unresolved, require

__all__ = ["gpu_count", "has_instance_storage", "is_gpu_instance", "normalize_instance_type"]

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
    """GPU families start with ``g`` or ``p`` (CONTRACT.md §1.8); tokens count as CPU."""
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


def has_instance_storage(instance_type: str) -> bool:
    """Families with local NVMe storage, where SageMaker rejects an endpoint ``KmsKeyId``."""
    if is_unresolved(instance_type):
        return False
    family, _ = _family_and_size(instance_type)
    return (
        family.endswith("d")
        or "dn" in family
        or family in {"g5", "g6", "g6e", "g4ad", "p5", "p5e", "p5en"}
    )

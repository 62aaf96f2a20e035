"""The slice of ``pkg_resources`` that Chainer 7.8.1 uses, built on ``importlib.metadata``.

Only installed (as ``sys.modules["pkg_resources"]``) when setuptools no longer provides the
real module; see :mod:`chainer_sagemaker_runtime._compat_hook`.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = [
    "DistributionNotFound",
    "ResolutionError",
    "VersionConflict",
    "WorkingSet",
    "get_distribution",
    "require",
]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


class ResolutionError(Exception):
    """A requirement could not be satisfied."""


class DistributionNotFound(ResolutionError):
    """No distribution of that name is installed."""


class VersionConflict(ResolutionError):
    """A distribution is installed, but not in a version the requirement accepts."""


class Distribution:
    def __init__(self, project_name: str, version: str) -> None:
        self.project_name = project_name
        self.version = version

    def __repr__(self) -> str:
        return f"{self.project_name} {self.version}"


def get_distribution(name: str) -> Distribution:
    try:
        return Distribution(name, metadata.version(name))
    except metadata.PackageNotFoundError as exc:
        raise DistributionNotFound(name) from exc


def require(requirement: str) -> list[Distribution]:
    match = _NAME.match(requirement)
    if match is None:
        raise ResolutionError(f"cannot parse requirement {requirement!r}")
    name, spec = match.group(1), match.group(2).strip()
    dist = get_distribution(name)
    if spec and not _satisfies(dist.version, spec):
        raise VersionConflict(dist, requirement)
    return [dist]


def _satisfies(version: str, spec: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # without packaging we cannot judge; do not invent a conflict
        return True
    return SpecifierSet(spec).contains(version, prereleases=True)


class WorkingSet:
    def require(self, requirement: str) -> list[Distribution]:
        return require(requirement)

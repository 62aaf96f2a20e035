"""Snapshots of normalized templates: construct IDs are API, and changes must be visible.

Regenerate with ``UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/infra/test_cdk_snapshots.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

SNAPSHOTS = Path(__file__).parent / "snapshots"
_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def normalize(template: dict[str, Any]) -> dict[str, Any]:
    """Asset hashes replaced, CDK's version-specific metadata removed."""
    data = json.loads(_HASH.sub("<ASSET_HASH>", json.dumps(template)))
    data.get("Resources", {}).pop("CDKMetadata", None)
    conditions = data.get("Conditions", {})
    conditions.pop("CDKMetadataAvailable", None)
    if not conditions:
        data.pop("Conditions", None)
    return data  # type: ignore[no-any-return]


def _check(name: str, template: dict[str, Any]) -> None:
    path = SNAPSHOTS / f"{name}.json"
    current = json.dumps(normalize(template), indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(current)
    assert path.is_file(), f"no snapshot {path}: run with UPDATE_SNAPSHOTS=1"
    assert json.loads(current) == json.loads(path.read_text()), (
        f"{name} changed; review the diff, then UPDATE_SNAPSHOTS=1"
    )


def test_example_stack_snapshot(example_template: dict[str, Any]) -> None:
    _check("ChainerDigits", example_template)


def test_maximal_stack_snapshot(maximal_template: dict[str, Any]) -> None:
    _check("ChainerMaximal", maximal_template)


@pytest.mark.parametrize("name", ["ChainerDigits", "ChainerMaximal"])
def test_snapshots_hold_no_unnormalized_hash(name: str) -> None:
    assert not _HASH.search((SNAPSHOTS / f"{name}.json").read_text())

"""Fixtures of the batch transform tests: the infra tests' stacks pieces and the local tests'
trained digits model (imported, so one definition serves both folders)."""

from __future__ import annotations

from infra.conftest import code, code_dir, registry_image  # noqa: F401
from local.conftest import digits_dir, test_images, trained_model  # noqa: F401

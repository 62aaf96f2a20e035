"""Errors the runtime reports to the user; each message names the problem and the fix."""

from __future__ import annotations

__all__ = ["CodeError", "ConfigError", "RuntimeFailure", "UserCodeError"]


class RuntimeFailure(Exception):
    """Base class: a failure the `train`/`serve` commands report instead of a traceback.

    ``exit_code`` is what the command exits with.
    """

    exit_code = 1


class ConfigError(RuntimeFailure):
    """The platform's configuration (files under ``input/config``, environment variables) is bad.

    Carries every problem found, not just the first.
    """

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class CodeError(RuntimeFailure):
    """The user's code could not be fetched, unpacked or its requirements installed."""


class UserCodeError(RuntimeFailure):
    """The user's command ran and failed; ``exit_code`` is the child's (or 128 + signal)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

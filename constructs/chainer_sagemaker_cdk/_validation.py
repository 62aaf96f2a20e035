"""Validation errors in the user's words: the prop, the bad value and the fix."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from aws_cdk import Stack, Token
from constructs import IConstruct

__all__ = ["ChainerValidationError", "is_unresolved", "require", "stack_of"]


class ChainerValidationError(ValueError):
    """A prop has a value the construct cannot use; the message names the prop and the fix."""

    def __init__(self, prop: str, value: Any, fix: str) -> None:
        self.prop = prop
        self.value = value
        self.fix = fix
        super().__init__(f"{prop}={value!r} is not valid: {fix}")


# CDK's encoding of a string token (``${Token[AWS.Region.10]}``) and of a list element
# (``#{Token[TOKEN.26]}``): a display hint, a dot and the token's number.
_STRING_TOKEN = re.compile(r"[$#]\{Token\[[^\]\s]+\.\d+\]\}")


def is_unresolved(value: Any) -> bool:
    """True for CDK tokens (deploy-time values) that cannot be checked at synth time.

    Decided here, without a round trip to the CDK kernel (each costs about as much as
    creating a construct, and props are checked by the dozen): a string is a token when it
    holds CDK's token encoding; a number token is a double near -1.888e289 (confirmed with
    the kernel, as such numbers are rare).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    if isinstance(value, str):
        return "{Token[" in value and _STRING_TOKEN.search(value) is not None
    return abs(value) > 1e288 and Token.is_unresolved(value)


def require(condition: bool, prop: str, value: Any, fix: str) -> None:
    """Raise :class:`ChainerValidationError` unless ``condition`` holds."""
    if not condition:
        raise ChainerValidationError(prop, value, fix)


def stack_of(scope: IConstruct) -> Stack:
    """``Stack.of(scope)``, remembered on the scope (each lookup is a round trip to the kernel)."""
    cached = getattr(scope, "_chainer_sagemaker_stack", None)
    if isinstance(cached, Stack):
        return cached
    stack = Stack.of(scope)
    with contextlib.suppress(AttributeError):  # objects that refuse attributes
        scope._chainer_sagemaker_stack = stack  # type: ignore[attr-defined]
    return stack

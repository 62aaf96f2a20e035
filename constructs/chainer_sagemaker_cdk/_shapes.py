"""SageMaker API requests checked at synth against botocore's service model.

botocore ships SageMaker's API model (member names, types, length and value ranges, list and
map sizes): a request that breaks one of them is refused at synth with the path of the field,
rather than by SageMaker at run time. botocore's own ``ParamValidator`` checks types and minimums
only (never maximums) and rejects CDK tokens, so this walks the shapes itself; deploy-time
values (tokens) are skipped. Patterns are not checked (they use ``\\p{..}`` classes Python's
``re`` lacks).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from ._validation import ChainerValidationError, is_unresolved

__all__ = ["deep_merge", "operation_input", "validate_request"]


@functools.cache
def _model() -> Any:
    import botocore.session  # a moment to load: only when a construct checks a request

    return botocore.session.get_session().get_service_model("sagemaker")


def operation_input(operation: str) -> Any:
    """The input shape of a SageMaker operation (e.g. ``CreateTrainingJob``)."""
    return _model().operation_model(operation).input_shape


def _fail(path: str, value: Any, fix: str, prop_of: Callable[[str], str]) -> None:
    raise ChainerValidationError(prop_of(path), {path: value}, fix)


def _check(shape: Any, value: Any, path: str, prop_of: Callable[[str], str]) -> None:
    if value is None or is_unresolved(value):
        return
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, Mapping):
            _fail(path, value, f"give an object ({shape.name})", prop_of)
        for name, member in value.items():
            if name not in shape.members:
                known = ", ".join(sorted(shape.members))
                _fail(f"{path}.{name}".lstrip("."), member, f"use one of {known}", prop_of)
            _check(shape.members[name], member, f"{path}.{name}".lstrip("."), prop_of)
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            _fail(path, value, "give a list", prop_of)
        _range(len(value), meta, path, f"{len(value)} entries", "entries", prop_of)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", prop_of)
        return
    if kind == "map":
        if not isinstance(value, Mapping):
            _fail(path, value, "give an object", prop_of)
        _range(len(value), meta, path, f"{len(value)} entries", "entries", prop_of)
        for key, item in value.items():
            _check(shape.key, key, f"{path} key {key!r}"[:300], prop_of)
            _check(shape.value, item, f"{path}.{key}", prop_of)
        return
    if kind == "string":
        if not isinstance(value, str):
            _fail(path, value, "give a string", prop_of)
        _range(len(value), meta, path, _short(value), "characters", prop_of)
        enum = meta.get("enum")
        if enum and value not in enum:
            _fail(path, value, f"use one of {', '.join(enum)}", prop_of)
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "give a whole number", prop_of)
        _range(value, meta, path, value, "", prop_of)
        return
    if kind == "boolean" and not isinstance(value, bool):
        _fail(path, value, "give True or False", prop_of)


def _short(value: str) -> str:
    return value if len(value) <= 60 else f"{value[:40]}... ({len(value)} characters)"


def _range(
    amount: float, meta: Mapping[str, Any], path: str, shown: Any, unit: str, prop_of: Any
) -> None:
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and amount < low) or (high is not None and amount > high):
        bounds = f"{low if low is not None else 0} to {high}" if high is not None else f">= {low}"
        _fail(path, shown, f"SageMaker takes {bounds} {unit}".rstrip(), prop_of)


def validate_request(
    operation: str, request: Mapping[str, Any], prop_of: Callable[[str], str]
) -> None:
    """Raise :class:`ChainerValidationError` for the first field outside SageMaker's model.

    ``prop_of`` maps a field path (``HyperParameters.lr``) to the prop the user set.
    """
    _check(operation_input(operation), request, "", prop_of)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: objects merge key by key, a None value removes the key, lists
    and other values replace."""
    out = dict(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

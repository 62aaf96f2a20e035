"""A small evaluator for the JSONPath parts of Amazon States Language the pipeline uses
(Parameters with ``.$`` keys, ResultPath, ResultSelector, and the intrinsics States.Format,
States.UUID, States.JsonMerge, States.JsonToString), to run the prepare states on sample input."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^']+)'\]")


def path_get(data: Any, path: str) -> Any:
    assert path.startswith("$"), path
    value = data
    rest = path[1:]
    position = 0
    while position < len(rest):
        match = _SEGMENT.match(rest, position)
        assert match, f"unsupported path {path}"
        key = match.group(1) or match.group(2)
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"States.Runtime: {path} not found")
        value = value[key]
        position = match.end()
    return value


def path_set(data: Any, path: str, value: Any) -> Any:
    if path == "$":
        return value
    result = copy.deepcopy(data)
    target = result
    keys = [m.group(1) or m.group(2) for m in _SEGMENT.finditer(path[1:])]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return result


def _split_args(text: str) -> list[str]:
    args, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'" and depth == 0:
            quoted = not quoted
        if not quoted and char == "(":
            depth += 1
        if not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            args.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        args.append(current.strip())
    return args


def evaluate(expression: str, data: Any) -> Any:
    expression = expression.strip()
    if expression.startswith("$"):
        return path_get(data, expression)
    if expression.startswith("'"):
        return expression[1:-1]
    if expression == "false":
        return False
    name, _, inner = expression.partition("(")
    args = [evaluate(a, data) for a in _split_args(inner[:-1])]
    if name == "States.UUID":
        return str(uuid.uuid4())
    if name == "States.Format":
        template, *values = args
        for value in values:
            template = template.replace("{}", str(value), 1)
        return template
    if name == "States.JsonMerge":
        first, second, deep = args
        assert deep is False
        return {**first, **second}
    if name == "States.JsonToString":
        return json.dumps(args[0], separators=(",", ":"))
    raise AssertionError(f"unsupported intrinsic {name}")


def render(template: Any, data: Any) -> Any:
    """Parameters / ResultSelector: keys ending in ``.$`` are evaluated against ``data``."""
    if isinstance(template, list):
        return [render(item, data) for item in template]
    if not isinstance(template, dict):
        return template
    out: dict[str, Any] = {}
    for key, value in template.items():
        if key.endswith(".$"):
            out[key[:-2]] = evaluate(value, data)
        else:
            out[key] = render(value, data)
    return out


def run_pass(state: dict[str, Any], data: Any) -> Any:
    result = render(state["Parameters"], data) if "Parameters" in state else data
    return path_set(data, state.get("ResultPath", "$"), result)


def _matches(rule: dict[str, Any], data: Any) -> bool:
    if "And" in rule:
        return all(_matches(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(_matches(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not _matches(rule["Not"], data)
    try:
        value = path_get(data, rule["Variable"])
    except KeyError:
        return "IsPresent" in rule and rule["IsPresent"] is False
    if "IsPresent" in rule:
        return bool(rule["IsPresent"])
    if "StringEquals" in rule:
        return bool(value == rule["StringEquals"])
    if "StringEqualsPath" in rule:
        return bool(value == path_get(data, rule["StringEqualsPath"]))
    raise AssertionError(f"unsupported rule {rule}")


def choose(state: dict[str, Any], data: Any) -> str:
    """The Next of the first matching Choice rule, else the Default."""
    for rule in state["Choices"]:
        if _matches(rule, data):
            return str(rule["Next"])
    return str(state["Default"])

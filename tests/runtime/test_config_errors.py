"""Every user mistake is a configuration error: exit code 2, the value and the fix named,
found before the code is fetched or pip runs (docs/contract.md §1.7).

Each job points ``sagemaker_submit_directory`` at a path that does not exist: had ``train``
fetched the code first, the failure would say so (exit code 1) instead of naming the mistake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jobtree import JobTree

from chainer_sagemaker_runtime.environment import (
    MAX_ARG_STRLEN,
    TrainingEnv,
    exec_limit_problems,
    json_depth,
)

NOWHERE = "/nonexistent/sourcedir.tar.gz"


class Raw(str):
    """A hyperparameter written to hyperparameters.json as it is, not JSON-encoded first."""


# CreateTrainingJob allows 100 hyperparameters of up to 2500 characters each.
BIG = {f"hp{i:02d}": "v" * 2490 for i in range(60)}

# (id, hyperparameters, hosts, extra environment, what the failure must say)
MISTAKES: list[tuple[str, dict[str, Any], list[str] | None, dict[str, str], list[str]]] = [
    (
        "name-with-equals",
        {"lr=0.1": 1},
        None,
        {},
        ["hyperparameter name 'lr=0.1' contains '='", "rename it (for example 'lr_0.1')"],
    ),
    (
        "empty-name",
        {"": "x", "epochs": 3},
        None,
        {},
        ["a hyperparameter has an empty name ''", "swallows every later hyperparameter"],
    ),
    (
        "too-big-for-one-environment-string",
        BIG,
        None,
        {},
        [
            "SM_HPS (150",
            "SM_TRAINING_ENV (",
            "(MAX_ARG_STRLEN): shorten the largest hyperparameters by",
            "'hp59' (2490 bytes)",
        ],
    ),
    (
        "json-100000-deep",
        {"deep": Raw("[" * 100_000 + "]" * 100_000)},  # as boto3 callers may send it
        None,
        {},
        ["hyperparameter 'deep': its JSON value nests deeper than 100 levels", "flatten it"],
    ),
    (
        "nul-in-a-value",
        {"note": "a\0b"},
        None,
        {},
        ["hyperparameter 'note' contains a NUL character", "remove it"],
    ),
    (
        "duplicate-hosts",
        {},
        ["algo-1", "algo-1"],
        {},
        ["'hosts' names algo-1 more than once", "exactly once"],
    ),
    (
        "mpi-without-mpirun",
        {"sagemaker_use_mpi": True},
        None,
        {"PATH": "/nonexistent-bin"},
        ["MPI is on (sagemaker_use_mpi=True) but mpirun is not on PATH", "sagemaker_use_mpi"],
    ),
    (
        "bad-archive-limit",
        {},
        None,
        {"CHAINER_SAGEMAKER_MAX_ARCHIVE_BYTES": "lots"},
        ["CHAINER_SAGEMAKER_MAX_ARCHIVE_BYTES='lots' is not valid"],
    ),
]


@pytest.mark.parametrize(
    ("hps", "hosts", "environ", "says"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_user_mistake_fails_the_job_as_configuration_before_fetching_code(
    job: JobTree,
    hps: dict[str, Any],
    hosts: list[str] | None,
    environ: dict[str, str],
    says: list[str],
) -> None:
    job.configure(
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": NOWHERE, **hps},
        hosts=hosts,
    )
    hps_file = job.base / "input" / "config" / "hyperparameters.json"
    written = json.loads(hps_file.read_text())
    written.update({k: str(v) for k, v in hps.items() if isinstance(v, Raw)})
    hps_file.write_text(json.dumps(written))
    result = job.train(**environ)
    assert result.returncode == 2, result.stderr[-3000:]
    failure = job.failure()
    for text in says:
        assert text in failure
    assert "does not exist" not in failure  # the code was never looked for
    assert "internal error" not in failure
    assert len(failure.encode()) <= 1025


def test_a_missing_entry_point_is_found_before_fetching_code(job: JobTree) -> None:
    job.configure({"sagemaker_submit_directory": NOWHERE})
    assert job.train().returncode == 2
    assert "no entry point: set the hyperparameter sagemaker_program" in job.failure()


def test_every_mistake_is_reported_at_once(job: JobTree) -> None:
    job.configure({"a=b": 1, "": 2}, hosts=["algo-1", "algo-1"])
    problems = _problems(job)
    assert len(problems) == 3, problems


def _problems(job: JobTree) -> list[str]:
    from chainer_sagemaker_runtime.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        TrainingEnv.load(job.env(), num_gpus=0)
    return caught.value.problems


def test_only_the_largest_hyperparameters_are_named() -> None:
    hps = {"small": "s", "huge": "h" * MAX_ARG_STRLEN, "medium": "m" * 1000}
    problems = exec_limit_problems({"SM_HPS": json.dumps(hps)}, [], hps)
    assert len(problems) == 1
    assert "shorten the largest hyperparameters by" in problems[0]
    assert f"'huge' ({MAX_ARG_STRLEN} bytes)" in problems[0]
    assert "'small'" not in problems[0]


def test_an_oversized_variable_of_the_image_is_named_as_such() -> None:
    problems = exec_limit_problems({"BIG": "x" * MAX_ARG_STRLEN, "SM_HPS": "{}"}, [], {"a": 1})
    assert problems == [
        f"the environment variable BIG ({MAX_ARG_STRLEN + 5} bytes) exceeds Linux's limit of "
        f"{MAX_ARG_STRLEN} bytes for one variable (MAX_ARG_STRLEN); shorten it in the image or "
        "the job's Environment"
    ]


def test_api_sized_hyperparameters_under_the_limit_pass(job: JobTree) -> None:
    small = {f"hp{i:02d}": "v" * 2490 for i in range(40)}  # ~100 KB: fits
    job.configure({"sagemaker_program": "train.py", **small})
    env = TrainingEnv.load(job.env(), num_gpus=0)
    assert env.launch_problems() == []


def test_depth_is_measured_without_recursion() -> None:
    deep: Any = 0
    for _ in range(50_000):
        deep = [deep]
    assert json_depth(deep) == 50_000
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth("x") == 0


def test_a_deeply_nested_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    job = JobTree(tmp_path / "ml")
    cfg = job.base / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert any("nested too deeply" in p for p in _problems(job))

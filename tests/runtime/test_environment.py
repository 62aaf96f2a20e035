"""SM_* variables and argv for every kind of hyperparameter (docs/contract.md §1.3-§1.5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jobtree import JobTree

from chainer_sagemaker_runtime.environment import (
    TrainingEnv,
    decode_hyperparameters,
    env_value,
    render_argv,
    split_reserved,
)
from chainer_sagemaker_runtime.errors import ConfigError

# (name, value the user gave the SDK, decoded value, SM_HP_ value, argv)
HYPERPARAMETERS: list[tuple[str, Any, Any, str, list[str]]] = [
    ("optimizer", "adam", "adam", "adam", ["--optimizer", "adam"]),
    ("epochs", 10, 10, "10", ["--epochs", "10"]),
    ("learning-rate", 0.01, 0.01, "0.01", ["--learning-rate", "0.01"]),
    ("use_bn", True, True, "true", ["--use_bn", "True"]),
    ("shuffle", False, False, "false", ["--shuffle", "False"]),
    ("layers", [1, 2, 3], [1, 2, 3], "[1,2,3]", ["--layers", "[1, 2, 3]"]),
    ("opts", {"b": "x", "a": 1}, {"a": 1, "b": "x"}, '{"a":1,"b":"x"}', ["--opts", "a=1,b=x"]),
    ("nothing", None, None, "", ["--nothing", ""]),
    ("k", 3, 3, "3", ["-k", "3"]),
]


@pytest.mark.parametrize(("name", "given", "decoded", "sm_hp", "argv"), HYPERPARAMETERS)
def test_each_json_type_decodes_renders_and_exports(
    job: JobTree, name: str, given: Any, decoded: Any, sm_hp: str, argv: list[str]
) -> None:
    job.configure({name: given, "sagemaker_program": "train.py"})
    env = TrainingEnv.load(job.env(), num_gpus=0)
    assert env.hyperparameters == {name: decoded}
    assert env.user_args() == argv
    variables = env.to_env_vars()
    assert variables[f"SM_HP_{name.upper()}"] == sm_hp
    assert json.loads(variables["SM_HPS"]) == {name: decoded}
    assert json.loads(variables["SM_USER_ARGS"]) == argv


def test_a_value_that_is_not_json_is_kept_as_the_raw_string() -> None:
    assert decode_hyperparameters({"a": "not json {", "b": '"quoted"', "c": "1e-3"}) == {
        "a": "not json {",
        "b": "quoted",
        "c": 0.001,
    }


def test_reserved_keys_are_split_from_the_user_hyperparameters() -> None:
    user, reserved = split_reserved(
        {"sagemaker_program": "t.py", "_tuning_objective_metric": "acc", "sagemaker_x": 1, "lr": 1}
    )
    assert user == {"lr": 1}
    assert set(reserved) == {"sagemaker_program", "_tuning_objective_metric", "sagemaker_x"}


def test_argv_keys_are_sorted_and_each_value_is_one_element() -> None:
    assert render_argv({"z": "a b", "a": "--x y"}) == ["-a", "--x y", "-z", "a b"]


@pytest.mark.parametrize(
    ("value", "rendered"),
    [("s", "s"), (None, ""), (1, "1"), (True, "true"), ({"b": 1, "a": [1]}, '{"a":[1],"b":1}')],
)
def test_env_value_format(value: Any, rendered: str) -> None:
    assert env_value(value) == rendered


TRAINING_ENV_KEYS = """
    additional_framework_parameters channel_input_dirs current_host framework_module hosts
    hyperparameters input_config_dir input_data_config input_dir is_master job_name log_level
    master_hostname model_dir module_dir module_name network_interface_name num_cpus num_gpus
    output_data_dir output_dir output_intermediate_dir resource_config user_entry_point
"""


def test_multi_host_worker_view(job: JobTree) -> None:
    job.configure(
        {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz",
            "sagemaker_region": "eu-west-1",
            "sagemaker_container_log_level": 10,
            "sagemaker_use_mpi": True,
            "sagemaker_num_processes": 4,
            "batch-size": 32,
        },
        hosts=["algo-2", "algo-1"],
        current_host="algo-2",
        channels={"train": job.base, "eval": job.base},
    )
    env = TrainingEnv.load(job.env(TRAINING_JOB_NAME="job-1", AWS_REGION=""), num_gpus=2)
    v = env.to_env_vars()
    base = job.base
    expected = {
        "SM_HOSTS": '["algo-1","algo-2"]',
        "SM_CURRENT_HOST": "algo-2",
        "CURRENT_HOST": "algo-2",
        "SM_NUM_GPUS": "2",
        "SM_CHANNELS": '["eval","train"]',
        "SM_CHANNEL_TRAIN": f"{base}/input/data/train",
        "SM_CHANNEL_EVAL": f"{base}/input/data/eval",
        "SM_HP_BATCH-SIZE": "32",
        "SM_HPS": '{"batch-size":32}',
        "SM_MODEL_DIR": f"{base}/model",
        "SM_OUTPUT_DIR": f"{base}/output",
        "SM_OUTPUT_DATA_DIR": f"{base}/output/data",
        "SM_OUTPUT_INTERMEDIATE_DIR": f"{base}/output/intermediate",
        "SM_INPUT_DIR": f"{base}/input",
        "SM_INPUT_CONFIG_DIR": f"{base}/input/config",
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "SM_MODULE_DIR": "s3://b/k/sourcedir.tar.gz",
        "SM_MODULE_NAME": "train",
        "SM_USER_ENTRY_POINT": "train.py",
        "SM_LOG_LEVEL": "10",
        "SM_FRAMEWORK_MODULE": "chainer_sagemaker_runtime.training:main",
        "SM_FRAMEWORK_PARAMS": '{"sagemaker_num_processes":4,"sagemaker_use_mpi":true}',
        "SM_USER_ARGS": '["--batch-size","32"]',
        "SAGEMAKER_REGION": "eu-west-1",
        "SAGEMAKER_JOB_NAME": "job-1",
    }
    assert {k: v[k] for k in expected} == expected
    assert json.loads(v["SM_RESOURCE_CONFIG"])["current_host"] == "algo-2"
    assert set(json.loads(v["SM_INPUT_DATA_CONFIG"])) == {"eval", "train"}
    training_env = json.loads(v["SM_TRAINING_ENV"])
    assert sorted(training_env) == sorted(TRAINING_ENV_KEYS.split())
    assert training_env["is_master"] is False
    assert training_env["master_hostname"] == "algo-1"
    assert training_env["job_name"] == "job-1"
    assert int(v["SM_NUM_CPUS"]) >= 1


def test_aws_region_variable_wins_over_the_hyperparameter(job: JobTree) -> None:
    job.configure({"sagemaker_region": "eu-west-1"})
    assert TrainingEnv.load(job.env(AWS_REGION="us-east-2"), num_gpus=0).region == "us-east-2"


def test_every_bad_config_file_is_reported_together(job: JobTree) -> None:
    cfg = job.base / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text("{not json")
    (cfg / "resourceconfig.json").write_text('{"current_host": "algo-9", "hosts": ["algo-1"]}')
    (cfg / "inputdataconfig.json").write_text("[]")
    with pytest.raises(ConfigError) as caught:
        TrainingEnv.load(job.env(), num_gpus=0)
    problems = caught.value.problems
    assert len(problems) == 3
    assert "hyperparameters.json: not valid JSON" in problems[0]
    assert any("'current_host' must be one of ['algo-1'], got 'algo-9'" in p for p in problems)
    assert any("inputdataconfig.json: expected a JSON dict, got list" in p for p in problems)


def test_no_resource_config_means_one_host(tmp_path: Path) -> None:
    env = TrainingEnv.load({"SAGEMAKER_BASE_DIR": str(tmp_path)}, num_gpus=0)
    assert env.hosts == ["algo-1"]
    assert env.is_master

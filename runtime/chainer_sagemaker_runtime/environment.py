"""The SageMaker training environment, read once into a frozen object (docs/contract.md §1.2-1.5).

``TrainingEnv.load()`` reads ``<base>/input/config/*.json`` and the environment, reporting every
bad file or variable together (:class:`ConfigError`, exit code 2): unreadable or too deeply
nested JSON, hyperparameter names that cannot become ``--name`` arguments and ``SM_HP_<NAME>``
variables, duplicate or empty host names. ``to_env_vars()`` and ``user_args()`` render exactly
what the old SageMaker Chainer containers gave user scripts; :func:`exec_limit_problems` says
when they would not fit through ``execve``.

The entry point comes from ``SAGEMAKER_PROGRAM`` in the environment first (custom images set
it), then from the ``sagemaker_program`` hyperparameter; the code location defaults to the
code directory (``/opt/ml/code``), as the SageMaker training toolkit has it.

Duration variables such as ``SAGEMAKER_SIGTERM_GRACE_SECONDS`` are parsed where they are used,
by ``training.cluster.wait_seconds`` (finite and >= 0, else the default and a log line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chainer_sagemaker_runtime import gpu
from chainer_sagemaker_runtime.errors import ConfigError

__all__ = [
    "CORE_KEYS",
    "FRAMEWORK_MODULE",
    "MAX_ARG_STRLEN",
    "MAX_JSON_DEPTH",
    "Paths",
    "TrainingEnv",
    "decode_hyperparameters",
    "env_value",
    "exec_limit_problems",
    "json_depth",
    "name_problems",
    "render_argv",
    "split_reserved",
]

FRAMEWORK_MODULE = "chainer_sagemaker_runtime.training:main"

# Reserved keys that configure the runtime itself; the other reserved keys (the MPI ones)
# are "framework parameters" (SM_FRAMEWORK_PARAMS).
CORE_KEYS = frozenset(
    {
        "sagemaker_program",
        "sagemaker_submit_directory",
        "sagemaker_region",
        "sagemaker_container_log_level",
        "sagemaker_job_name",
        "sagemaker_enable_cloudwatch_metrics",
    }
)
_TUNING_KEY = "_tuning_objective_metric"
DEFAULT_LOG_LEVEL = 20
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
# Deeper JSON is a mistake (no script's argparse reads it), and near Python's recursion limit
# json.dumps of SM_TRAINING_ENV, which nests the value two levels further, would fail.
MAX_JSON_DEPTH = 100
# Linux refuses to exec with one argv or environment string over 32 pages (MAX_ARG_STRLEN,
# 128 KiB with the terminating NUL): SM_HPS and SM_TRAINING_ENV carry every hyperparameter.
MAX_ARG_STRLEN = 32 * 4096


@dataclass(frozen=True)
class Paths:
    """The ``/opt/ml`` tree (or ``$SAGEMAKER_BASE_DIR``)."""

    base: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Paths:
        environ = os.environ if environ is None else environ
        return cls(Path(environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml"))

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def input_config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def input_data_dir(self) -> Path:
        return self.base / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.base / "output" / "data"

    @property
    def output_intermediate_dir(self) -> Path:
        return self.base / "output" / "intermediate"

    @property
    def code_dir(self) -> Path:
        return self.base / "code"

    def make_dirs(self) -> None:
        for d in (self.model_dir, self.output_data_dir, self.output_intermediate_dir):
            d.mkdir(parents=True, exist_ok=True)


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0); iterative, any depth."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _decode_one(key: str, value: str, problems: list[str]) -> Any:
    try:
        decoded = json.loads(value)
    except RecursionError:  # json.loads gives up near Python's recursion limit
        too_deep = True
    except ValueError:
        return value
    else:
        too_deep = json_depth(decoded) > MAX_JSON_DEPTH
    if too_deep:
        problems.append(
            f"hyperparameter {key!r}: its JSON value nests deeper than {MAX_JSON_DEPTH} levels; "
            "flatten it (or pass it as a file in an input channel)"
        )
        return value
    return decoded


def decode_hyperparameters(
    raw: Mapping[str, Any], problems: list[str] | None = None
) -> dict[str, Any]:
    """Decode each value with ``json.loads``; a string that is not JSON is kept as it is.

    A value nested deeper than :data:`MAX_JSON_DEPTH` is a problem: it is appended to
    ``problems`` when given, else raised as :class:`ConfigError`.
    """
    found: list[str] = []
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            decoded[key] = _decode_one(key, value, found)
        else:  # hand-written files sometimes carry real JSON values; keep them
            if json_depth(value) > MAX_JSON_DEPTH:
                found.append(
                    f"hyperparameter {key!r}: its value nests deeper than {MAX_JSON_DEPTH} "
                    "levels; flatten it"
                )
            decoded[key] = value
    if found and problems is None:
        raise ConfigError(found)
    if problems is not None:
        problems.extend(found)
    return decoded


def name_problems(hps: Mapping[str, Any]) -> list[str]:
    """Hyperparameter names that cannot become ``--name`` and ``SM_HP_<NAME>``; with the fix."""
    problems: list[str] = []
    for key in hps:
        if not key.strip():
            problems.append(
                f"a hyperparameter has an empty name {key!r} (value {_short(hps[key])}): it "
                "would be passed as `--`, which ends option parsing and swallows every later "
                "hyperparameter; give it a name or remove it"
            )
        elif "=" in key:
            problems.append(
                f"hyperparameter name {key!r} contains '=': SM_HP_{key.upper()} cannot be an "
                "environment variable name and `--name=value` would be misread; rename it "
                f"(for example {key.replace('=', '_')!r})"
            )
        elif "\0" in key:
            problems.append(f"hyperparameter name {key!r} contains a NUL character; rename it")
    return problems


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_reserved(hps: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split decoded hyperparameters into (user, reserved)."""
    user: dict[str, Any] = {}
    reserved: dict[str, Any] = {}
    for key, value in hps.items():
        if key.startswith("sagemaker_") or key == _TUNING_KEY:
            reserved[key] = value
        else:
            user[key] = value
    return user, reserved


def env_value(value: Any) -> str:
    """Render one value as an environment variable: strings as-is, None empty, else JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _arg_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def render_argv(user_hps: Mapping[str, Any]) -> list[str]:
    """``--key value`` per hyperparameter (``-k`` for one letter), keys sorted."""
    argv: list[str] = []
    for key in sorted(user_hps):
        argv.append(f"-{key}" if len(key) == 1 else f"--{key}")
        argv.append(_arg_value(user_hps[key]))
    return argv


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _largest(hps: Mapping[str, Any], overshoot: int) -> list[str]:
    """The fewest hyperparameters, largest first, whose rendered size covers ``overshoot``."""
    # each costs its key, its value and about 6 bytes of JSON punctuation in SM_HPS
    sizes = sorted(((_size(k) + _size(env_value(v)) + 6, k) for k, v in hps.items()), reverse=True)
    chosen: list[str] = []
    covered = 0
    for size, key in sizes:
        if covered >= overshoot:
            break
        chosen.append(key)
        covered += size
    return chosen


def _shorten(hps: Mapping[str, Any], overshoot: int) -> str:
    keys = _largest(hps, overshoot)
    shown = ", ".join(f"{k!r} ({_size(env_value(hps[k]))} bytes)" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return (
        f"shorten the largest hyperparameters by {overshoot} bytes in all: {shown}{more} "
        "(large values belong in a file in an input channel)"
    )


def exec_limit_problems(
    env_vars: Mapping[str, str], argv: Sequence[str], hps: Mapping[str, Any]
) -> list[str]:
    """What would make ``execve`` of the user's command fail, naming the hyperparameters.

    Linux limits each argv or environment string to :data:`MAX_ARG_STRLEN` bytes and all of
    them together to ``ARG_MAX`` (a quarter of the stack limit); a NUL byte cannot be passed.
    """
    problems: list[str] = []
    for key, value in hps.items():
        if "\0" in env_value(value) or "\0" in _arg_value(value):
            problems.append(
                f"hyperparameter {key!r} contains a NUL character, which cannot be passed to a "
                "process; remove it"
            )
    strings = {k: _size(k) + _size(v) + 2 for k, v in env_vars.items()}
    strings.update({f"the argument {a[:20]!r}": _size(a) + 1 for a in argv})
    over = {what: size for what, size in strings.items() if size > MAX_ARG_STRLEN}
    inherited = {k: size for k, size in over.items() if k in env_vars and not k.startswith("SM_")}
    for name, size in inherited.items():  # not rendered from hyperparameters: the image's own
        problems.append(
            f"the environment variable {name} ({size} bytes) exceeds Linux's limit of "
            f"{MAX_ARG_STRLEN} bytes for one variable (MAX_ARG_STRLEN); shorten it in the image "
            "or the job's Environment"
        )
        del over[name]
    if over:
        sizes = ", ".join(f"{what} ({size} bytes)" for what, size in over.items())
        problems.append(
            f"{sizes} would exceed Linux's limit of {MAX_ARG_STRLEN} bytes for one environment "
            "variable or argument (MAX_ARG_STRLEN): "
            + _shorten(hps, max(over.values()) - MAX_ARG_STRLEN)
        )
    total = sum(size + 8 for size in strings.values())  # plus one pointer each
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (OSError, ValueError):  # pragma: no cover - not on Linux
        arg_max = 2 * 1024 * 1024
    if total > arg_max:
        problems.append(
            f"the command line and environment together would be {total} bytes, over this "
            f"host's limit of {arg_max} bytes (ARG_MAX); " + _shorten(hps, total - arg_max)
        )
    return problems


def _read_json(path: Path, problems: list[str], default: Any, expect: type) -> Any:
    if not path.exists():
        return default
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        problems.append(f"{path}: JSON nested too deeply to read; SageMaker writes a flat object")
        return default
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(
            f"{path}: not valid JSON ({exc}); SageMaker writes this file as a JSON object"
        )
        return default
    if not isinstance(data, expect):
        problems.append(f"{path}: expected a JSON {expect.__name__}, got {type(data).__name__}")
        return default
    return data


@dataclass(frozen=True)
class TrainingEnv:
    """Everything a training job knows about itself; built once by :meth:`load`."""

    paths: Paths
    hyperparameters: dict[str, Any]
    reserved: dict[str, Any]
    resource_config: dict[str, Any]
    input_data_config: dict[str, Any]
    current_host: str
    hosts: list[str]
    network_interface_name: str
    num_gpus: int
    num_cpus: int
    job_name: str | None
    region: str | None
    log_level: int
    user_entry_point: str | None
    module_dir: str
    extra: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        num_gpus: int | None = None,
    ) -> TrainingEnv:
        environ = os.environ if environ is None else environ
        paths = Paths.from_environ(environ)
        cfg = paths.input_config_dir
        problems: list[str] = []
        raw_hps = _read_json(cfg / "hyperparameters.json", problems, {}, dict)
        resource = _read_json(cfg / "resourceconfig.json", problems, None, dict)
        data_cfg = _read_json(cfg / "inputdataconfig.json", problems, {}, dict)

        if resource is None:  # not on SageMaker: one host
            resource = {"current_host": "algo-1", "hosts": ["algo-1"]}
        hosts = resource.get("hosts")
        current = resource.get("current_host")
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and h.strip() for h in hosts)
        ):
            problems.append(
                "resourceconfig.json: 'hosts' must be a non-empty list of host names, "
                f"got {hosts!r}"
            )
            hosts = ["algo-1"]
        twice = sorted({h for h in hosts if hosts.count(h) > 1})
        if twice:
            problems.append(
                f"resourceconfig.json: 'hosts' names {', '.join(twice)} more than once "
                f"({hosts!r}); every host of a job must appear exactly once"
            )
            hosts = list(dict.fromkeys(hosts))
        hosts = sorted(hosts)
        if not isinstance(current, str) or current not in hosts:
            problems.append(
                f"resourceconfig.json: 'current_host' must be one of {hosts}, got {current!r}"
            )
            current = hosts[0]
        iface = resource.get("network_interface_name") or "eth0"

        hps = decode_hyperparameters(raw_hps, problems)
        user, reserved = split_reserved(hps)
        problems.extend(name_problems(user))
        log_level = reserved.get("sagemaker_container_log_level", DEFAULT_LOG_LEVEL)
        if isinstance(log_level, str) and log_level.isdigit():
            log_level = int(log_level)
        if not isinstance(log_level, int) or isinstance(log_level, bool):
            problems.append(
                "hyperparameter sagemaker_container_log_level must be an integer logging level "
                f"such as 20 (INFO), got {log_level!r}"
            )
            log_level = DEFAULT_LOG_LEVEL
        for key in ("sagemaker_program", "sagemaker_submit_directory"):
            value = reserved.get(key)
            if value is not None and not isinstance(value, str):
                problems.append(f"hyperparameter {key} must be a string, got {value!r}")
        if problems:
            raise ConfigError(problems)
        program = environ.get(PROGRAM_ENV) or reserved.get("sagemaker_program")
        module_dir = reserved.get("sagemaker_submit_directory") or str(paths.code_dir)

        region = environ.get("AWS_REGION") or reserved.get("sagemaker_region")
        return cls(
            paths=paths,
            hyperparameters=user,
            reserved=reserved,
            resource_config=resource,
            input_data_config=data_cfg,
            current_host=current,
            hosts=hosts,
            network_interface_name=iface,
            num_gpus=gpu.count_gpus() if num_gpus is None else num_gpus,
            num_cpus=gpu.count_cpus(),
            job_name=environ.get("TRAINING_JOB_NAME") or reserved.get("sagemaker_job_name"),
            region=str(region) if region else None,
            log_level=log_level,
            user_entry_point=program or None,
            module_dir=module_dir,
        )

    # ---------------------------------------------------------------- derived
    @property
    def master_hostname(self) -> str:
        return self.hosts[0]

    @property
    def is_master(self) -> bool:
        return self.current_host == self.master_hostname

    @property
    def channel_input_dirs(self) -> dict[str, str]:
        return {
            name: str(self.paths.input_data_dir / name) for name in sorted(self.input_data_config)
        }

    @property
    def framework_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.reserved.items() if k not in CORE_KEYS}

    @property
    def module_name(self) -> str | None:
        if self.user_entry_point is None:
            return None
        name = self.user_entry_point
        return name[:-3] if name.endswith(".py") else name

    def user_args(self) -> list[str]:
        return render_argv(self.hyperparameters)

    def launch_problems(self, base: Mapping[str, str] | None = None) -> list[str]:
        """Why the user's command could not start, known before fetching any code.

        A missing entry point, or hyperparameters too large for ``execve`` once rendered into
        the environment on top of ``base`` (default ``os.environ``) and into argv.
        """
        problems: list[str] = []
        if not self.user_entry_point:
            problems.append(
                f"no entry point: set the hyperparameter sagemaker_program (or the environment "
                f"variable {PROGRAM_ENV}) to the file to run, for example train.py, as the "
                "SageMaker SDK's entry_point does"
            )
        environ = dict(os.environ if base is None else base)
        environ.update(self.to_env_vars())
        problems += exec_limit_problems(environ, self.user_args(), self.hyperparameters)
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The SM_TRAINING_ENV object (and what ``sagemaker_containers.training_env()`` reads)."""
        p = self.paths
        return {
            "additional_framework_parameters": self.framework_params,
            "channel_input_dirs": self.channel_input_dirs,
            "current_host": self.current_host,
            "framework_module": FRAMEWORK_MODULE,
            "hosts": self.hosts,
            "hyperparameters": self.hyperparameters,
            "input_config_dir": str(p.input_config_dir),
            "input_data_config": self.input_data_config,
            "input_dir": str(p.input_dir),
            "is_master": self.is_master,
            "job_name": self.job_name,
            "log_level": self.log_level,
            "master_hostname": self.master_hostname,
            "model_dir": str(p.model_dir),
            "module_dir": self.module_dir,
            "module_name": self.module_name,
            "network_interface_name": self.network_interface_name,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "output_data_dir": str(p.output_data_dir),
            "output_dir": str(p.output_dir),
            "output_intermediate_dir": str(p.output_intermediate_dir),
            "resource_config": self.resource_config,
            "user_entry_point": self.user_entry_point,
        }

    def to_env_vars(self) -> dict[str, str]:
        """All SM_* variables plus CURRENT_HOST, SAGEMAKER_REGION and SAGEMAKER_JOB_NAME."""
        p = self.paths
        values: dict[str, Any] = {
            "SM_HOSTS": self.hosts,
            "SM_CURRENT_HOST": self.current_host,
            "SM_NUM_GPUS": self.num_gpus,
            "SM_NUM_CPUS": self.num_cpus,
            "SM_CHANNELS": sorted(self.input_data_config),
            "SM_HPS": self.hyperparameters,
            "SM_MODEL_DIR": str(p.model_dir),
            "SM_OUTPUT_DIR": str(p.output_dir),
            "SM_OUTPUT_DATA_DIR": str(p.output_data_dir),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(p.output_intermediate_dir),
            "SM_INPUT_DIR": str(p.input_dir),
            "SM_INPUT_CONFIG_DIR": str(p.input_config_dir),
            "SM_RESOURCE_CONFIG": self.resource_config,
            "SM_INPUT_DATA_CONFIG": self.input_data_config,
            "SM_NETWORK_INTERFACE_NAME": self.network_interface_name,
            "SM_MODULE_DIR": self.module_dir,
            "SM_MODULE_NAME": self.module_name,
            "SM_USER_ENTRY_POINT": self.user_entry_point,
            "SM_LOG_LEVEL": self.log_level,
            "SM_FRAMEWORK_MODULE": FRAMEWORK_MODULE,
            "SM_FRAMEWORK_PARAMS": self.framework_params,
            "SM_USER_ARGS": self.user_args(),
            "SM_TRAINING_ENV": self.to_dict(),
        }
        for name, path in self.channel_input_dirs.items():
            values[f"SM_CHANNEL_{name.upper()}"] = path
        for key, value in self.hyperparameters.items():
            values[f"SM_HP_{key.upper()}"] = value
        env = {k: env_value(v) for k, v in values.items()}
        env["CURRENT_HOST"] = self.current_host
        if self.region:
            env["SAGEMAKER_REGION"] = self.region
        if self.job_name:
            env["SAGEMAKER_JOB_NAME"] = self.job_name
        return env

"""Compatibility with the old ``sagemaker_containers`` library, for existing training scripts.

Many SageMaker Chainer scripts do::

    import sagemaker_containers
    env = sagemaker_containers.training_env()
    env.num_gpus, env.current_host, env.hosts, env.model_dir, env.channel_input_dirs, ...

This module answers those reads from the environment ``train`` computed (``SM_TRAINING_ENV``),
or, outside ``train``, from the SageMaker config files. The host-specific keys
(``current_host``, ``hosts``, ``is_master``, ``master_hostname``, ``resource_config``,
``network_interface_name``) always come from *this* host's own ``resourceconfig.json`` when it
exists, as the old toolkit's did, so an MPI rank on algo-2 says algo-2 whatever it inherited.
It is a read-only view: the old library's training machinery is ``train`` itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from chainer_sagemaker_runtime.environment import Paths as _Paths
from chainer_sagemaker_runtime.environment import TrainingEnv as _Env
from chainer_sagemaker_runtime.environment import render_argv

__all__ = ["TrainingEnv", "training_env"]


class TrainingEnv(Mapping[str, Any]):
    """Attribute and mapping access to the keys of ``SM_TRAINING_ENV``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"training environment has no {name!r}; available: {sorted(self._values)}"
            ) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def properties(self) -> list[str]:
        return sorted(self._values)

    def to_cmd_args(self) -> list[str]:
        return render_argv(self._values.get("hyperparameters", {}))

    def to_env_vars(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith("SM_")}

    def __repr__(self) -> str:
        return f"TrainingEnv({self._values!r})"


def _this_host(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the host keys of this host's own resourceconfig.json (when readable)."""
    path = _Paths.from_environ().input_config_dir / "resourceconfig.json"
    try:
        resource = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return values
    hosts = resource.get("hosts") if isinstance(resource, dict) else None
    current = resource.get("current_host") if isinstance(resource, dict) else None
    if not (isinstance(hosts, list) and hosts and isinstance(current, str) and current in hosts):
        return values
    hosts = sorted(str(h) for h in hosts)
    values.update(
        current_host=current,
        hosts=hosts,
        master_hostname=hosts[0],
        is_master=current == hosts[0],
        resource_config=resource,
        network_interface_name=resource.get("network_interface_name") or "eth0",
    )
    return values


def training_env() -> TrainingEnv:
    """The current job's training environment (host keys from this host's own config)."""
    raw = os.environ.get("SM_TRAINING_ENV")
    if raw:
        return TrainingEnv(_this_host(json.loads(raw)))
    return TrainingEnv(_Env.load().to_dict())

"""The ``serve`` settings, read once from the environment, frozen (docs/contract.md §3.1).

Every bad variable is reported at once (:class:`ConfigError`), before anything is fetched or forked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chainer_sagemaker_runtime.errors import ConfigError
from chainer_sagemaker_runtime.gpu import count_cpus

__all__ = ["ServingConfig"]

_MB = 1024 * 1024
_MAX_MB = 100  # SAGEMAKER_MAX_PAYLOAD_IN_MB=0 (batch transform's "any size, chunked"): the most
# a transform job may send (CreateTransformJob's MaxPayloadInMB goes up to 100)
_STRATEGIES = {"singlerecord": "SINGLE_RECORD", "multirecord": "MULTI_RECORD"}


@dataclass(frozen=True)
class ServingConfig:
    """Everything the server needs to know, already validated."""

    base_dir: Path
    program: str
    submit_directory: str
    region: str | None
    log_level: int
    host: str
    port: int
    workers: int
    timeout: float
    default_accept: str
    max_payload_bytes: int
    batching: bool
    max_batch_rows: int
    optimize_model: bool
    keepalive: float = 20.0
    header_timeout: float = 10.0
    max_connections: int = 1024
    max_concurrent_transforms: int = 0  # 0: one per worker
    batch_strategy: str = "MULTI_RECORD"
    batch: bool = False  # SAGEMAKER_BATCH: running as a batch transform job

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def code_dir(self) -> Path:
        return self.base_dir / "code"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingConfig:
        env = os.environ if env is None else env
        problems: list[str] = []

        def number(name: str, default: float, *, integer: bool, minimum: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                kind = "an integer" if integer else "a number"
                problems.append(f"{name}={raw!r} is not {kind}; unset it or set e.g. {default:g}")
                return default
            if value < minimum:
                problems.append(f"{name}={raw!r} must be at least {minimum:g}")
                return default
            return value

        base_dir = Path(env.get("SAGEMAKER_BASE_DIR") or "/opt/ml")
        program = env.get("SAGEMAKER_PROGRAM", "").strip()
        if not program:
            problems.append(
                "SAGEMAKER_PROGRAM is not set; set it to the file that defines model_fn "
                "(e.g. inference.py), relative to SAGEMAKER_SUBMIT_DIRECTORY"
            )
        level_raw = env.get("SAGEMAKER_CONTAINER_LOG_LEVEL", "20").strip() or "20"
        log_level = logging.INFO
        if level_raw.isdigit():
            log_level = int(level_raw)
        elif isinstance(logging.getLevelName(level_raw.upper()), int):
            log_level = logging.getLevelName(level_raw.upper())
        else:
            problems.append(
                f"SAGEMAKER_CONTAINER_LOG_LEVEL={level_raw!r} is not a log level (20 = INFO)"
            )
        accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or "application/json"

        def flag(name: str) -> bool:
            raw = env.get(name, "1").strip().lower()
            if raw not in {"0", "1", "true", "false", "yes", "no", "on", "off", ""}:
                problems.append(f"{name}={raw!r} must be 0 or 1")
            return raw not in {"0", "false", "no", "off"}

        strategy_raw = env.get("SAGEMAKER_BATCH_STRATEGY", "").strip()
        strategy = _STRATEGIES.get(strategy_raw.replace("_", "").lower(), "")
        if not strategy:
            if strategy_raw:
                problems.append(
                    f"SAGEMAKER_BATCH_STRATEGY={strategy_raw!r} must be SINGLE_RECORD or "
                    "MULTI_RECORD"
                )
            strategy = "MULTI_RECORD"
        config = cls(
            base_dir=base_dir,
            program=program,
            submit_directory=env.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip(),
            region=env.get("AWS_REGION") or env.get("SAGEMAKER_REGION") or None,
            log_level=log_level,
            host=(
                env.get("SAGEMAKER_BIND_TO_HOST", "").strip()
                or env.get("CHAINER_SAGEMAKER_BIND_HOST", "").strip()
                or "0.0.0.0"
            ),
            port=int(number("SAGEMAKER_BIND_TO_PORT", 8080, integer=True, minimum=0)),
            workers=int(
                number("SAGEMAKER_MODEL_SERVER_WORKERS", count_cpus(), integer=True, minimum=1)
            ),
            timeout=number("SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, integer=False, minimum=0.001),
            default_accept=accept.split(";", 1)[0].strip().lower(),
            max_payload_bytes=int(
                (number("SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, integer=False, minimum=0) or _MAX_MB)
                * _MB
            ),
            batching=flag("CHAINER_SAGEMAKER_BATCHING"),
            optimize_model=flag("CHAINER_SAGEMAKER_OPTIMIZE_MODEL"),
            max_batch_rows=int(
                number("CHAINER_SAGEMAKER_MAX_BATCH_ROWS", 256, integer=True, minimum=1)
            ),
            keepalive=number("CHAINER_SAGEMAKER_KEEPALIVE", 20, integer=False, minimum=0.1),
            header_timeout=number(
                "CHAINER_SAGEMAKER_HEADER_TIMEOUT", 10, integer=False, minimum=0.1
            ),
            max_connections=int(
                number("CHAINER_SAGEMAKER_MAX_CONNECTIONS", 1024, integer=True, minimum=1)
            ),
            max_concurrent_transforms=int(
                number("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 0, integer=True, minimum=0)
            ),
            batch_strategy=strategy,
            batch=env.get("SAGEMAKER_BATCH", "").strip().lower() in {"1", "true", "yes", "on"},
        )
        if config.port > 65535:
            problems.append(f"SAGEMAKER_BIND_TO_PORT={config.port} is not a TCP port (1-65535)")
        if problems:
            raise ConfigError(problems)
        return config

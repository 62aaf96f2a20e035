"""The job's outcome files (CONTRACT.md §1.7): an empty ``success`` or a ``failure`` reason."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FAILURE_REASON_LIMIT", "failure_reason", "write_failure", "write_success"]

# SageMaker shows the first 1024 characters of the failure file as FailureReason.
FAILURE_REASON_LIMIT = 1024


def failure_reason(headline: str, detail: str = "") -> str:
    """Headline first, then as much of the detail's *end* (where the error is) as fits."""
    headline = headline.strip()
    if len(headline) > FAILURE_REASON_LIMIT // 2:
        headline = headline[: FAILURE_REASON_LIMIT // 2 - 3] + "..."
    detail = detail.strip()
    room = FAILURE_REASON_LIMIT - len(headline) - 1
    if not detail or room <= 4:
        return headline
    if len(detail) > room:
        detail = "..." + detail[-(room - 3) :]
    return f"{headline}\n{detail}"


def _clear(output_dir: Path) -> None:
    for name in ("success", "failure"):
        (output_dir / name).unlink(missing_ok=True)


def write_success(output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    _clear(output_dir)
    (output_dir / "success").touch()


def write_failure(output_dir: Path, reason: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    _clear(output_dir)
    (output_dir / "failure").write_text(reason + "\n", encoding="utf-8")

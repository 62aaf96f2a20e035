"""The job's outcome files (docs/contract.md §1.7): an empty ``success`` or a ``failure`` reason.

SageMaker shows the failure file as FailureReason, cut at 1024 characters. We count UTF-8 bytes
(the stricter measure), never split a character, and strip control characters except ``\\n`` and
``\\t`` (terminal colours, ``\\r`` progress bars). The reason is a short headline (what failed, how
it was launched, how it ended) and then the most useful part of the detail.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

__all__ = [
    "FAILURE_REASON_LIMIT",
    "clean_text",
    "describe_exit",
    "failure_reason",
    "write_failure",
    "write_success",
]

# SageMaker shows the first 1024 characters of the failure file as FailureReason; the file
# also ends with a newline, so the reason itself gets one byte less.
FAILURE_REASON_LIMIT = 1024
_HEADLINE_LIMIT = 320
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Drop terminal escapes and control characters; a ``\\r``-rewritten line keeps its last
    state (what a terminal would show)."""
    text = _ANSI.sub("", text)
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        lines.append(_CONTROL.sub("", line))
    return "\n".join(lines)


def _fit_start(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def _fit_end(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[len(data) - limit :].decode("utf-8", "ignore")


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def describe_exit(returncode: int, *, memory_hint: bool = True) -> str:
    """'exited with code 3' / 'was killed by SIGKILL (exit code 137): it may have run out of
    memory' (the hint left out when ``train`` itself sent the SIGKILL)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"was killed by {name} (exit code {128 - returncode})"
        return how + (": it may have run out of memory" if returncode == -9 and memory_hint else "")
    how = f"exited with code {returncode}"
    if returncode == 137 and memory_hint:
        how += " (SIGKILL: it may have run out of memory)"
    return how


def _important_lines(detail: str) -> str | None:
    """pip's and similar tools' ``ERROR:`` lines, when the detail has any."""
    lines = [line for line in detail.splitlines() if line.lstrip().startswith("ERROR:")]
    return "\n".join(lines) if lines else None


def failure_reason(
    headline: str, detail: str = "", *, keep: str = "end", limit: int = FAILURE_REASON_LIMIT - 1
) -> str:
    """Headline first, then as much of the detail as fits in ``limit`` UTF-8 bytes.

    ``keep="end"`` keeps the end of the detail (where a traceback's error is), preferring
    ``ERROR:`` lines when the whole does not fit; ``keep="start"`` keeps whole lines from the
    start (every problem of a bad configuration, as many as fit).
    """
    headline = clean_text(headline).strip()
    if _size(headline) > _HEADLINE_LIMIT:
        headline = _fit_start(headline, _HEADLINE_LIMIT - 3) + "..."
    detail = clean_text(detail).strip("\n")
    room = limit - _size(headline) - 1
    if not detail.strip() or room <= 8:
        return _fit_start(headline, limit)
    if _size(detail) <= room:
        return f"{headline}\n{detail}"
    if keep == "start":
        kept: list[str] = []
        lines = detail.splitlines()
        for i, line in enumerate(lines):
            more = f"(and {len(lines) - i} more lines; see the log)"
            if _size("\n".join([*kept, line, more])) > room:
                kept.append(_fit_start(more, room))
                break
            kept.append(line)
        return _fit_start(f"{headline}\n" + "\n".join(kept), limit)
    errors = _important_lines(detail)
    if errors is not None:
        last = detail.strip().splitlines()[-1]
        if not last.lstrip().startswith("ERROR:"):
            errors += "\n" + last
        detail = errors
        if _size(detail) <= room:
            return f"{headline}\n{detail}"
    return f"{headline}\n..." + _fit_end(detail, room - 3)


def _clear(output_dir: Path) -> None:
    for name in ("success", "failure"):
        (output_dir / name).unlink(missing_ok=True)


def write_success(output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    _clear(output_dir)
    (output_dir / "success").touch()


def write_failure(output_dir: Path, reason: str) -> None:
    """Write the reason (cut to fit, as a last guard) and a newline."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _clear(output_dir)
    text = _fit_start(clean_text(reason), FAILURE_REASON_LIMIT - 1)
    (output_dir / "failure").write_text(text + "\n", encoding="utf-8")

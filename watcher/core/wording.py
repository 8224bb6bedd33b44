"""The words every surface (the terminal, the log, the status page) uses for a batch's files
and for durations, so that they say the same thing the same way."""

from __future__ import annotations

from ..api.models import FileCounts


def duration_text(seconds: float) -> str:
    """``1h02m03s``, ``2m05s`` or ``7s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def files_text(c: FileCounts) -> str:
    """The batch's files by kind: completed and failed always, cancelled and in progress when
    there are any (``80/80`` alone hides 50 cancelled files)."""
    parts = [f"{c.completed} completed", f"{c.failed} failed"]
    if c.cancelled:
        parts.append(f"{c.cancelled} cancelled")
    if c.in_progress:
        parts.append(f"{c.in_progress} in progress")
    return ", ".join(parts)


def eta_text(seconds: float | None) -> str:
    return "?" if seconds is None else duration_text(seconds)

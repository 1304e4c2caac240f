"""Text progress bars and figures that fit in a table cell."""

from __future__ import annotations

from datetime import datetime


def bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def compact(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{n:,}"


def build_progress(status: str, processed: int, total: int, width: int = 10) -> str:
    if status == "queued":
        return "queued"
    if not total:
        return f"{bar(0.0, width)} –" if status == "running" else status
    fraction = processed / total
    return f"{bar(fraction, width)} {100 * fraction:3.0f}% {compact(processed)}/{compact(total)}"


def rate_text(rate: float | None) -> str:
    return f"{compact(int(rate))}/s" if rate else "–"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "–"

"""Helpers for Pilot tests: actors, screen text, and waiting on a condition (no sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import App

from store.actors import Actor

OPERATOR = Actor(user="alice", role="operator", origin="ssh 203.0.113.7:50022")
VIEWER = Actor(user="bob", role="read_only", origin="local")
DB_LABEL = "sqlite:///workspace.db"


def screen_text(app: App) -> str:
    """Every line of the current screen (modals included), as the terminal would show it."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


def messages(app: App) -> list[str]:
    """Notifications raised so far, as 'title: message'."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def wait_for(
    pilot, condition: Callable[[], object], timeout: float = 30.0, what: str | Callable = ""
):
    """Let the app run until `condition()` is truthy; fail after `timeout` seconds.
    `what` (text, or a callable giving text) explains the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            about = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {about or condition}")
        await pilot.pause(0.05)

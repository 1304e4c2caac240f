"""Plain text of what a Pilot-driven app shows, for assertions on the screen itself."""

from __future__ import annotations

from textual.app import App


def screen_text(app: App) -> str:
    """Every line of the current screen (modals included), as the terminal would show it."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)

"""The one-line header every screen shows: database, scheduler state, user and role."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from store.names import printable

# How the app says its reads fail or hang (CampaignConsole.show_poll_error, show_poll_stalled).
OUTAGES = ("DATABASE UNREACHABLE", "DATABASE NOT ANSWERING", "READ FAILED")


class StatusHeader(Static):
    """`user (role) │ scheduler: … │ DB`; NOT RUNNING in a warning colour.

    The app's poller sets `scheduler` every poll; the rest is fixed for the session.
    """

    scheduler: reactive[str] = reactive("checking…", layout=False)

    def __init__(self, database: str, user: str, role: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.database = database
        self.user = user
        self.role = role

    def on_mount(self) -> None:
        self.scheduler = self.app.scheduler_text  # type: ignore[attr-defined]
        self.update(self._line())  # the watcher does not fire when the value is unchanged

    def watch_scheduler(self, _value: str) -> None:
        self.update(self._line())

    def _line(self) -> Text:
        # User and scheduler first: at 80 columns a long database URL is what gets cut.
        line = Text(no_wrap=True, overflow="ellipsis")
        via = self.app.actor.via  # type: ignore[attr-defined]
        label = f"{self.user} ({self.role})" + (f" via {via}" if via else "")
        # `alice (read_only) via ssh` through the gateway
        line.append(printable(label), style="bold")
        if self.scheduler.startswith(OUTAGES):
            # The database cannot be read, so what the scheduler does is unknown.
            line.append(" │ ")
            line.append(f" {self.scheduler} ", style="bold reverse red")
        elif self.scheduler.startswith("NOT RUNNING"):
            # Reverse video keeps the warning visible under NO_COLOR as well.
            line.append(" │ scheduler: ")
            line.append(f" {self.scheduler} ", style="bold reverse red")
        else:
            line.append(" │ scheduler: ")
            line.append(self.scheduler, style="green")
        line.append(" │ ")
        room = self.size.width - 2 - line.cell_len
        database = printable(self.database)
        if 0 < room < len(database):
            # Keep the end of the URL (the file or database name) visible at 80 columns.
            database = "…" + database[-max(room - 1, 8) :]
        line.append(database)
        return line

    def on_resize(self) -> None:
        self.update(self._line())

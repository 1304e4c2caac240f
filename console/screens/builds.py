"""The builds monitor: running, queued and recent builds across campaigns, and the scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from console.keymap import BUILDS_BINDINGS
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import build_progress, eta_text, rate_text, when
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table
from store.monitor import SchedulerMonitor, scheduler_monitor
from store.names import printable

if TYPE_CHECKING:
    from sqlmodel import Session

COLUMNS = ("#", "Campaign", "Reason", "Status", "Progress", "Rate", "ETA", "Finished", "By")


class BuildsScreen(LiveScreen):
    BINDINGS = BUILDS_BINDINGS
    AUTO_FOCUS = "#builds"

    def __init__(self) -> None:
        super().__init__(id="builds-screen")

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Static("scheduler: checking…", id="health", classes="panel")
        yield Table(id="builds", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#builds", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.focus()

    def read_snapshot(self, session: Session) -> SchedulerMonitor:
        return scheduler_monitor(session, recent_limit=20)

    def apply_snapshot(self, overview: SchedulerMonitor) -> None:
        set_text(self.query_one("#health", Static), self.health_text(overview))
        rows = []
        for build in [*overview.running, *overview.queued, *overview.recent]:
            rows.append(
                (
                    str(build.id),
                    (
                        str(build.id),
                        build.campaign,
                        build.reason,
                        build.status,
                        build_progress(build.status, build.processed, build.total),
                        rate_text(build.rate),
                        eta_text(build.eta_seconds),
                        when(build.finished_at),
                        build.requested_by,
                    ),
                )
            )
        sync_table(self.query_one("#builds", DataTable), rows)

    def health_text(self, overview: SchedulerMonitor) -> Text:
        state = overview.health
        text = Text()
        text.append("Scheduler ", style="bold")
        if state.alive:
            text.append(self.app.scheduler_line(state), style="green")
            text.append(printable(f" · {state.host}:{state.pid}"), style="dim")
        else:
            text.append(f" {state.describe()} ", style="bold reverse red")  # with the last one seen
            text.append(" queued builds wait until a scheduler runs", style="dim")
        text.append(
            f"\nrunning {len(overview.running)} · queued {len(overview.queued)}"
            f" · recent {len(overview.recent)}"
        )
        return text

    def action_back(self) -> None:
        self.app.pop_screen()

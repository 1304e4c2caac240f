"""The builds monitor: running, queued and recent builds across campaigns, and the scheduler."""

from __future__ import annotations

from rich.text import Text
from sqlmodel import Session
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from console.keymap import BUILDS_BINDINGS
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import build_progress, eta_text, rate_text, when
from console.widgets.status_header import StatusHeader
from store.live_views import BuildsOverview, SchedulerState, builds_overview, scheduler_state
from store.models import utcnow

COLUMNS = ("#", "Campaign", "Reason", "Status", "Progress", "Rate", "ETA", "Finished", "By")


class BuildsScreen(LiveScreen):
    BINDINGS = BUILDS_BINDINGS
    AUTO_FOCUS = "#builds"

    def __init__(self) -> None:
        super().__init__(id="builds-screen")
        self.now_fn = utcnow

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Static("scheduler: checking…", id="health", classes="panel")
        yield DataTable(id="builds", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#builds", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.focus()

    def read_snapshot(self, session: Session) -> tuple[BuildsOverview, SchedulerState]:
        return builds_overview(session), scheduler_state(session)

    def apply_snapshot(self, snapshot: tuple[BuildsOverview, SchedulerState]) -> None:
        overview, state = snapshot
        now = self.now_fn()
        set_text(self.query_one("#health", Static), self.health_text(overview, state))
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
                        rate_text(build.rate(now)),
                        eta_text(build.eta_seconds(now)),
                        when(build.finished_at),
                        build.requested_by,
                    ),
                )
            )
        sync_table(self.query_one("#builds", DataTable), rows)

    def health_text(self, overview: BuildsOverview, state: SchedulerState) -> Text:
        text = Text()
        text.append("Scheduler ", style="bold")
        if state.alive:
            text.append(state.describe(self.app.embedded_holder), style="green")
            text.append(f" · holder {state.holder}", style="dim")
        else:
            text.append(" NOT RUNNING ", style="bold reverse red")
            text.append(" queued builds wait until a scheduler runs", style="dim")
        text.append(
            f"\nrunning {len(overview.running)} · queued {len(overview.queued)}"
            f" · recent {len(overview.recent)}"
        )
        return text

    def action_back(self) -> None:
        self.app.pop_screen()

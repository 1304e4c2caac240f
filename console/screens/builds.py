"""The builds monitor: running, queued and recent builds across campaigns, and the scheduler.
Below the table, the selected build in full (why it failed, above all); `R` queues a failed
build again (it resumes from its checkpoint), `x` cancels a queued or running one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from console.actions import run_store_operation
from console.keymap import BUILDS_BINDINGS
from console.literal import literal_lines
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import build_progress, eta_text, rate_text, when
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table, cursor_key
from store.monitor import BuildProgress, SchedulerMonitor, scheduler_monitor
from store.names import printable
from store.states import OPEN_BUILD_STATUSES, BuildStatus

if TYPE_CHECKING:
    from sqlmodel import Session

    from store.actors import Actor
    from store.models import AudienceBuild

# A change to one build, run by the store: returns what the notification says.
Change = Callable[["Session", "Actor", "AudienceBuild"], str]
COLUMNS = ("#", "Campaign", "Reason", "Status", "Progress", "Rate", "ETA", "Finished", "By")


class BuildsScreen(LiveScreen):
    BINDINGS = BUILDS_BINDINGS
    AUTO_FOCUS = "#builds"

    def __init__(self) -> None:
        super().__init__(id="builds-screen")
        self.builds: list[BuildProgress] = []

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Static("scheduler: checking…", id="health", classes="panel")
        yield Table(id="builds", cursor_type="row", zebra_stripes=True)
        yield Static(id="build-detail")
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
        self.builds = [*overview.running, *overview.queued, *overview.recent]
        self.show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_selected()

    def selected(self) -> BuildProgress | None:
        key = cursor_key(self.query_one("#builds", DataTable))
        return next((b for b in self.builds if str(b.id) == key), None)

    def show_selected(self) -> None:
        build = self.selected()
        set_text(self.query_one("#build-detail", Static), detail(build) if build else "")

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

    def action_retry_build(self) -> None:
        """Queue the selected failed build again, after a confirmation. Any other build goes
        straight to the store, which refuses it in its own words and audits that."""
        build = self.selected()
        if build is None:
            self.app.notify("no build selected", severity="warning")
            return
        self.confirm(
            build.status == BuildStatus.FAILED,
            build.id,
            "Retry",
            f"Queue build #{build.id} ({build.reason} of {build.campaign}) again? It resumes "
            "from its checkpoint: "
            + (
                f"the {build.processed:,} profiles it placed stay where they are, and the "
                "rest are placed"
                if build.processed
                else "the profiles are placed"
            )
            + " as if it had never failed. It pauses the campaign's mailings again while "
            "it runs (R5).",
            retry,
        )

    def action_cancel_build(self) -> None:
        build = self.selected()
        if build is None:
            self.app.notify("no build selected", severity="warning")
            return
        self.confirm(
            build.status in OPEN_BUILD_STATUSES,
            build.id,
            "Cancel",
            f"Cancel build #{build.id} ({build.reason} of {build.campaign})? What it "
            "committed stays; the rest is not done, and the mailings it paused resume.",
            cancel,
        )

    def confirm(self, possible: bool, build_id: int, verb: str, text: str, change: Change) -> None:
        """Ask first when the store would do it; otherwise go straight to the store."""
        from console.widgets.confirm import ConfirmScreen

        title = f"{verb} build"

        def now() -> None:
            def operation(session: Session) -> str:
                from store import builds

                return change(session, self.app.actor, builds.get_build(session, build_id))

            run_store_operation(self.app, title, operation)

        if not possible:
            now()
            return
        self.app.push_screen(
            ConfirmScreen(f"{title} #{build_id}", text, verb), lambda ok: ok and now()
        )


def detail(build: BuildProgress) -> Text:
    """The selected build in full, under the table: at 80 columns its error is not in it."""
    out = Text()
    out.append(f"#{build.id} {build.reason} of ", style="bold")
    out.append(printable(build.campaign), style="bold")
    out.append(f" · {build.status} · {build_progress(build.status, build.processed, build.total)}")
    out.append(f"\nrequested by {printable(build.requested_by)} at {when(build.requested_at)}")
    if build.started_at:
        out.append(f" · started {when(build.started_at)}")
    if build.resumed_at:
        out.append(f" · resumed {when(build.resumed_at)}")
    if build.finished_at:
        out.append(f" · ended {when(build.finished_at)}")
    if build.error:
        out.append("\n")
        out.append_text(literal_lines(f"Error: {build.error}", style="red"))
    return out


def retry(session: Session, actor: Actor, build: AudienceBuild) -> str:
    from store import builds

    builds.retry_build(session, actor, build)
    return f"build #{build.id} queued again: it resumes from its checkpoint"


def cancel(session: Session, actor: Actor, build: AudienceBuild) -> str:
    from store import builds

    builds.cancel_build(session, actor, build)
    return f"build #{build.id} cancelled"

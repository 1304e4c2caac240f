"""Segments at a glance (issue 13 §6): kind, database, members, rule, schedule, the last
refresh (when, entered, left), the next one; `r` refreshes the selected dynamic segment.
Below the table, the selected segment in full: at 80 columns the table's right-hand
columns (schedule, database, campaigns, rule) are off screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from console.actions import run_store_operation
from console.keymap import SEGMENTS_BINDINGS
from console.literal import literal
from console.live import LiveScreen
from console.screens.campaign import set_text, sync_table
from console.widgets.progress import when
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table, cursor_key
from store.segment_views import SegmentOverview, segment_overviews

if TYPE_CHECKING:
    from sqlmodel import Session

# What an engineer asks of a segment first (how big, when it last and next refreshes, and
# what that changed) comes first: at 80 columns the rest is off to the right.
COLUMNS = (
    "Segment",
    "Kind",
    "Members",
    "Last refresh",
    "+in/−out",
    "Next refresh",
    "Schedule",
    "Database",
    "Campaigns",
    "Rule",
)


def cells(s: SegmentOverview) -> tuple[Text | str, ...]:
    changes = (
        ""
        if s.last_refresh_entered is None
        else f"+{s.last_refresh_entered:,}/−{s.last_refresh_left:,}"
    )
    return (
        literal(s.name),
        s.kind,
        f"{s.members:,}",
        (
            when(s.last_refreshed_at)
            + (
                f" ({_seconds(s.last_refresh_seconds)})"
                if s.last_refresh_seconds is not None
                else ""
            )
            if s.kind == "dynamic"
            else ""
        ),
        changes,
        when(s.next_refresh_at) if s.next_refresh_at else "",
        literal(s.schedule),
        literal(s.database or "(any)"),
        literal(", ".join(s.campaigns)),
        literal(s.rule or ""),
    )


def detail(s: SegmentOverview) -> Text:
    """The selected segment in full, a few lines under the table."""
    out = Text()
    out.append_text(literal(s.name, "bold"))
    out.append(f" · {s.kind} · database ")
    out.append_text(literal(s.database or "(any)"))
    out.append(f" · {s.members:,} members\n")
    if s.kind == "dynamic":
        out.append("Rule: ")
        out.append_text(literal(s.rule or ""))
        out.append(f"\nSchedule: {s.schedule}")
        if s.next_refresh_at:
            out.append(f" · next {when(s.next_refresh_at)}")
        out.append("\nLast refresh: ")
        if s.last_refreshed_at is None:
            out.append("never")
        else:
            out.append(when(s.last_refreshed_at))
            if s.last_refresh_seconds is not None:
                out.append(f", took {_seconds(s.last_refresh_seconds)}")
            if s.last_refresh_entered is not None:
                out.append(
                    f", {s.last_refresh_entered:,} entered, {s.last_refresh_left or 0:,} left"
                )
    else:
        out.append("Static: members change only by file or command, never by a refresh")
    out.append("\nCampaigns: ")
    out.append_text(literal(", ".join(s.campaigns) or "none"))
    return out


def _seconds(value: float) -> str:
    """A refresh's duration: 0.042 -> "42 ms", 3.25 -> "3.2 s"."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


class SegmentsScreen(LiveScreen):
    BINDINGS = SEGMENTS_BINDINGS
    AUTO_FOCUS = "#segments"

    def __init__(self) -> None:
        super().__init__(id="segments-screen")
        self.segments: list[SegmentOverview] = []

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Static("Segments", id="segments-title", classes="section")
        yield Table(id="segments", cursor_type="row", zebra_stripes=True)
        yield Static(id="segment-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#segments", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)

    def read_snapshot(self, session: Session) -> list[SegmentOverview]:
        return segment_overviews(session)

    def apply_snapshot(self, segments: list[SegmentOverview]) -> None:
        self.segments = segments
        dynamic = sum(1 for s in segments if s.kind == "dynamic")
        set_text(
            self.query_one("#segments-title", Static),
            f"Segments: {len(segments)} ({dynamic} dynamic)",
        )
        sync_table(self.query_one("#segments", DataTable), [(s.name, cells(s)) for s in segments])
        self.show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_selected()

    def show_selected(self) -> None:
        segment = self.selected()
        set_text(self.query_one("#segment-detail", Static), detail(segment) if segment else "")

    def selected(self) -> SegmentOverview | None:
        key = cursor_key(self.query_one("#segments", DataTable))
        return next((s for s in self.segments if s.name == key), None)

    def action_refresh_segment(self) -> None:
        segment = self.selected()
        if segment is None:
            self.app.notify("no segment selected", severity="warning")
            return
        if segment.kind != "dynamic":
            self.app.notify(
                f"segment {segment.name} is static: nothing to refresh", severity="warning"
            )
            return
        name = segment.name

        def operation(session: Session) -> str:
            from store import segments

            result = segments.refresh(session, self.app.actor, segments.get_segment(session, name))
            return f"segment {name} refreshed: {result.entered:,} entered, {result.left:,} left"

        run_store_operation(self.app, "Refresh segment", operation)

    def action_back(self) -> None:
        self.app.pop_screen()

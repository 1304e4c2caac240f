"""One campaign: overview, LCG panel, split, strata, mailings, builds, recent audit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Label, Static

from console.actions import CampaignActions, CampaignRef, run_store_operation
from console.keymap import CAMPAIGN_SCREEN_BINDINGS
from console.literal import literal, literal_cells, literal_lines
from console.live import LiveScreen
from console.widgets.progress import build_progress, eta_text, rate_text, when
from console.widgets.split_bar import SplitBar
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table, cursor_key
from store.names import printable
from store.views import CampaignDetail, MailingRow, campaign_detail

if TYPE_CHECKING:
    from sqlmodel import Session

STRATA_COLUMNS = ("Stratum", "Members", "Cohort", "Control", "Quota", "Ideal")
MAILING_COLUMNS = ("Mailing", "Kind", "Status", "Schedule", "Next run", "Paused")
BUILD_COLUMNS = ("#", "Reason", "Status", "Progress", "Rate", "ETA", "By")
AUDIT_COLUMNS = ("At", "Who", "From", "Action", "Outcome", "Details")


def sync_table(table: DataTable, rows: list[tuple[str, tuple[str, ...]]]) -> None:
    """Make `table` show `rows` (key, cells), repainting only cells that changed."""
    keys = [key for key, _cells in rows]
    current = [row_key.value for row_key in table.rows]
    if keys != current:
        cursor = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*literal_cells(cells), key=key)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
        return
    columns = list(table.columns)
    for key, cells in rows:
        for index, value in enumerate(literal_cells(cells)):
            if table.get_cell(key, columns[index]) != value:
                # update_width: a value longer than its column's widest one so far
                # (e.g. "paused by alice" where nothing was paused) is shown whole.
                table.update_cell(key, columns[index], value, update_width=True)


def set_text(widget: Static, content: Text | str) -> None:
    """Show `content` in `widget` if it changed; a str is shown literally, never as markup."""
    if isinstance(content, str):
        content = literal_lines(content)
    if getattr(widget, "_shown", None) != str(content):
        widget._shown = str(content)  # type: ignore[attr-defined]
        widget.update(content)


class CampaignScreen(CampaignActions, LiveScreen):
    BINDINGS = CAMPAIGN_SCREEN_BINDINGS
    AUTO_FOCUS = "#detail"

    def __init__(self, name: str) -> None:
        super().__init__(id="campaign-screen")
        self.campaign_name = name
        self.detail: CampaignDetail | None = None
        self.scope = None  # store.audience_scope.AudienceScope of the last poll

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        with VerticalScroll(id="detail"):
            yield Static(literal(f"{self.campaign_name} – loading…"), id="overview")
            yield Static("", id="dynamic-note", classes="note")
            yield Static("", id="lcg-panel", classes="panel")
            yield SplitBar("", id="split")
            yield Label("Strata", classes="section")
            yield Table(id="strata", cursor_type="row", show_cursor=False)
            yield Label("Mailings (p pauses or resumes the selected one)", classes="section")
            yield Table(id="mailings", cursor_type="row")
            yield Label("Audience builds", classes="section")
            yield Table(id="builds", cursor_type="row", show_cursor=False)
            yield Label("Recent audit entries", classes="section")
            yield Table(id="audit", cursor_type="row", show_cursor=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        for table_id, columns in (
            ("#strata", STRATA_COLUMNS),
            ("#mailings", MAILING_COLUMNS),
            ("#builds", BUILD_COLUMNS),
            ("#audit", AUDIT_COLUMNS),
        ):
            table = self.query_one(table_id, DataTable)
            for label in columns:
                table.add_column(label, key=label)
        self.query_one("#dynamic-note").display = False

    # ------------------------------------------------------------------ live data
    def read_snapshot(self, session: Session) -> tuple[CampaignDetail | None, Any]:
        detail = campaign_detail(session, self.campaign_name)
        return detail, detail.scope if detail is not None else None

    def apply_snapshot(self, snapshot: tuple[CampaignDetail | None, Any]) -> None:
        detail, scope = snapshot
        self.scope = scope
        if detail is None:
            set_text(
                self.query_one("#overview", Static), f"campaign {self.campaign_name} not found"
            )
            return
        self.detail = detail
        set_text(self.query_one("#overview", Static), self.overview_text(detail, scope))
        note = self.query_one("#dynamic-note", Static)
        note.display = detail.segment_kind == "dynamic"
        if note.display:
            set_text(
                note,
                f"⚠ Segment {detail.segment} is dynamic ({detail.segment_rule}): every refresh "
                "changes the audience (R2c, R4). A static segment is recommended.",
            )
        set_text(self.query_one("#lcg-panel", Static), self.lcg_text(detail, scope))
        split = self.query_one("#split", SplitBar)
        split_line = SplitBar.render_split(
            detail.test, detail.control, detail.target or None, max(40, split.size.width - 1)
        )
        set_text(split, split_line)
        sync_table(
            self.query_one("#strata", DataTable),
            [
                (
                    s.label,
                    (
                        s.label,
                        f"{s.members:,}",
                        f"{s.cohort:,}",
                        f"{s.control:,}",
                        f"{s.quota:,}",
                        f"{s.ideal:.2f}",
                    ),
                )
                for s in detail.strata
            ]
            or self.preview_rows(scope),
        )
        sync_table(
            self.query_one("#mailings", DataTable),
            [
                (
                    m.name,
                    (
                        m.name,
                        m.kind,
                        m.status,
                        m.schedule,
                        when(m.next_run_at),
                        m.paused_reason or "",
                    ),
                )
                for m in detail.mailings
            ],
        )
        sync_table(
            self.query_one("#builds", DataTable),
            [
                (
                    str(b.id),
                    (
                        str(b.id),
                        b.reason,
                        b.status,
                        build_progress(b.status, b.processed, b.total),
                        rate_text(b.rate),
                        eta_text(b.eta_seconds),
                        b.requested_by,
                    ),
                )
                for b in sorted(detail.builds, key=lambda b: b.id, reverse=True)[:5]
            ],
        )
        sync_table(
            self.query_one("#audit", DataTable),
            [
                (
                    f"{i}",
                    (when(a.at), a.actor, a.origin, a.action, a.outcome, a.details_text[:60]),
                )
                for i, a in enumerate(detail.audit)
            ],
        )

    @staticmethod
    def preview_rows(scope: Any) -> list[tuple[str, tuple[str, ...]]]:
        """Issue 13 §5: a draft's strata as activation would split them now."""
        if scope is None or scope.preview is None:
            return []
        return [
            (
                r.label,
                literal_cells(
                    (
                        r.label,
                        f"{r.members:,}",
                        f"{r.cohort:,}",
                        "–",
                        f"{r.quota:,}",
                        f"{r.ideal:.2f}",
                    )
                ),
            )
            for r in scope.preview.rows
        ]

    @staticmethod
    def overview_text(d: CampaignDetail, scope: Any = None) -> Text:
        text = Text()
        text.append(printable(d.name), style="bold")
        text.append(f"  [{d.status}]", style="bold yellow" if d.status == "draft" else "bold")
        text.append(f"  v{d.version}\n", style="dim")
        text.append(
            printable(f"database {d.database} · segment {d.segment} ({d.segment_kind})") + "\n"
        )
        text.append(
            f"members {d.members:,} · test {d.test:,} · control {d.control:,}"
            f" · created {when(d.created_at)}"
        )
        if d.activated_at:
            text.append(f" · activated {when(d.activated_at)}")
        if d.completed_at:
            text.append(f" · completed {when(d.completed_at)}")
        if scope is not None and scope.excluded_gcg:
            text.append(f"\nGCG holds out {scope.excluded_gcg:,} segment profiles (R1)")
        latest = max(d.builds, key=lambda b: b.id, default=None)
        if latest is not None and latest.status == "failed":
            # The audience is short of what the settings ask until it is retried.
            text.append(
                f"\n✗ build #{latest.id} ({latest.reason}) failed at "
                f"{latest.processed:,}/{latest.total:,}: ",
                style="bold red",
            )
            text.append(printable(latest.error or ""), style="red")
            text.append("\n  retry it on the builds screen once the cause is fixed", style="dim")
        return text

    @staticmethod
    def lcg_text(d: CampaignDetail, scope: Any = None) -> Text:
        text = Text()
        if scope is not None and scope.pending is not None:
            # R3: a draft has no members yet; show what activation would do now.
            text.append(f"Pending audience {scope.pending:,}", style="bold")
            p = scope.preview
            if p is not None:
                text.append(
                    f" · activation now: control target {p.target:,} in {len(p.rows)} strata"
                )
                for warning in p.warnings:
                    short = printable(warning["message"])
                    short = short if len(short) <= 230 else short[:229] + "…"
                    text.append(f"\n⚠ {short}", style="bold yellow")
            else:
                text.append(" · activation now: everyone to test (LCG off)")
            text.append("\n")
        text.append("LCG ", style="bold")
        if not d.lcg_enabled:
            text.append("off", style="bold")
            if d.lcg_percent_bp:
                text.append(f" (last settings {d.lcg_percent_bp / 100:g}%)", style="dim")
        else:
            text.append(d.lcg_summary, style="bold")
            limit = f"{d.lcg_limit:,}" if d.lcg_limit is not None else "none"
            strata = printable(", ".join(d.lcg_strata)) or "none"
            text.append(f" · limit {limit} · strata {strata}\n")
            text.append(
                f"cohort {d.cohort_size:,} · control target {d.target:,} · actual {d.control:,}"
            )
            if d.deficit:
                text.append(
                    f" · deficit {d.deficit:,} waiting for newcomers (R6)", style="bold yellow"
                )
            text.append("\nSRM ")
            if d.srm_p_value is None:
                text.append("n/a", style="dim")
            elif d.srm_flagged:
                text.append(f"MISMATCH p={d.srm_p_value:.4f}", style="bold red")
            else:
                text.append(f"ok p={d.srm_p_value:.3f}")
        for warning in d.warning_messages:
            # R10 messages name every stratum; at 80×24 the first lines say enough.
            short = warning if len(warning) <= 230 else warning[:229] + "…"
            text.append(f"\n⚠ {printable(short)}", style="bold yellow")
        return text

    # ------------------------------------------------------------------ actions
    def campaign_ref(self) -> CampaignRef | None:
        d = self.detail
        if d is None:
            return None
        return CampaignRef(
            name=d.name,
            version=d.version,
            status=d.status,
            members=d.members,
            control=d.control,
            lcg_enabled=d.lcg_enabled,
            segment=d.segment,
            segment_kind=d.segment_kind,
            lcg_percent_bp=d.lcg_percent_bp,
        )

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_pause_mailing(self) -> None:
        if self.detail is None or not self.detail.mailings:
            self.app.notify("this campaign has no mailing to pause", severity="warning")
            return
        shown = self.selected_mailing()
        if shown is None:
            self.app.notify(
                "select a mailing first (tab to the mailings table)", severity="warning"
            )
            return
        self.pause_mailing_now(shown.name, pause=not shown.manual_paused)

    def selected_mailing(self) -> MailingRow | None:
        """The mailing under the table cursor, by its row key (the mailing's name)."""
        if self.detail is None:
            return None
        key = cursor_key(self.query_one("#mailings", DataTable))
        return next((m for m in self.detail.mailings if m.name == key), None)

    def pause_mailing_now(self, mailing_name: str, *, pause: bool) -> None:
        def operation(session: Session) -> str:
            from store import mailings

            mailing = mailings.get_mailing(session, mailing_name)
            # Already paused/resumed meanwhile: the store refuses it (and audits that).
            mailings.set_manual_pause(session, self.app.actor, mailing, pause)
            return f"mailing {mailing_name} {'paused' if pause else 'resumed'}"

        title = "Pause mailing" if pause else "Resume mailing"
        run_store_operation(self.app, title, operation)

"""The campaign list: every campaign with its split, LCG, warnings, builds and pauses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Input

from console.actions import CampaignActions, CampaignRef
from console.keymap import CAMPAIGNS_SCREEN_BINDINGS, after_keys_typed_ahead, open_filter
from console.literal import literal_cells
from console.live import LiveScreen
from console.widgets.status_header import StatusHeader
from console.widgets.table import Table
from store.views import CampaignRow, campaign_rows

if TYPE_CHECKING:
    from sqlmodel import Session


def build_cell(row: CampaignRow) -> str:
    """The campaign's running build with its share done, else its queued one."""
    build = row.build
    if build is None:
        return ""
    if build.status == "running":
        share = f"{100 * build.processed / build.total:.0f}%" if build.total else "0%"
        return f"{build.reason} {share}"
    return f"{build.reason} queued"


# (column key, label, width, how a row becomes the cell). Fixed widths keep the
# columns still while live values change. The most telling ones fit in 80 columns: the
# campaign, its state, its size, its control group, R10 warnings and the LCG that explains
# them (its first 17 characters even beside a scrollbar, all of it one → away). The test
# group and the rest are a few → away; the campaign's name stays put while it scrolls.
COLUMNS: list[tuple[str, str, int, Any]] = [
    ("name", "Campaign", 16, lambda r: r.name),
    ("status", "Status", 9, lambda r: r.status),
    ("members", "Members", 9, lambda r: f"{r.members:,}"),
    ("control", "Control", 13, lambda r: f"{r.control:,} {r.control_pct}"),
    ("warnings", "⚠", 3, lambda r: f"⚠ {len(r.warnings)}" if r.warnings else ""),
    ("lcg", "LCG", 22, lambda r: r.lcg_summary),
    ("test", "Test", 15, lambda r: f"{r.test:,} {r.test_pct}"),
    ("build", "Build", 20, build_cell),
    (
        "paused",
        "Paused",
        9,
        lambda r: f"{r.paused_mailings} paused" if r.paused_mailings else "",
    ),
    (
        "segment",
        "Segment",
        22,
        lambda r: r.segment + (" (dyn)" if r.segment_kind == "dynamic" else ""),
    ),
    ("database", "Database", 12, lambda r: r.database),
]


def matches(row: CampaignRow, needle: str) -> bool:
    needle = needle.lower()
    return any(
        needle in value.lower()
        for value in (row.name, row.status, row.segment, row.database, row.lcg_summary)
    )


class CampaignsScreen(CampaignActions, LiveScreen):
    BINDINGS = CAMPAIGNS_SCREEN_BINDINGS
    AUTO_FOCUS = "#campaigns"

    def __init__(self) -> None:
        super().__init__(id="campaigns-screen")
        self.rows: dict[str, CampaignRow] = {}
        self.shown: list[str] = []
        self.cells: dict[str, tuple[str, ...]] = {}
        self.needle = ""

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.db_label, self.app.actor.user, self.app.actor.role)
        yield Input(
            placeholder="filter: name, status, segment, database…", id="filter", classes="-hidden"
        )
        table = Table(id="campaigns", cursor_type="row", zebra_stripes=True, fixed_columns=1)
        for key, label, width, _cell in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table
        yield Footer(compact=True, show_command_palette=False)

    # ------------------------------------------------------------------ live data
    def read_snapshot(self, session: Session) -> list[CampaignRow]:
        return campaign_rows(session)

    def apply_snapshot(self, snapshot: list[CampaignRow]) -> None:
        self.rows = {row.name: row for row in snapshot}
        self.render_rows()
        self.app.call_after_refresh(self.app.first_frame_shown)

    def render_rows(self) -> None:
        table = self.query_one("#campaigns", DataTable)
        wanted = [
            name for name, row in self.rows.items() if not self.needle or matches(row, self.needle)
        ]
        cells = {
            name: literal_cells(cell(self.rows[name]) for *_kl, cell in COLUMNS) for name in wanted
        }
        if wanted != self.shown:
            selected = self.selected_name()
            table.clear()
            for name in wanted:
                table.add_row(*cells[name], key=name)
            if selected in wanted:
                table.move_cursor(row=wanted.index(selected), animate=False)
        else:
            # Only the cells that changed are repainted (Dolphie habit).
            for name in wanted:
                old = self.cells.get(name)
                for index, (key, *_rest) in enumerate(COLUMNS):
                    if old is None or old[index] != cells[name][index]:
                        table.update_cell(name, key, cells[name][index])
        self.shown = wanted
        self.cells = cells

    def selected_name(self) -> str | None:
        table = self.query_one("#campaigns", DataTable)
        if not self.shown or table.row_count == 0:
            return None
        row = min(table.cursor_row, len(self.shown) - 1)
        return self.shown[row]

    def campaign_ref(self) -> CampaignRef | None:
        name = self.selected_name()
        if name is None or name not in self.rows:
            return None
        row = self.rows[name]
        return CampaignRef(
            name=name,
            version=row.version,
            status=row.status,
            members=row.members,
            control=row.control,
            lcg_enabled=row.lcg_enabled,
            segment=row.segment,
            segment_kind=row.segment_kind,
            lcg_percent_bp=row.lcg_percent_bp,
        )

    # ------------------------------------------------------------------ navigation
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        after_keys_typed_ahead(self, self._open)  # enter is a priority binding

    def _open(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:  # enter in the filter box applies it
            self.query_one("#campaigns", DataTable).focus()
            return
        name = self.selected_name()
        if name is not None:
            self.app.open_campaign(name)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("-hidden")
        open_filter(box)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.needle = event.value.strip()
        self.render_rows()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one("#campaigns", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value or not box.has_class("-hidden"):
            box.value = ""
            box.add_class("-hidden")
            self.needle = ""
            self.render_rows()
        self.query_one("#campaigns", DataTable).focus()
